"""Building models without running their initializers.

Building a layer runs its initializers (a random kernel, say), and copying
weights in afterwards overwrites them: for a whole model the two cost more
than the rest of the build. Layers built inside `deferred_variables()`
create their variables without values; `initialize_deferred(values)` then
gives each its value at creation. `ekg_keras.wrap` and `ekg_keras.slim`
build their models this way.

```python
with ekg_keras.deferred.deferred_variables():
    copy = keras.Model.from_config(model.get_config())
ekg_keras.deferred.initialize_deferred(
    zip(copy.weights, model.get_weights())
)
```
"""

from ekg_keras._keras_private import deferred_variables
from ekg_keras._keras_private import initialize_deferred

__all__ = ["deferred_variables", "initialize_deferred"]
