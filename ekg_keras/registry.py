"""`Registry`: plug-ins of one kind, by name.

Every kind of plug-in has one registry, an instance of this class: the
pruning methods (`ekg_keras.methods`), the fine-tuners
(`ekg_keras.training.finetuners`), the criteria (`ekg_keras.criteria`) and
the channel graph's layer handlers (`ekg_keras.graph`, keyed by class).
Each module keeps its registry private and offers functions around it
(`register_method`, `get`, `names`, ...), so a registry's rules (a taken
name is an error, an unknown one lists the known ones, names come sorted)
are written once, here.
"""

_DECORATE = object()


class Registry:
    """Plug-ins of one kind by name: register, look up, list.

    Args:
        kind: What it holds, in the singular, for messages (e.g.
            "method", "fine-tuner").
        replace: Whether registering a taken name replaces its entry;
            by default that is an error.
        key_type: The type of the names: `str`, or `type` for a registry
            keyed by class (the layer handlers).

    Example:

    ```python
    losses = Registry("loss")

    @losses.register("squared")
    def squared(error):
        return error**2

    losses.register("absolute", abs)
    losses.get("squared")  # squared
    losses.names()  # ('absolute', 'squared')
    losses.get("huber")  # ValueError: Unknown loss 'huber'. Registered:
    # absolute, squared
    ```
    """

    def __init__(self, kind, *, replace=False, key_type=str):
        self.kind = kind
        self.replace = replace
        self.key_type = key_type
        self._entries = {}
        self._defaults = {}

    def register(self, name, value=_DECORATE):
        """Registers `value` as `name`; without `value`, a decorator that
        registers what it decorates.

        Args:
            name: The name (of `key_type`; a non-empty string by default).
            value: What to register.

        Returns:
            `value`, or the decorator (which returns its argument unchanged).

        Raises:
            ValueError: If `name` is not a non-empty `key_type`, or is
                registered already and the registry does not replace.
        """
        self._check_name(name)
        if value is _DECORATE:

            def decorate(decorated):
                self.register(name, decorated)
                return decorated

            return decorate
        if name in self._entries and not self.replace:
            raise ValueError(
                f"A {self.kind} named {_label(name)!r} is registered already. "
                f"Registered: {self._listing()}"
            )
        self._entries[name] = value
        return value

    def unregister(self, name):
        """Removes `name` (and any default that names it).

        Raises:
            KeyError: If `name` is not registered.
        """
        if name not in self._entries:
            raise KeyError(
                f"No {self.kind} named {_label(name)!r}. Registered: "
                f"{self._listing()}"
            )
        del self._entries[name]
        for role in [r for r, n in self._defaults.items() if n == name]:
            del self._defaults[role]

    def get(self, name):
        """The value registered as `name`.

        Raises:
            ValueError: For an unknown name, listing the registered ones.
        """
        if name not in self._entries:
            raise ValueError(
                f"Unknown {self.kind} {_label(name)!r}. Registered: "
                f"{self._listing()}"
            )
        return self._entries[name]

    def names(self):
        """The registered names, sorted (for flag choices and messages)."""
        return tuple(sorted(self._entries, key=_label))

    def set_default(self, role, name):
        """Makes `name` the default for `role` (e.g. the method `prune`
        runs with data when none is named).

        Raises:
            ValueError: If `name` is not registered, or `role` has another
                default already.
        """
        self.get(name)  # Validates the name.
        taken = self._defaults.get(role)
        if taken is not None and taken != name:
            raise ValueError(
                f"The default {self.kind} {role} is {_label(taken)!r} "
                f"already. Received: {_label(name)!r}"
            )
        self._defaults[role] = name

    def default(self, role):
        """The name registered as the default for `role`.

        Raises:
            ValueError: If no name is the default for `role`.
        """
        if role not in self._defaults:
            known = ", ".join(sorted(self._defaults)) or "none"
            raise ValueError(
                f"No {self.kind} is the default {role}. Roles with a "
                f"default: {known}"
            )
        return self._defaults[role]

    def __contains__(self, name):
        return name in self._entries

    def __len__(self):
        return len(self._entries)

    def __repr__(self):
        return f"Registry({self.kind!r}: {self._listing()})"

    def _check_name(self, name):
        if not isinstance(name, self.key_type) or name == "":
            wanted = (
                "a non-empty string"
                if self.key_type is str
                else f"a {self.key_type.__name__}"
            )
            raise ValueError(
                f"A {self.kind} name should be {wanted}. Received: {name!r}"
            )

    def _listing(self):
        return ", ".join(_label(name) for name in self.names()) or "none"


def _label(name):
    """How a name reads in messages (a class by its name)."""
    return name.__name__ if isinstance(name, type) else str(name)
