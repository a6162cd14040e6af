"""SP (Zhang and Ou): stage-wise super-net training, then an evolutionary
search per stage under budgets an EA manager splits (Sec. 3.2-3.3).

* `stages.find_stages`: stages where the feature-map resolution changes;
* `widths`: allowed counts per group and the criterion's channel order;
* `supernet.StageSuperNet`: the super-net and its sandwich train step;
* `fitness.StageFitness`, `evolution`, `manager`: the stage EAs and the EA
  manager, scored through the shared `SubnetworkEvaluator`;
* `method.StagewisePruning`: the method registered as "sp", with
  `options.SPOptions`; `history` (the manager's generations, the result);
* `scratch`: the "scratch" fine-tuner (retraining with fresh weights);
* `plotting.plot_sp`: the manager's budgets and losses, the chosen widths.
"""

from ekg_keras.methods.sp.evolution import EvolutionSettings
from ekg_keras.methods.sp.history import ManagerGeneration
from ekg_keras.methods.sp.history import SPResult
from ekg_keras.methods.sp.method import StagewisePruning
from ekg_keras.methods.sp.options import SPOptions
from ekg_keras.methods.sp.plotting import plot_sp
from ekg_keras.methods.sp.scratch import ScratchTraining
from ekg_keras.methods.sp.scratch import reinitialize
from ekg_keras.methods.sp.stages import Stage
from ekg_keras.methods.sp.stages import find_stages
from ekg_keras.methods.sp.supernet import StageSuperNet
