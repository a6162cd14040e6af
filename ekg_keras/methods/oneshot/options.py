"""The knobs of one-shot pruning: criterion, allocation, loss."""

import dataclasses

from ekg_keras import allocation as allocation_lib
from ekg_keras import criteria as criteria_lib


@dataclasses.dataclass(frozen=True)
class OneShotOptions:
    """Options of one-shot pruning.

    Attributes:
        criterion: A name from `ekg_keras.criteria.names()` ("l1", "l2",
            "fpgm", "bn_scale", "taylor", "random", "l2+fpgm") or a
            callable scoring a `GroupWeights`.
        allocation: "uniform" (the same keep fraction in every group),
            "global" (channels ranked across groups) or a callable
            `(counter, target, scores, levels) -> keep counts`.
        loss: Loss of data-driven criteria ("taylor"); defaults to sparse
            categorical cross-entropy (from logits unless the model ends in
            softmax).
    """

    criterion: object = "l2"
    allocation: object = "uniform"
    loss: object = None

    def __post_init__(self):
        criteria_lib.get(self.criterion)
        allocation_lib.get(self.allocation)


#: Option sets by name (the trainers' `--preset`): one-shot pruning takes
#: seconds whatever the preset.
OPTION_SETS = {"cpu": {}, "paper": {}}
