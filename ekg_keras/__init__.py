"""ekg_keras: filter pruning for Keras 3.

```python
import ekg_keras
small = ekg_keras.prune(model, flops=0.45)  # keep 45% of the FLOPs
```
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
from ekg_keras import plotting
from ekg_keras import schedules
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
from ekg_keras.latency import measure_latency
from ekg_keras.layers import strip
from ekg_keras.layers import wrap
from ekg_keras.methods import PruningMethod
from ekg_keras.methods import register_method
from ekg_keras.methods.ekg import EKGFineTuning
from ekg_keras.methods.ekg import EKGSearch
from ekg_keras.methods.soft import SoftFilterPruning
from ekg_keras.prune import prune
from ekg_keras.runtimes import load_exported
from ekg_keras.slim import slim

__version__ = "0.1.0"
