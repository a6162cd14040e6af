"""Method-neutral training pieces: training phases and the `Fitter` that
runs them, fine-tuners, per-sample augmentations, and `inner_model` (the
network a method's training model trains)."""

from ekg_keras.training.finetuners import FineTuner
from ekg_keras.training.finetuners import PlainFineTuning
from ekg_keras.training.finetuners import finetune
from ekg_keras.training.finetuners import finetune_model
from ekg_keras.training.finetuners import register_finetuner
from ekg_keras.training.fitting import Fitter
from ekg_keras.training.fitting import TrainingPhase
from ekg_keras.training.inner import inner_model

_MOVED = {
    "EKGFineTuning": "ekg_keras.methods.ekg",
    "MemoryBank": "ekg_keras.methods.ekg",
    "HostMemoryBank": "ekg_keras.methods.ekg",
    "build_memory_bank": "ekg_keras.methods.ekg",
    "select_teachers": "ekg_keras.methods.ekg",
    "SoftFilterPruning": "ekg_keras.methods.soft",
    "SoftPruningCallback": "ekg_keras.methods.soft",
    "PruningStep": "ekg_keras.methods.soft",
}


def __getattr__(name):
    # EKG's and soft pruning's pieces moved to their methods' packages.
    if name in _MOVED:
        raise AttributeError(
            f"ekg_keras.training.{name} moved: use {_MOVED[name]}.{name}."
        )
    raise AttributeError(
        f"module 'ekg_keras.training' has no attribute {name!r}"
    )
