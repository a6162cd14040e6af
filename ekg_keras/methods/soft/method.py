"""SFP, ASFP and FPGM as registered methods (training while pruning)."""

import dataclasses

from ekg_keras.methods.base import PruningMethod
from ekg_keras.methods.registry import add
from ekg_keras.methods.registry import register_method
from ekg_keras.methods.soft.callback import SoftPruningCallback
from ekg_keras.methods.soft.model import SoftFilterPruning
from ekg_keras.methods.soft.options import SoftOptions
from ekg_keras.taylor import default_loss
from ekg_keras.training.fitting import TrainingPhase

#: Training epochs of soft pruning through the registry when none are given.
DEFAULT_EPOCHS = 30


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
        (CVPR 2019); all three are chapters 3-5 of Yang He's PhD thesis
        (University of Technology Sydney, 2021).
    """

    Options = SoftOptions
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
        with self.strategy.scope():
            self.trainer = SoftFilterPruning(
                self.model,
                scope=self.scope,
                options=self.options,
                cost=self.setup.counter,
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
