"""A method's knobs: one frozen dataclass per method, built and parsed here.

Each `PruningMethod` declares `Options`, a frozen dataclass whose fields are
its knobs with their defaults (and whose `__post_init__` validates them).
Users pass knobs as keyword arguments (`prune(..., val_per_class=16)`) or
as an options object; trainers fill them from run settings (a field names
the run setting it follows in its metadata, e.g. `{"setting":
"eval_batch_size"}`) and from `key=value` text, without knowing the method.
"""

import dataclasses
import typing


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The options of a method without knobs."""


def make_options(options_class, options=None, values=None, method="method"):
    """An `options_class` instance from an object and keyword overrides.

    Args:
        options_class: The method's `Options` dataclass.
        options: An instance to start from, or None for the defaults.
        values: Dict of field values that override it.
        method: The method's name, for error messages.

    Raises:
        ValueError: For an options object of another class or an unknown
            option name (the message lists the method's options).
    """
    values = dict(values or {})
    if options is None:
        options = options_class()
    elif not isinstance(options, options_class):
        raise ValueError(
            f"`options` of method {method!r} should be a "
            f"{options_class.__name__}. Received: {type(options).__name__}"
        )
    unknown = sorted(set(values) - set(option_names(options_class)))
    if unknown:
        raise ValueError(
            f"Unknown option{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(unknown)} for method {method!r}. Its options: "
            f"{', '.join(option_names(options_class)) or '(none)'}"
        )
    return dataclasses.replace(options, **values)


def option_names(options_class):
    """The option names of an `Options` dataclass."""
    return tuple(f.name for f in dataclasses.fields(options_class))


def from_settings(options_class, settings):
    """Option values taken from run-wide settings.

    A field follows the setting named in its metadata (`"setting"`); fields
    without one, and settings no field follows, are ignored.

    Args:
        options_class: The method's `Options` dataclass.
        settings: Dict of run settings (e.g. a trainer's flags).

    Returns:
        A dict of option values.
    """
    values = {}
    for field in dataclasses.fields(options_class):
        setting = field.metadata.get("setting")
        if setting in settings and settings[setting] is not None:
            values[field.name] = settings[setting]
    return values


def follower(options_class, setting):
    """The name of the option that follows run setting `setting` (see
    `from_settings`), or None if none does."""
    for field in dataclasses.fields(options_class):
        if field.metadata.get("setting") == setting:
            return field.name
    return None


def parse(options_class, items, method="method"):
    """Option values from `key=value` strings, typed by the fields.

    Args:
        options_class: The method's `Options` dataclass.
        items: Iterable of "key=value" strings.
        method: The method's name, for error messages.

    Returns:
        A dict of option values.

    Raises:
        ValueError: For malformed items, unknown keys or values that do not
            parse as the field's type.
    """
    fields = {f.name: f for f in dataclasses.fields(options_class)}
    hints = typing.get_type_hints(options_class)
    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(
                f"Method options should be key=value pairs. Received: {item!r}"
            )
        if key not in fields:
            raise ValueError(
                f"Unknown option {key!r} for method {method!r}. Its options: "
                f"{', '.join(fields) or '(none)'}"
            )
        values[key] = _convert(text.strip(), hints.get(key), key, method)
    return values


def _convert(text, kind, key, method):
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return lowered in ("true", "1", "yes")
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if text.lower() == "none":
            return None
        for number in (int, float):
            try:
                return number(text)
            except ValueError:
                pass
        return text
    except ValueError:
        name = getattr(kind, "__name__", str(kind))
        raise ValueError(
            f"Option {key!r} of method {method!r} should be of type {name}. "
            f"Received: {text!r}"
        ) from None


def to_dict(options):
    """An options object as a JSON-ready dict (tuples as lists)."""
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in dataclasses.asdict(options).items()
    }
