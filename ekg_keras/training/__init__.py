"""Training with pruning: soft filter pruning (SFP/ASFP/FPGM)."""

from ekg_keras.training.soft_pruning import PruningStep
from ekg_keras.training.soft_pruning import SoftFilterPruning
from ekg_keras.training.soft_pruning import SoftPruningCallback
from ekg_keras.training.soft_selection import SOFT_CRITERIA
