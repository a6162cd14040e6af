"""The EKG search's history: one record per chosen sub-network."""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class SearchStep:
    """One sub-network along the search.

    Attributes:
        step: 0 for the (fine-tuned) unpruned network, then 1, 2, ...
        group: Id of the group shrunk at this step (None at step 0).
        widths: Kept fraction per group (1.0 for fixed groups).
        ranks: Per group, the channel ranks used for the masks (0 = most
            important); a channel is kept when its rank is below the
            group's kept count.
        keep_counts: Channels kept per group.
        flops_fraction: FLOPs of this sub-network / FLOPs of the original.
        loss: Mean cross-entropy on the validation subset.
        accuracy: Accuracy on the validation subset.
        objective: The search criterion of the chosen candidate,
            `CE + CE(softmax(ensemble), logits)` (NaN at step 0).
        logits: Validation logits, shape (validation samples, classes).
        candidates: Candidates evaluated to choose this step.
        seconds: Wall time of the step.
    """

    step: int
    group: object
    widths: np.ndarray
    ranks: list
    keep_counts: np.ndarray
    flops_fraction: float
    loss: float
    accuracy: float
    objective: float
    logits: np.ndarray
    candidates: int
    seconds: float

    def keep_masks(self):
        """Boolean keep mask per group for this sub-network."""
        return [r < k for r, k in zip(self.ranks, self.keep_counts)]
