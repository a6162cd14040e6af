"""The knobs of soft filter pruning, shared by its model and its method."""

import dataclasses

RESIDUAL_MODES = ("coupled", "independent")


@dataclasses.dataclass(frozen=True)
class SoftOptions:
    """Options of soft filter pruning (see `SoftFilterPruning`).

    Attributes:
        criterion: Filter criterion: "l2" (SFP, ASFP), "fpgm" (FPGM),
            "l1", "l2+fpgm" (FPGM-mix) or a callable.
        schedule: "constant" (SFP, FPGM), "asymptotic" (ASFP) or an
            `ekg_keras.schedules.PruningRateSchedule` ending at the rate.
        epochs: Total training epochs (the trainers' `--epochs`); needed by
            the asymptotic schedule. Through the registry (`method="sfp"`)
            soft pruning trains this many epochs, 30 when not given.
        recovery_epochs: Epochs of training after the last pruning step
            with its zeroed filters held at zero (no more steps, their
            gradients masked): the fine-tuning of the pruned network that
            the thesis reports after soft pruning of a pre-trained model
            (Tables 4.2 and 5.3, "FT"). 0 (default): the network of the
            last step is the result, as in SFP's own schedule (Sec. 3.3).
        d: ASFP's D (the rate reaches 3/4 of the goal at `d * epochs`).
        min_rate: ASFP's starting rate.
        interval_epochs: Epochs between pruning steps.
        prune_before_training: Run a step before the first epoch.
        mask_gradients: Zero the gradients of zeroed filters (the official
            FPGM code) instead of letting them regrow (the thesis).
        fpgm_share: FPGM-mix's share chosen by geometric median.
        residual: "coupled" or "independent" residual groups.
    """

    criterion: object = "l2"
    schedule: str = "constant"
    epochs: int = dataclasses.field(
        default=None, metadata={"setting": "epochs"}
    )
    recovery_epochs: int = 0
    d: float = 1 / 8
    min_rate: float = 0.0
    interval_epochs: int = 1
    prune_before_training: bool = True
    mask_gradients: bool = False
    fpgm_share: float = 0.25
    residual: str = "coupled"

    def __post_init__(self):
        if self.epochs is not None and (
            isinstance(self.epochs, bool) or int(self.epochs) < 1
        ):
            raise ValueError(
                "`epochs` of soft pruning should be a positive integer. "
                f"Received: epochs={self.epochs!r}"
            )
        if (
            isinstance(self.recovery_epochs, bool)
            or not isinstance(self.recovery_epochs, int)
            or self.recovery_epochs < 0
        ):
            raise ValueError(
                "`recovery_epochs` should be an integer >= 0. Received: "
                f"recovery_epochs={self.recovery_epochs!r}"
            )
        if not 0 <= self.fpgm_share <= 1:
            raise ValueError(
                "`fpgm_share` should be in [0, 1]. Received: "
                f"fpgm_share={self.fpgm_share!r}"
            )
        if (
            isinstance(self.interval_epochs, bool)
            or not isinstance(self.interval_epochs, int)
            or self.interval_epochs < 1
        ):
            raise ValueError(
                "`interval_epochs` should be an integer >= 1. Received: "
                f"interval_epochs={self.interval_epochs!r}"
            )
        if self.residual not in RESIDUAL_MODES:
            raise ValueError(
                f"`residual` should be one of {RESIDUAL_MODES}. Received: "
                f"residual={self.residual!r}"
            )


#: Option sets by name (the trainers' `--preset`): soft pruning trains for
#: the run's `--epochs`, which the trainer's preset already sizes.
OPTION_SETS = {"cpu": {}, "paper": {}}
