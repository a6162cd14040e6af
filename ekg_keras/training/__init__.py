"""Training with pruning: soft filter pruning (SFP/ASFP/FPGM) and EKG's
memory-bank fine-tuning."""

from ekg_keras.training.ekg_finetune import EKGFineTuning
from ekg_keras.training.ekg_finetune import finetune_searched
from ekg_keras.training.memory_bank import HostMemoryBank
from ekg_keras.training.memory_bank import MemoryBank
from ekg_keras.training.memory_bank import build_memory_bank
from ekg_keras.training.soft_pruning import PruningStep
from ekg_keras.training.soft_pruning import SoftFilterPruning
from ekg_keras.training.soft_pruning import SoftPruningCallback
from ekg_keras.training.soft_selection import SOFT_CRITERIA
from ekg_keras.training.teachers import select_teachers
