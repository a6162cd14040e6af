"""What the criteria sampler learned, epoch by epoch."""

import dataclasses

import numpy as np

from ekg_keras import ties

#: The per-epoch scalars the sampler keeps, in the order of its weight.
SCALARS = (
    "tau",
    "loss",
    "criteria_loss",
    "computation_loss",
    "expected_flops",
)


@dataclasses.dataclass(frozen=True, eq=False)
class SamplerEpoch:
    """The sampler's state at the end of one epoch.

    Attributes:
        epoch: The epoch (0-based).
        tau: Mean Gumbel-softmax temperature over the epoch's steps.
        loss: Mean validation loss `L_crit + lambda_comp * L_comp` (the
            sampler trains on the validation split: thesis Eq. 6.13-6.14,
            Sec. 6.4.1).
        criteria_loss: Mean cross-entropy of the criteria network.
        computation_loss: Mean computation loss.
        expected_flops: Expected FLOPs fraction at the epoch's end.
        criteria: The candidate criterion names.
        criteria_probabilities: (prunable groups, criteria) softmax of the
            criteria logits.
        expected_counts: (prunable groups,) expected channels kept.
    """

    epoch: int
    tau: float
    loss: float
    criteria_loss: float
    computation_loss: float
    expected_flops: float
    criteria: tuple
    criteria_probabilities: np.ndarray
    expected_counts: np.ndarray

    @property
    def chosen(self):
        """The most probable criterion of each prunable group (names)."""
        return tuple(
            self.criteria[ties.argmax(row)]
            for row in self.criteria_probabilities
        )


def group_label(group):
    """A short readable name of a channel group: its first producer, and
    how many more share it."""
    label = group.producers[0] if group.producers else f"group {group.id}"
    if len(group.producers) > 1:
        label += f" +{len(group.producers) - 1}"
    return label
