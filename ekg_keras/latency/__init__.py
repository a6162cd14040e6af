"""Measured latency: timing models, and a latency cost for pruning budgets.

`measure_latency` times a whole model, `measure_latencies` several
against each other. `LatencyCounter` predicts a pruned
network's latency from per-layer timings on the current device and
runtime (cached in a file), with the interface of the FLOPs counter, so
that `prune(model, latency=0.5)` budgets every method by it.
"""

from ekg_keras.latency.budget import check_budget
from ekg_keras.latency.budget import check_latency_fraction
from ekg_keras.latency.cache import LatencyCache
from ekg_keras.latency.cache import default_cache_path
from ekg_keras.latency.counter import LatencyCounter
from ekg_keras.latency.layers import GRID
from ekg_keras.latency.layers import TimedLayer
from ekg_keras.latency.layers import timed_layers
from ekg_keras.latency.measure import Latency
from ekg_keras.latency.measure import inference_function
from ekg_keras.latency.measure import measure_latencies
from ekg_keras.latency.measure import measure_latency
from ekg_keras.latency.runners import RUNTIMES
from ekg_keras.latency.runners import check_runtime
from ekg_keras.latency.runners import device_id
from ekg_keras.latency.runners import runtime_id
from ekg_keras.latency.table import LatencyTable
