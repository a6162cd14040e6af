"""Soft filter pruning: SFP, ASFP and FPGM (registered as "sfp", "asfp",
"fpgm").

* `method.SoftPruning`, the registered method, with `options.SoftOptions`;
* `model.SoftFilterPruning`, the `keras.Model` that trains while it prunes,
  `callback.SoftPruningCallback` (runs its steps during `fit`) and `step`
  (what one step zeroes: `pruned_count`, `PruningStep`).
"""

from ekg_keras.methods.soft.callback import SoftPruningCallback
from ekg_keras.methods.soft.method import SoftPruning
from ekg_keras.methods.soft.model import SoftFilterPruning
from ekg_keras.methods.soft.options import SoftOptions
from ekg_keras.methods.soft.step import PruningStep
from ekg_keras.methods.soft.step import pruned_count
