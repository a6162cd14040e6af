"""Soft filter pruning: SFP, ASFP and FPGM (registered as "sfp", "asfp",
"fpgm")."""

from ekg_keras.methods.soft.method import SoftPruning
from ekg_keras.methods.soft.model import PruningStep
from ekg_keras.methods.soft.model import SoftFilterPruning
from ekg_keras.methods.soft.model import SoftPruningCallback
from ekg_keras.methods.soft.model import pruned_count
from ekg_keras.methods.soft.options import SoftOptions
