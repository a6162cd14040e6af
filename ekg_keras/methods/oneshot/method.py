"""One-shot pruning: score every channel once, allocate, mask."""

from ekg_keras import allocation as allocation_lib
from ekg_keras import criteria as criteria_lib
from ekg_keras.methods.base import PruningMethod
from ekg_keras.methods.base import keep_top
from ekg_keras.methods.oneshot.options import OPTION_SETS
from ekg_keras.methods.oneshot.options import OneShotOptions
from ekg_keras.methods.registry import add
from ekg_keras.methods.registry import register_method


@register_method(
    "oneshot",
    summary="one-shot pruning: criterion scores, allocation",
    default_for="without data",
)
class OneShot(PruningMethod):
    """Scores every channel with a criterion and keeps the best per group.

    The allocation chooses how many channels each group keeps so that the
    pruned model keeps at most `flops` of the original MACs (as close below
    as single channels allow); within a group the criterion chooses which.
    Data-driven criteria (e.g. "taylor") score on `data`.
    """

    Options = OneShotOptions
    option_sets = OPTION_SETS

    def search(self, fitter):
        criterion = criteria_lib.get(self.options.criterion)
        if criterion.requires_data and self.data is None:
            raise ValueError(
                f"criterion={self.options.criterion!r} scores channels from "
                "data: pass `data=` with (inputs, labels) batches."
            )
        setup = self.setup
        prepared = None
        if criterion.requires_data:
            prepared = criterion.prepare(
                setup.model, setup.graph, self.data, self.options.loss
            )
        weights = [
            criteria_lib.group_weights(setup.graph, group, prepared)
            if group.prunable
            else None
            for group in setup.graph.groups
        ]
        scores = [
            None if w is None else criteria_lib.checked_scores(criterion, w)
            for w in weights
        ]
        allocate = allocation_lib.get(self.options.allocation)
        counts = allocate(
            setup.counter, setup.target_macs, scores, setup.levels
        )
        keep = keep_top(scores, counts, setup.graph.sizes)
        if criterion.select is not None:
            keep = _selected(criterion, weights, counts, keep)
        setup.apply(keep)
        self.history = [{"keep_counts": counts, "scores": scores}]
        return setup.model


def _selected(criterion, weights, counts, keep):
    """Keep masks from the criterion's own selection rule, per group."""
    chosen = []
    for group_weights, count, mask in zip(weights, counts, keep):
        if group_weights is None or count >= len(mask):
            chosen.append(mask)
            continue
        pruned = criterion.pruned(group_weights, len(mask) - int(count))
        own = mask.copy()
        own[:] = True
        own[pruned] = False
        chosen.append(own)
    return chosen


add("l1", OneShot, "one-shot pruning by filter L1 norm", criterion="l1")
add("l2", OneShot, "one-shot pruning by filter L2 norm", criterion="l2")
