"""From the trained sampler to one pruned structure that meets the budget."""

import dataclasses

import numpy as np

from ekg_keras import allocation
from ekg_keras.allocation import TARGET_TOLERANCE

#: How far below the target the chosen structure may land (half a point).
TOLERANCE = TARGET_TOLERANCE

COUNT_MODES = ("argmax", "expected")


@dataclasses.dataclass(frozen=True, eq=False)
class LearnedStructure:
    """What LFPC chose after its search (thesis Sec. 6.3.2.3, "After DCS").

    Attributes:
        group_ids: Ids of the prunable groups, in the sampler's order.
        criteria: The chosen criterion of each prunable group (the most
            probable one).
        probabilities: (prunable groups, criteria) final criterion
            probabilities.
        learned_counts: Keep count per group id that the sampler preferred
            (argmax or expected, before meeting the budget).
        keep_counts: Keep count per group id after meeting the budget.
        keep: Boolean keep mask per group (the pruned structure).
        flops_fraction: FLOPs fraction of `keep_counts`.
    """

    group_ids: tuple
    criteria: tuple
    probabilities: np.ndarray
    learned_counts: np.ndarray
    keep_counts: np.ndarray
    keep: list
    flops_fraction: float

    def criterion_of(self, group_id):
        """The criterion chosen for a group id (None for fixed groups)."""
        if group_id not in self.group_ids:
            return None
        return self.criteria[self.group_ids.index(group_id)]


def choose_structure(sampler, setup, counts="argmax"):
    """The most probable criteria and the learned widths, within budget.

    Each prunable group takes its most probable criterion. Its learned
    width is the most probable keep count (`counts="argmax"`) or the
    expected one (`"expected"`); the widths are scaled together
    (`ekg_keras.allocation.proportional`) so the FLOPs fraction is at most
    the target and as close below it as single allowed counts permit
    under that rule, so the learned shape is kept while the budget is met
    exactly ([impl]: the thesis prunes with the sampled rates without
    saying how they meet the target). Where the rule leaves it more than
    `TOLERANCE` below (narrow networks, whose one proportional step is
    worth more), `proportional`'s `slack` raises the groups with the
    lowest share of their learned width past the rule.

    Args:
        sampler: A trained `CriteriaSampler`.
        setup: The method's `PruningSetup` (counter, levels, target).
        counts: "argmax" or "expected".

    Returns:
        A `LearnedStructure`.

    Raises:
        ValueError: For an unknown `counts`.
    """
    if counts not in COUNT_MODES:
        raise ValueError(
            f"`counts` should be one of {COUNT_MODES}. Received: "
            f"counts={counts!r}"
        )
    probabilities = sampler.criteria_probabilities().numpy()
    chosen = np.argmax(probabilities, axis=1)
    if counts == "argmax":
        learned = sampler.argmax_counts()
    else:
        learned = sampler.expected_keep_counts().numpy().astype(np.float64)
    keep_counts = allocation.proportional(
        setup.counter,
        setup.target_macs,
        learned,
        setup.levels,
        slack=TOLERANCE * setup.full_macs,
    )
    return LearnedStructure(
        group_ids=tuple(g.id for g in sampler.groups),
        criteria=tuple(sampler.criteria[i] for i in chosen),
        probabilities=probabilities,
        learned_counts=learned,
        keep_counts=keep_counts,
        keep=sampler.keep_masks(keep_counts, chosen),
        flops_fraction=setup.fraction(keep_counts),
    )
