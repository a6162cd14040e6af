"""Argument checks shared by NPPM's pieces (one error wording for all)."""

import numpy as np


def integer_at_least(name, value, minimum=1):
    """Returns `value` as an int if it is an integer >= `minimum`.

    Raises:
        ValueError: Otherwise (booleans and floats included).
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < minimum
    ):
        raise ValueError(
            f"`{name}` should be an integer >= {minimum}. Received: "
            f"{name}={value!r}"
        )
    return int(value)


def number_above(name, value, minimum=0.0, inclusive=False):
    """Returns `value` as a float if it is a number above `minimum` (or
    equal to it, with `inclusive`).

    Raises:
        ValueError: Otherwise (booleans, NaN and infinity included).
    """
    valid = (
        not isinstance(value, bool)
        and isinstance(value, (int, float, np.integer, np.floating))
        and np.isfinite(value)
        and (value >= minimum if inclusive else value > minimum)
    )
    if not valid:
        relation = ">=" if inclusive else ">"
        raise ValueError(
            f"`{name}` should be a finite number {relation} {minimum}. "
            f"Received: {name}={value!r}"
        )
    return float(value)
