"""The method registry: every pruning method by name.

`register_method` is a class decorator; a preset registers the same class
again under another name with some options fixed (e.g. "sfp" is soft
pruning with the L2 criterion and a constant rate). `get`, `names` and
`describe` are what `prune(method=...)`, the trainers' `--method` and the
comparison benchmark read, so a registered method reaches all of them.
"""

import dataclasses

_METHODS = {}


@dataclasses.dataclass(frozen=True)
class MethodEntry:
    """One registered name.

    Attributes:
        name: The registered name.
        method_class: The `PruningMethod` subclass.
        presets: Option values this name fixes (empty for the plain class).
        summary: One line for help texts.
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


def register_method(name, summary=None, **presets):
    """Class decorator that registers a `PruningMethod` subclass as `name`.

    Args:
        name: The name for `prune(method=...)` and `--method`.
        summary: One line describing it (default: the class docstring's
            first line).
        **presets: Options this name fixes, for presets of one class.

    Returns:
        The decorator (which returns the class unchanged).

    Raises:
        ValueError: If `name` is taken or a preset is not an option of the
            class.

    Example:

    ```python
    @ekg_keras.methods.register_method("magnitude")
    class Magnitude(ekg_keras.methods.PruningMethod):
        def search(self, fitter):
            ...  # choose keep masks; self.setup.apply(keep)
            return self.model
    ```
    """

    def decorate(method_class):
        add(name, method_class, summary, **presets)
        return method_class

    return decorate


def add(name, method_class, summary=None, **presets):
    """Registers `method_class` as `name` (the non-decorator form)."""
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"A method name should be a non-empty string. Received: {name!r}"
        )
    if name in _METHODS:
        raise ValueError(
            f"A method named {name!r} is registered already. Registered: "
            f"{', '.join(names())}"
        )
    known = {f.name for f in dataclasses.fields(method_class.Options)}
    unknown = sorted(set(presets) - known)
    if unknown:
        raise ValueError(
            f"Presets of method {name!r} should be options of "
            f"{method_class.__name__} ({', '.join(sorted(known))}). "
            f"Received: {', '.join(unknown)}"
        )
    if summary is None:
        doc = (method_class.__doc__ or name).strip().splitlines()
        summary = doc[0] if doc else name
    _METHODS[name] = MethodEntry(name, method_class, dict(presets), summary)
    if getattr(method_class, "name", None) is None:
        method_class.name = name


def unregister_method(name):
    """Removes a registered name (for tests and interactive sessions).

    Raises:
        KeyError: If `name` is not registered.
    """
    if name not in _METHODS:
        raise KeyError(
            f"No method named {name!r}. Registered: {', '.join(names())}"
        )
    del _METHODS[name]


def names():
    """The registered method names, in registration order."""
    return tuple(_METHODS)


def get(name):
    """The `MethodEntry` registered as `name`.

    Raises:
        ValueError: For an unknown name, listing the registered ones.
    """
    if name not in _METHODS:
        raise ValueError(
            f"Unknown method {name!r}. Registered: {', '.join(names())}"
        )
    return _METHODS[name]


def describe():
    """`name: summary` lines of every registered method."""
    return "\n".join(f"{e.name}: {e.summary}" for e in _METHODS.values())
