"""EKG's fine-tuner: memory bank from a trajectory, then distillation."""

import dataclasses

from ekg_keras.methods.ekg.distillation import EKGFineTuning
from ekg_keras.methods.ekg.memory_bank import build_memory_bank
from ekg_keras.training.finetuners import FineTuner
from ekg_keras.training.finetuners import register_finetuner
from ekg_keras.training.fitting import TrainingPhase


@dataclasses.dataclass(frozen=True)
class DistillationOptions:
    """The EKG fine-tuner's options a run sets by name.

    Attributes:
        num_teachers: K, the sub-networks of the trajectory whose logits
            fill the memory bank (5, as the EKG reference code).
    """

    num_teachers: int = 5

    def __post_init__(self):
        if isinstance(self.num_teachers, bool) or not (
            isinstance(self.num_teachers, int) and self.num_teachers >= 1
        ):
            raise ValueError(
                "`num_teachers` should be a positive integer. Received: "
                f"num_teachers={self.num_teachers!r}"
            )


@register_finetuner
class DistillationFineTuning(FineTuner):
    """EKG's second half (Alg. 1, lines 12-16) as a fine-tuner named "ekg".

    K teachers are chosen among the trajectory's sub-networks by their
    losses; their logits over the training set (in a fixed order, with
    sample ids) fill a memory bank; the masked model is then fine-tuned
    with `EKGFineTuning` (two views, cross-entropy plus distillation toward
    the filtered teachers) on shuffled id-carrying batches.

    Options (keyword arguments of `phase`):
        num_teachers: K (5).
        bank_options: Keyword arguments of `build_memory_bank` (`storage`,
            `top_k`, `placement`, `variant`, ...).
        apply_keep: How to write a teacher's masks (a method's own).
        verbose: 1 logs the bank's size and placement.
        **trainer_options: `EKGFineTuning` arguments (`temperature`,
            `teacher_filter`, `augment`, `seed`).
    """

    name = "ekg"
    needs_trajectory = True
    needs_sample_ids = True
    Options = DistillationOptions

    def phase(
        self,
        model,
        epochs,
        fitter,
        trajectory=None,
        *,
        num_teachers=5,
        bank_options=None,
        apply_keep=None,
        verbose=1,
        **trainer_options,
    ):
        bank, _ = build_memory_bank(
            model,
            fitter.ordered_data(with_ids=True),
            trajectory=trajectory,
            apply_keep=apply_keep,
            num_teachers=num_teachers,
            strategy=fitter.strategy,
            verbose=verbose,
            **(bank_options or {}),
        )
        with fitter.strategy.scope():
            trainer = EKGFineTuning(model, bank, **trainer_options)
        return TrainingPhase(
            "finetune", trainer, epochs, with_ids=True, augment=False
        )

    def options_from(self, settings):
        """`seed`, `verbose` and the data source's two-view augmentation
        (`views_augment`) from a run's settings."""
        options = {
            key: settings[key] for key in ("seed", "verbose") if key in settings
        }
        if "views_augment" in settings:
            options["augment"] = settings["views_augment"]
        return options
