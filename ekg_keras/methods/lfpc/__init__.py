"""LFPC (He et al., CVPR 2020, thesis ch. 6): learned pruning criteria.

* `method.LFPC` (registered as "lfpc") with `options.LFPCOptions`;
* `sampler.CriteriaSampler`, the differentiable criteria sampler (a Keras
  model), with `widths` (its candidate keep counts), `cost` (expected
  FLOPs, the computation loss), `data` (its validation split), `history`
  and `callbacks` (its history, TensorBoard, progress);
* `criteria`: the candidate criteria and the adversarial "adv_l1" /
  "adv_l2", registered in `ekg_keras.criteria`;
* `structure` (the pruned structure after the search), `trajectory` (the
  sub-networks EKG's distillation can learn from), `finetuner` (the
  "cosine" fine-tuner), `plotting.plot_criteria`.
"""

from ekg_keras.methods.lfpc.callbacks import SamplerHistory
from ekg_keras.methods.lfpc.cost import ExpectedFlops
from ekg_keras.methods.lfpc.cost import computation_loss
from ekg_keras.methods.lfpc.criteria import DEFAULT_CRITERIA
from ekg_keras.methods.lfpc.criteria import adversarial_l1
from ekg_keras.methods.lfpc.criteria import adversarial_l2
from ekg_keras.methods.lfpc.finetuner import CosineFineTuning
from ekg_keras.methods.lfpc.finetuner import CosineLearningRate
from ekg_keras.methods.lfpc.history import SamplerEpoch
from ekg_keras.methods.lfpc.method import LFPC
from ekg_keras.methods.lfpc.options import LFPCOptions
from ekg_keras.methods.lfpc.plotting import plot_criteria
from ekg_keras.methods.lfpc.sampler import CriteriaSampler
from ekg_keras.methods.lfpc.structure import LearnedStructure
from ekg_keras.methods.lfpc.structure import choose_structure
