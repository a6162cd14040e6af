"""Which budget a pruning call has: a FLOPs or a latency fraction."""

from ekg_keras.flops import check_flops_fraction


def check_latency_fraction(latency):
    """Returns `latency` if it is a fraction of latency to keep in (0, 1].

    Raises:
        ValueError: Otherwise, saying what was received.
    """
    if (
        isinstance(latency, bool)
        or not isinstance(latency, (int, float))
        or not (0 < latency <= 1)
    ):
        raise ValueError(
            "`latency` should be the fraction of the original model's "
            "measured latency to keep, in (0, 1] (0.5 halves it). Received: "
            f"latency={latency!r}"
        )
    return latency


def check_budget(flops, latency, required=True):
    """The budget as `(kind, fraction)`: ("flops", f) or ("latency", f).

    Args:
        flops: Fraction of FLOPs to keep, or None.
        latency: Fraction of measured latency to keep, or None.
        required: Whether one of them must be given (a method without a
            target may take neither: then `(None, None)`).

    Raises:
        ValueError: If both are given, neither (when `required`), or the
            given one is outside (0, 1].
    """
    if flops is not None and latency is not None:
        raise ValueError(
            "Pass either `flops` or `latency` as the budget, not both. "
            f"Received: flops={flops!r}, latency={latency!r}"
        )
    if latency is not None:
        return "latency", check_latency_fraction(latency)
    if flops is not None:
        return "flops", check_flops_fraction(flops)
    if required:
        raise ValueError(
            "A budget is needed: `flops`, the fraction of FLOPs to keep, or "
            "`latency`, the fraction of measured latency to keep, in (0, 1]. "
            "Received: flops=None, latency=None"
        )
    return None, None
