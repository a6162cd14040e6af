"""NPPM (Gao et al., CVPR 2021): network pruning via performance
maximization, registered as "nppm".

* `method.NPPM` (the registered method) and `options.NPPMOptions`;
* `search_model.PerformanceMaximization`: Algorithm 1 as a `keras.Model`
  whose `train_step` is one iteration;
* its pieces: `gates.ChannelGates`, `memory.EpisodicMemory`,
  `predictor.PerformancePredictor`, `regularizer.FlopsRegularizer`,
  `gradients` (Eq. 9 and gamma) and `structure.final_structure`.
"""

from ekg_keras.methods.nppm.gates import ChannelGates
from ekg_keras.methods.nppm.gradients import confidence
from ekg_keras.methods.nppm.gradients import modified_gradient
from ekg_keras.methods.nppm.gradients import orthogonal_part
from ekg_keras.methods.nppm.memory import EpisodicMemory
from ekg_keras.methods.nppm.method import NPPM
from ekg_keras.methods.nppm.options import NPPMOptions
from ekg_keras.methods.nppm.predictor import PerformancePredictor
from ekg_keras.methods.nppm.regularizer import FlopsRegularizer
from ekg_keras.methods.nppm.search_model import PerformanceMaximization
from ekg_keras.methods.nppm.structure import final_structure
