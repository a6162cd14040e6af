"""One-shot pruning (registered as "oneshot", "l1", "l2"): score every
channel once with a criterion, allocate keep counts, mask.

* `method.OneShot`, the registered method, with `options.OneShotOptions`.
"""

from ekg_keras.methods.oneshot.method import OneShot
from ekg_keras.methods.oneshot.options import OneShotOptions
