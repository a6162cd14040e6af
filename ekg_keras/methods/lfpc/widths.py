"""The candidate widths the sampler chooses keep counts from, per group
(as counts: `ekg_keras.allocation.width_counts`)."""

#: TAS's candidate widths, fractions of each group's channels (Dong and
#: Yang's `get_width_choices`): what the keep counts are sampled from.
TAS_WIDTHS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def check_widths(widths):
    """Candidate widths as a sorted tuple of fractions in (0, 1], or None.

    Args:
        widths: Fractions, one string of them separated by "/" (as
            `--method_options=widths=0.5/0.75/1`), or None / "all" for every
            allowed keep count.

    Raises:
        ValueError: For an empty set or a fraction outside (0, 1].
    """
    if widths is None or widths == "all":
        return None
    if isinstance(widths, str):
        widths = [w for w in widths.split("/") if w.strip()]
    try:
        values = tuple(sorted({float(w) for w in widths}))
    except (TypeError, ValueError):
        values = ()
    if not values or not all(0 < w <= 1 for w in values):
        raise ValueError(
            "`widths` should be fractions in (0, 1] of each group's "
            "channels (e.g. 0.3/0.5/1.0), or None for every allowed keep "
            f"count. Received: widths={widths!r}"
        )
    return values

