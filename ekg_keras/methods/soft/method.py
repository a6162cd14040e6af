"""SFP, ASFP and FPGM as registered methods (training while pruning)."""

import dataclasses

from ekg_keras import _backend as backend
from ekg_keras.methods.base import PruningMethod
from ekg_keras.methods.budget import TrainingBudget
from ekg_keras.methods.budget import check_epochs
from ekg_keras.methods.claims import Claim
from ekg_keras.methods.claims import register_claim
from ekg_keras.methods.registry import add
from ekg_keras.methods.registry import register_method
from ekg_keras.methods.soft.callback import SoftPruningCallback
from ekg_keras.methods.soft.model import SoftFilterPruning
from ekg_keras.methods.soft.options import OPTION_SETS
from ekg_keras.methods.soft.options import SoftOptions
from ekg_keras.taylor import default_loss
from ekg_keras.training.fitting import TrainingPhase

#: Training epochs of soft pruning through the registry when none are given.
DEFAULT_EPOCHS = 30

#: The share of an equal training budget (`training_budget`) spent on
#: recovery after the last pruning step: the thesis fine-tunes the soft-
#: pruned VGGNet 40 epochs after 160 of training (Table 4.2, Table 5.3).
RECOVERY_SHARE = 0.2


@register_method("sfp", summary="soft filter pruning (L2, constant rate)")
class SoftPruning(PruningMethod):
    """Soft filter pruning: trains while it zeroes the weakest filters.

    At every pruning step the `floor(N * P)` lowest-scored filters of each
    group are zeroed and training goes on, so they may regrow; the rate P
    is the smallest that keeps at most `flops` of the FLOPs, constant (SFP)
    or rising asymptotically to it (ASFP); the most pruned groups then
    zero one filter fewer while the budget allows, so the result lands
    within single filters below `flops`. Its training is the fine-tuning,
    so callers skip a separate one; with `recovery_epochs` it trains on
    after the last step with the zeroed filters held at zero (the
    thesis' fine-tuning of the pruned model, Tables 4.2 and 5.3). The
    result is the soft-mode network with the last step's filters zeroed;
    `ekg_keras.slim` removes them.

    Reference:
        He et al., SFP (IJCAI 2018), ASFP (IEEE T-Cybernetics 2019), FPGM
        (CVPR 2019); all three are chapters 3-5 of Yang He's PhD thesis
        (University of Technology Sydney, 2021).
    """

    Options = SoftOptions
    option_sets = OPTION_SETS
    mode = "soft"
    needs_data = True
    trains_while_pruning = True
    finetuner = None
    smoke_options = {"epochs": 2}

    def __init__(self, model, scope, data=None, **kwargs):
        super().__init__(model, scope, data, **kwargs)
        if self.options.epochs is None:
            self.options = dataclasses.replace(
                self.options, epochs=DEFAULT_EPOCHS
            )
        with backend.scope(self.strategy):
            self.trainer = SoftFilterPruning(
                self.model,
                # The set-up's scope: its target is the one budgeted by
                # (under a latency budget, maybe not the user's fraction).
                scope=self.setup.scope,
                options=self.options,
                cost=self.setup.counter,
            )

    @classmethod
    def training_budget(cls, epochs, options=None):
        """Soft pruning over the budget, the last step followed by
        `RECOVERY_SHARE` of it (at least one epoch) of recovery."""
        del options
        epochs = check_epochs(epochs, minimum=2)
        recovery = max(1, round(epochs * RECOVERY_SHARE))
        soft = epochs - recovery
        return TrainingBudget(
            epochs,
            {"epochs": soft, "recovery_epochs": recovery},
            (("soft_pruning", soft), ("recovery", recovery)),
        )

    def search(self, fitter):
        loss = default_loss(self.model)
        fitter.fit(
            TrainingPhase(
                "soft_pruning",
                self.trainer,
                epochs=self.options.epochs,
                loss=loss,
                callbacks=[SoftPruningCallback()],
            )
        )
        self.history = list(self.trainer.history_of_steps)
        if self.options.recovery_epochs:
            self.trainer.hold_pruned()
            fitter.fit(
                TrainingPhase(
                    "soft_recovery",
                    self.trainer,
                    epochs=self.options.recovery_epochs,
                    loss=loss,
                )
            )
        return self.model

    def kept_fraction(self):
        """The FLOPs of the current masks as the soft model counts them:
        exact once recovery holds the zeroed channels at zero."""
        keep = self.setup.current_keep()
        return self.trainer.fraction(self.setup.keep_counts(keep))


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

register_claim(
    Claim(
        "asfp_ge_sfp",
        "ASFP >= SFP at the same budget",
        "asfp",
        "sfp",
        "He thesis Sec. 4.4.5 (Fig. 4.6, Fig. 4.7), Tables 4.1 and 4.3",
    )
)
register_claim(
    Claim(
        "fpgm_ge_norm",
        "FPGM >= the norm criterion (SFP) at the same budget",
        "fpgm",
        "sfp",
        "He thesis Sec. 5.4, Tables 5.1 and 5.2",
    )
)
