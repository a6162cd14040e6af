"""Pruning methods behind one protocol and one registry.

```python
ekg_keras.methods.names()        # ('asfp', 'ekg', 'fpgm', 'l1', ...)
entry = ekg_keras.methods.get("ekg")
search = entry.create(model, 0.5, data, val_per_class=16)
masked = search.run()
```

A new method is a package here: `method.py` holds its `PruningMethod`
subclass, which implements `search(fitter)` and registers itself with
`register_method`; `options.py` its `Options` dataclass; then the files of
its algorithm. Every module and package of this package is imported
below, so it is registered without an edit anywhere else. See the docs'
"Architecture" page.
"""

import importlib
import pkgutil

from ekg_keras.methods.base import PruningMethod
from ekg_keras.methods.base import keep_top
from ekg_keras.methods.budget import TrainingBudget
from ekg_keras.methods.checkpoint import CheckpointError
from ekg_keras.methods.checkpoint import SearchCheckpoint
from ekg_keras.methods.claims import Claim
from ekg_keras.methods.claims import claims
from ekg_keras.methods.claims import register_claim
from ekg_keras.methods.options import NoOptions
from ekg_keras.methods.options import from_settings
from ekg_keras.methods.options import make_options
from ekg_keras.methods.options import parse as parse_options
from ekg_keras.methods.registry import MethodEntry
from ekg_keras.methods.registry import default
from ekg_keras.methods.registry import describe
from ekg_keras.methods.registry import get
from ekg_keras.methods.registry import names
from ekg_keras.methods.registry import register_method
from ekg_keras.methods.registry import unregister_method
from ekg_keras.methods.setup import PruningSetup
from ekg_keras.methods.setup import apply_keep
from ekg_keras.methods.trajectory import Trajectory


def _import_methods():
    """Imports every module of this package, so that methods register."""
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_import_methods()
