"""SFP, ASFP and FPGM as registered methods (training while pruning)."""

import dataclasses

from ekg_keras.methods.base import PruningMethod
from ekg_keras.methods.registry import add
from ekg_keras.methods.registry import register_method
from ekg_keras.methods.soft.model import RESIDUAL_MODES
from ekg_keras.methods.soft.model import SoftFilterPruning
from ekg_keras.methods.soft.model import SoftPruningCallback
from ekg_keras.taylor import default_loss
from ekg_keras.training.fitting import TrainingPhase


@dataclasses.dataclass(frozen=True)
class SoftOptions:
    """Options of soft filter pruning (see `SoftFilterPruning`).

    Attributes:
        criterion: Filter criterion: "l2" (SFP, ASFP), "fpgm" (FPGM),
            "l1", "l2+fpgm" (FPGM-mix) or a callable.
        schedule: "constant" (SFP, FPGM) or "asymptotic" (ASFP).
        epochs: Training epochs while pruning (the trainers' `--epochs`).
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
    epochs: int = dataclasses.field(default=30, metadata={"setting": "epochs"})
    d: float = 1 / 8
    min_rate: float = 0.0
    interval_epochs: int = 1
    prune_before_training: bool = True
    mask_gradients: bool = False
    fpgm_share: float = 0.25
    residual: str = "coupled"

    def __post_init__(self):
        if isinstance(self.epochs, bool) or int(self.epochs) < 1:
            raise ValueError(
                "`epochs` of soft pruning should be a positive integer. "
                f"Received: epochs={self.epochs!r}"
            )
        if self.residual not in RESIDUAL_MODES:
            raise ValueError(
                f"`residual` should be one of {RESIDUAL_MODES}. Received: "
                f"residual={self.residual!r}"
            )


@register_method("sfp", summary="soft filter pruning (L2, constant rate)")
class SoftPruning(PruningMethod):
    """Soft filter pruning: trains while it zeroes the weakest filters.

    At every pruning step the `floor(N * P)` lowest-scored filters of each
    group are zeroed and training goes on, so they may regrow; the rate P
    is the smallest that keeps at most `flops` of the FLOPs, constant (SFP)
    or rising asymptotically to it (ASFP). Its training is the fine-tuning,
    so callers skip a separate one. The result is the soft-mode network
    with the last step's filters zeroed; `ekg_keras.slim` removes them.

    Reference:
        He et al., SFP (IJCAI 2018), ASFP (IEEE T-Cybernetics 2019), FPGM
        (CVPR 2019); SPEC.md 2-4.
    """

    Options = SoftOptions
    mode = "soft"
    needs_data = True
    trains_while_pruning = True
    finetuner = None
    smoke_options = {"epochs": 2}

    def __init__(self, model, flops, data=None, **kwargs):
        super().__init__(model, flops, data, **kwargs)
        options = self.options
        with self.strategy.scope():
            self.trainer = SoftFilterPruning(
                self.model,
                flops=self.target,
                criterion=options.criterion,
                schedule=options.schedule,
                epochs=options.epochs,
                d=options.d,
                min_rate=options.min_rate,
                interval_epochs=options.interval_epochs,
                prune_before_training=options.prune_before_training,
                mask_gradients=options.mask_gradients,
                fpgm_share=options.fpgm_share,
                residual=options.residual,
                ignored_layers=self.setup.ignored_layers,
                include_bn=self.setup.include_bn,
                include_fc=self.setup.include_fc,
            )

    def search(self, fitter):
        fitter.fit(
            TrainingPhase(
                "soft_pruning",
                self.trainer,
                epochs=self.options.epochs,
                loss=default_loss(self.model),
                callbacks=[SoftPruningCallback()],
            )
        )
        self.history = list(self.trainer.history_of_steps)
        return self.model


add(
    "asfp",
    SoftPruning,
    "asymptotic soft filter pruning (L2, rate rising to the goal)",
    schedule="asymptotic",
)
add(
    "fpgm",
    SoftPruning,
    "soft pruning by geometric median (FPGM)",
    criterion="fpgm",
)
