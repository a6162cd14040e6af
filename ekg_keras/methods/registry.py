"""The method registry: every pruning method by name.

`register_method` is a class decorator; a preset registers the same class
again under another name with some options fixed (e.g. "sfp" is soft
pruning with the L2 criterion and a constant rate). `get`, `names` and
`describe` are what `prune(method=...)`, the trainers' `--method` and the
comparison benchmark read, so a registered method reaches all of them.
A method may also be the default that `prune` runs when none is named,
with data or without (`default`).
"""

import dataclasses

from ekg_keras.registry import Registry

_METHODS = Registry("method")

#: What a method can be the default for (`register_method(default_for=)`).
DEFAULT_ROLES = ("with data", "without data")


@dataclasses.dataclass(frozen=True)
class MethodEntry:
    """One registered name.

    Attributes:
        name: The registered name.
        method_class: The `PruningMethod` subclass.
        presets: Option values this name fixes (empty for the plain class).
        summary: One line for help texts.

    Example:

    ```python
    entry = ekg_keras.methods.get("nppm")
    entry.options_for("cpu")  # {"epochs": 10, ...}: minutes on a CPU
    entry.options_for("paper")  # {}: the paper's defaults
    ```
    """

    name: str
    method_class: type
    presets: dict
    summary: str

    def create(self, model, scope, data=None, **kwargs):
        """Builds the method on `model` under `scope` (a `PruningScope` or
        a FLOPs fraction); presets are defaults that `kwargs` override."""
        method = self.method_class(
            model, scope, data, **{**self.presets, **kwargs}
        )
        method.name = self.name
        return method

    def options_for(self, option_set):
        """The option values of one of the class's option sets (e.g.
        "cpu" or "paper", its `option_sets`), with this name's presets
        over them; an option set the class does not declare is empty.

        Args:
            option_set: The option set's name (a trainer's `--preset`).

        Returns:
            A dict of option values (the presets' win: they make the name).
        """
        chosen = self.method_class.option_sets.get(option_set, {})
        return {**chosen, **self.presets}


def register_method(name, summary=None, *, default_for=None, **presets):
    """Class decorator that registers a `PruningMethod` subclass as `name`.

    Args:
        name: The name for `prune(method=...)` and `--method`.
        summary: One line describing it (default: the class docstring's
            first line).
        default_for: Optional role in `DEFAULT_ROLES`: the method runs
            when none is named ("with data": `prune(model, flops,
            data=...)`, the trainers' `--method`; "without data":
            `prune(model, flops)`).
        **presets: Options this name fixes, for presets of one class.

    Returns:
        The decorator (which returns the class unchanged).

    Raises:
        ValueError: If `name` is taken, a preset is not an option of the
            class, or `default_for` is unknown or has a default already.

    Example:

    ```python
    @ekg_keras.methods.register_method("magnitude")
    class Magnitude(ekg_keras.methods.PruningMethod):
        def search(self, fitter):
            ...  # choose keep masks; self.setup.apply(keep)
            return self.model
    ```
    """
    if default_for is not None and default_for not in DEFAULT_ROLES:
        raise ValueError(
            f"`default_for` should be one of {DEFAULT_ROLES}. Received: "
            f"default_for={default_for!r}"
        )

    def decorate(method_class):
        add(name, method_class, summary, **presets)
        if default_for is not None:
            try:
                _METHODS.set_default(default_for, name)
            except ValueError:
                _METHODS.unregister(name)
                raise
        return method_class

    return decorate


def add(name, method_class, summary=None, **presets):
    """Registers `method_class` as `name` (the non-decorator form)."""
    known = {f.name for f in dataclasses.fields(method_class.Options)}
    sets = getattr(method_class, "option_sets", {})
    for what, values in (
        ("Presets", presets),
        *((f"Option set {key!r}", sets[key]) for key in sorted(sets)),
    ):
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"{what} of method {name!r} should be options of "
                f"{method_class.__name__} ({', '.join(sorted(known))}). "
                f"Received: {', '.join(unknown)}"
            )
    if summary is None:
        doc = (method_class.__doc__ or str(name)).strip().splitlines()
        summary = doc[0] if doc else str(name)
    _METHODS.register(
        name, MethodEntry(name, method_class, dict(presets), summary)
    )
    if getattr(method_class, "name", None) is None:
        method_class.name = name


def unregister_method(name):
    """Removes a registered name (for tests and interactive sessions).

    Raises:
        KeyError: If `name` is not registered.
    """
    _METHODS.unregister(name)


def names():
    """The registered method names, sorted."""
    return _METHODS.names()


def get(name):
    """The `MethodEntry` registered as `name`.

    Raises:
        ValueError: For an unknown name, listing the registered ones.
    """
    return _METHODS.get(name)


def default(*, with_data):
    """The name of the method `prune` runs when none is named.

    Args:
        with_data: Whether there is training data (the trainers always
            have some).

    Raises:
        ValueError: If no registered method is that default.
    """
    return _METHODS.default("with data" if with_data else "without data")


def describe():
    """`name: summary` lines of every registered method, sorted."""
    return "\n".join(f"{name}: {get(name).summary}" for name in names())
