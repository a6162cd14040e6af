"""EKG (Lee and Song, ECCV 2022): sub-network search guided by ensemble
knowledge, then memory-bank distillation fine-tuning.

* `method.EKGSearch` (registered as "ekg") with `options.EKGOptions`;
  the search's `rules` (its decision rules), `objective` (its criterion),
  `subset_finetune` (its one-epoch warm-up on the per-class subset),
  `history.SearchStep` (one chosen sub-network) and `plotting.plot_search`;
* `teachers.select_teachers`, `memory_bank` (teacher logits per sample),
  `distillation.EKGFineTuning` (the train step) and `finetuner` (the "ekg"
  fine-tuner that builds the bank from any method's trajectory).
"""

from ekg_keras.methods.ekg.distillation import EKGFineTuning
from ekg_keras.methods.ekg.distillation import kl_divergence
from ekg_keras.methods.ekg.distillation import teacher_target
from ekg_keras.methods.ekg.finetuner import DistillationFineTuning
from ekg_keras.methods.ekg.history import SearchStep
from ekg_keras.methods.ekg.memory_bank import HostMemoryBank
from ekg_keras.methods.ekg.memory_bank import MemoryBank
from ekg_keras.methods.ekg.memory_bank import build_memory_bank
from ekg_keras.methods.ekg.method import EKGSearch
from ekg_keras.methods.ekg.options import EKGOptions
from ekg_keras.methods.ekg.plotting import plot_search
from ekg_keras.methods.ekg.teachers import select_teachers
