"""ekg_keras: filter pruning for Keras 3.

```python
import ekg_keras
small = ekg_keras.prune(model, flops=0.45)  # keep 45% of the FLOPs
```

Every registered method's class is exported here (`OneShot`, `EKGSearch`,
`SoftPruning`, `LFPC`, `NPPM`, `StagewisePruning`; by name:
`ekg_keras.methods.get(name)`), with the Keras models a user trains
directly (`SoftFilterPruning`, `EKGFineTuning`); the rest of a method is
in its package, `ekg_keras.methods.<name>`.
"""

from ekg_keras import allocation
from ekg_keras import criteria
from ekg_keras import data
from ekg_keras import deferred
from ekg_keras import graph
from ekg_keras import layers
from ekg_keras import methods
from ekg_keras import models
from ekg_keras import numerics
from ekg_keras import training
from ekg_keras.batchnorm import recalibrate_batchnorm
from ekg_keras.evaluation import SubnetworkEvaluator
from ekg_keras.export import ExportCheckError
from ekg_keras.export import compare_exported
from ekg_keras.export import export
from ekg_keras.flops import FlopsCounter
from ekg_keras.flops import FlopsReport
from ekg_keras.flops import count_flops
from ekg_keras.fold import fold_batchnorm
from ekg_keras.latency import measure_latencies
from ekg_keras.latency import measure_latency
from ekg_keras.layers import strip
from ekg_keras.layers import wrap
from ekg_keras.methods import PruningMethod
from ekg_keras.methods import register_method
from ekg_keras.methods.ekg import EKGFineTuning
from ekg_keras.methods.ekg import EKGSearch
from ekg_keras.methods.ekg import plotting
from ekg_keras.methods.lfpc import LFPC
from ekg_keras.methods.nppm import NPPM
from ekg_keras.methods.oneshot import OneShot
from ekg_keras.methods.soft import SoftFilterPruning
from ekg_keras.methods.soft import SoftPruning
from ekg_keras.methods.soft import schedules
from ekg_keras.methods.sp import StagewisePruning
from ekg_keras.prune import prune
from ekg_keras.runtimes import load_exported
from ekg_keras.scope import PruningScope
from ekg_keras.slim import slim
from ekg_keras.traced_macs import traced_macs

__version__ = "0.1.0"
