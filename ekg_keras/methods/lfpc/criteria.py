"""LFPC's candidate criteria: names from the criterion registry, their
channel rankings, and the adversarial criteria of the thesis' ablation."""

import numpy as np

from ekg_keras import criteria as criteria_lib
from ekg_keras import ties

#: The thesis' candidate criteria (Sec. 6.4.1): L1 norm, L2 norm and the
#: geometric median (FPGM).
DEFAULT_CRITERIA = ("l1", "l2", "fpgm")

#: A rank larger than any channel index: padded channels are never kept.
UNRANKED = 2**30


def adversarial_l1(weights):
    """`1 / ||W_i||_1`: keeps the filters with the smallest L1 norm (the
    thesis' adversarial criterion, Table 6.5)."""
    return _reciprocal(criteria_lib.l1_norm(weights))


def adversarial_l2(weights):
    """`1 / ||W_i||_2`: keeps the filters with the smallest L2 norm."""
    return _reciprocal(criteria_lib.l2_norm(weights))


def _reciprocal(norms):
    # A zero filter is the most "important" to an adversarial criterion;
    # the floor keeps its score finite.
    return 1.0 / np.maximum(norms, np.finfo(np.float64).tiny)


ADVERSARIAL = {"adv_l1": adversarial_l1, "adv_l2": adversarial_l2}

for _name, _score in ADVERSARIAL.items():
    criteria_lib.register_criterion(_name, _score)


def check_criteria(names):
    """The candidate criteria as a tuple of registered names.

    Args:
        names: A sequence of criterion names, or one string of names
            separated by "/" (as `--method_options=criteria=l1/l2/fpgm`).

    Returns:
        A tuple of names.

    Raises:
        ValueError: For no criteria, repeated or unknown names, or criteria
            that do not rank filters by their weights alone (data-driven
            ones such as "taylor", or ones with their own selection rule
            such as "l2+fpgm").
    """
    if isinstance(names, str):
        names = [name.strip() for name in names.split("/") if name.strip()]
    names = tuple(names)
    if not names:
        raise ValueError(
            "`criteria` should name at least one criterion. Received: "
            "criteria=()"
        )
    if len(set(names)) != len(names):
        raise ValueError(
            f"`criteria` should not repeat a name. Received: criteria={names}"
        )
    for name in names:
        if not isinstance(name, str) or name not in criteria_lib.names():
            raise ValueError(
                "`criteria` should be names from ekg_keras.criteria.names() "
                f"{criteria_lib.names()}. Received: {name!r}"
            )
        criterion = criteria_lib.get(name)
        if criterion.requires_data or criterion.select is not None:
            raise ValueError(
                "LFPC's criteria rank each group's filters by their weights "
                f"(thesis Sec. 6.4.1); criterion {name!r} "
                + (
                    "needs data"
                    if criterion.requires_data
                    else "selects filters with its own rule, not a ranking"
                )
                + f". Use weight-based ones such as {DEFAULT_CRITERIA} or "
                f"{tuple(ADVERSARIAL)}."
            )
    return names


def criterion_ranks(graph, groups, names, width):
    """Each group's channel ranks under each criterion (0 = kept first).

    Ties keep the lower channel index first. Channels beyond a group's size
    (padding up to `width`) get `UNRANKED`.

    Args:
        graph: The traced `ChannelGraph` of the model (weights as they are).
        groups: The prunable `ChannelGroup`s, in the sampler's order.
        names: Criterion names (see `check_criteria`).
        width: Padded channel count (at least the largest group size).

    Returns:
        Int32 array of shape (groups, criteria, width).

    Raises:
        ValueError: If a criterion's scores are not finite or have the wrong
            shape (naming the group).
    """
    ranks = np.full((len(groups), len(names), width), UNRANKED, np.int32)
    cache = {}
    for p, group in enumerate(groups):
        weights = criteria_lib.group_weights(graph, group, cache=cache)
        for s, name in enumerate(names):
            scores = criteria_lib.checked_scores(
                criteria_lib.get(name), weights
            )
            order = ties.order(scores, descending=True)
            ranks[p, s, order] = np.arange(group.size, dtype=np.int32)
    return ranks
