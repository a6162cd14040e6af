"""Filter importance criteria, all with one signature, in one registry.

A criterion scores the channels of one channel group: `score(group_weights)
-> scores` takes a `GroupWeights` (the weights of the group's layers,
aligned channel by channel) and returns one float per channel; higher means
more important. A registered `Criterion` may add

* `prepare(model, graph, data, loss)`: a pass over data before scoring
  (first-order Taylor importance is one), whose per-group result reaches the
  score function as `GroupWeights.prepared`;
* `select(group_weights, count)`: which `count` channels to remove, when
  that is not simply the `count` lowest scores (FPGM-mix is one).

One-shot pruning, soft pruning and every later method read criteria from
this registry; `register_criterion` adds your own, and wherever a criterion
is expected a name from `names()` or a plain callable works.
"""

import dataclasses

import numpy as np

from ekg_keras import ties
from ekg_keras.graph.registry import get_handler
from ekg_keras.registry import Registry


@dataclasses.dataclass(frozen=True, eq=False)
class GroupWeights:
    """The weights of one channel group, row `i` being channel `i`.

    Attributes:
        group: The `ChannelGroup`.
        filters: One array per producer, shape (group size, fan-in); a
            producer that holds each channel several times has those
            filters side by side.
        bn_scales: One array of batch-normalization scales (gamma) per
            batch-normalization member, shape (group size,).
        prepared: What the criterion's `prepare` hook computed from data for
            this group (for "taylor": first-order Taylor importance, shape
            (group size,)), or None.
    """

    group: object
    filters: list
    bn_scales: list
    prepared: object = None

    @property
    def size(self):
        """Number of channels in the group."""
        return self.group.size

    @property
    def taylor(self):
        """`prepared`, under the name the Taylor criterion reads."""
        return self.prepared


@dataclasses.dataclass(frozen=True)
class Criterion:
    """A named importance criterion (see the module docstring).

    Calling it scores a `GroupWeights`.

    Attributes:
        name: Its registry name.
        score: `GroupWeights -> scores`, one float per channel, higher is
            more important.
        prepare: Optional `(model, graph, data, loss) -> per-group values`
            computed from data before scoring (`data` is then required).
        select: Optional `(GroupWeights, count) -> indices` of the `count`
            channels to remove; by default the `count` lowest scores.
    """

    name: str
    score: object
    prepare: object = None
    select: object = None

    def __call__(self, weights):
        return self.score(weights)

    @property
    def requires_data(self):
        """Whether scoring needs a pass over data first."""
        return self.prepare is not None

    def pruned(self, weights, count):
        """Sorted indices of the `count` channels of a group to remove."""
        if count <= 0:
            return np.zeros(0, dtype=np.int64)
        if self.select is not None:
            chosen = np.asarray(self.select(weights, count), dtype=np.int64)
            return np.sort(chosen)
        scores = checked_scores(self, weights)
        return np.sort(ties.order(scores, self.tie_rtol)[:count])

    @property
    def tie_rtol(self):
        """Relative tolerance under which two of its scores are tied (see
        `ekg_keras.ties`): scores computed from data carry the rounding of
        the framework's kernels, scores of the weights alone only NumPy's.
        """
        return ties.SCORE_RTOL if self.prepare is not None else ties.WEIGHT_RTOL


def l1_norm(weights):
    """Sum of absolute filter weights over the group's producers."""
    return sum(np.abs(f).sum(axis=1) for f in _filters(weights))


def l2_norm(weights):
    """L2 norm of each channel's filters, producers concatenated.

    The criterion of SFP/ASFP (thesis Eq. 3.2 with p = 2).
    """
    squares = sum(np.square(f).sum(axis=1) for f in _filters(weights))
    return np.sqrt(squares)


def geometric_median(weights):
    """FPGM: sum of Euclidean distances from a filter to all the others.

    Filters close to the geometric median of their layer are the most
    replaceable, so the smallest sums are pruned first (thesis Eq. 5.9).
    """
    matrix = np.concatenate(_filters(weights), axis=1).astype(np.float64)
    return pairwise_distances(matrix).sum(axis=1)


def pairwise_distances(matrix):
    """Euclidean distances between the rows of `matrix`."""
    squares = np.square(matrix).sum(axis=1)
    gram = matrix @ matrix.T
    squared = np.maximum(squares[:, None] + squares[None, :] - 2 * gram, 0.0)
    np.fill_diagonal(squared, 0.0)
    return np.sqrt(squared)


def bn_scale(weights):
    """Sum of |gamma| of the group's batch normalizations (network slimming)."""
    if not weights.bn_scales:
        raise ValueError(
            "The 'bn_scale' criterion needs a BatchNormalization on the "
            f"group's channels. Group {weights.group.id} "
            f"({', '.join(weights.group.producers)}) has none."
        )
    return sum(np.abs(scale) for scale in weights.bn_scales)


def taylor(weights):
    """First-order Taylor importance |sum dL/dy * y|, accumulated over data.

    Computed by `ekg_keras.taylor.taylor_scores` (the criterion's `prepare`
    hook) before scoring; needs `data`.
    """
    if weights.prepared is None:
        raise ValueError(
            "The 'taylor' criterion needs data: pass `data=` (batches of "
            "inputs and integer labels)."
        )
    return weights.prepared


def random(weights):
    """Uniform random scores, seeded by the group id (a baseline)."""
    return np.random.default_rng(weights.group.id).random(weights.size)


#: FPGM-mix's default share of the pruned filters chosen by geometric median
#: (FPGM-mix 40% = 30% by L2 norm + 10% by geometric median, thesis
#: Sec. 5.4.1).
FPGM_SHARE = 0.25


def fpgm_mix(share=FPGM_SHARE):
    """FPGM-mix as a criterion: part of the removed filters by L2 norm, the
    rest by geometric median among the survivors (thesis Sec. 5.4.1).

    Args:
        share: Fraction of the removed filters chosen by geometric median.

    Returns:
        A `Criterion` named "l2+fpgm" that scores by L2 norm (for
        allocations that rank channels) and selects as FPGM-mix does.
    """
    if not 0 <= share <= 1:
        raise ValueError(
            f"`fpgm_share` should be in [0, 1]. Received: fpgm_share={share!r}"
        )

    def select(weights, count):
        by_median = int(np.floor(count * share + 1e-9))
        order = ties.order(l2_norm(weights))
        pruned = list(order[: count - by_median])
        survivors = order[count - by_median :]
        if by_median:
            matrix = np.concatenate(_filters(weights), axis=1)[survivors]
            sums = pairwise_distances(matrix).sum(axis=1)
            pruned += list(
                survivors[ties.order(sums)[:by_median]]
            )
        return np.asarray(pruned, dtype=np.int64)

    return Criterion("l2+fpgm", l2_norm, select=select)


_CRITERIA = Registry("criterion")


def register_criterion(name, score, *, prepare=None, select=None):
    """Registers a criterion under `name` (see the module docstring).

    Args:
        name: The name methods and flags use (e.g. "l1").
        score: `GroupWeights -> one float per channel` (higher is kept).
        prepare: Optional data pass `(model, graph, data, loss) -> list` with
            one entry per group, handed to `score` as
            `GroupWeights.prepared`.
        select: Optional `(GroupWeights, count) -> indices to remove`.

    Returns:
        The registered `Criterion`.

    Raises:
        ValueError: If `name` is taken or `score` is not callable.

    Example:

    ```python
    def mean_abs(weights):
        return sum(abs(f).mean(axis=1) for f in weights.filters)

    ekg_keras.criteria.register_criterion("mean_abs", mean_abs)
    ekg_keras.prune(model, flops=0.5, criterion="mean_abs")
    ```
    """
    if not callable(score):
        raise ValueError(
            f"`score` of criterion {name!r} should be callable. Received: "
            f"{score!r}"
        )
    criterion = Criterion(name, score, prepare=prepare, select=select)
    return _CRITERIA.register(name, criterion)


def names():
    """Names of the registered criteria, sorted."""
    return _CRITERIA.names()


def get(criterion):
    """Resolves a criterion name, `Criterion` or callable to a `Criterion`.

    A plain callable becomes a `Criterion` that scores with it (with
    `prepare` / `select` taken from attributes of that name, if it has
    them).

    Raises:
        ValueError: For an unknown name or a non-callable.
    """
    if isinstance(criterion, Criterion):
        return criterion
    if callable(criterion):
        return Criterion(
            getattr(criterion, "__name__", "custom"),
            criterion,
            prepare=getattr(criterion, "prepare", None),
            select=getattr(criterion, "select", None),
        )
    if criterion not in _CRITERIA:
        raise ValueError(
            f"`criterion` should be one of {names()} or a callable. "
            f"Received: criterion={criterion!r}"
        )
    return _CRITERIA.get(criterion)


def requires_data(criterion):
    """Whether the criterion needs data (e.g. Taylor)."""
    return get(criterion).requires_data


def group_weights(graph, group, prepared=None, cache=None, records=None):
    """Collects the `GroupWeights` of `group` from the traced model.

    Args:
        graph: The `ChannelGraph`.
        group: One of its groups.
        prepared: Optional per-group values from a criterion's `prepare`
            hook (e.g. Taylor scores), indexed by group id.
        cache: Optional dict reused across calls to read each layer's
            filters and scales once (valid while the weights do not
            change).
        records: Optional `LayerChannels` to read from instead of every
            layer (e.g. one producer, to score it alone).
    """
    cache = {} if cache is None else cache
    records = graph.layers_on_group(group.id) if records is None else records
    filters, scales = [], []
    for record in records:
        if record.kind == "source":
            if not np.any(record.outputs[0].group == group.id):
                continue  # Reading filters is slow; this one has none here.
            key = id(record.layer)
            if key not in cache:
                cache[key] = get_handler(record.layer).filters(record.layer)
            rows = cache[key]
            if rows is not None:
                aligned = _align(record.outputs[0], group, rows)
                if aligned is not None:
                    filters.append(aligned)
        elif (
            record.kind == "member"
            and getattr(record.layer, "gamma", None) is not None
        ):
            key = ("gamma", id(record.layer))
            if key not in cache:
                cache[key] = np.asarray(record.layer.gamma.numpy())[:, None]
            aligned = _align(record.inputs[0], group, cache[key])
            if aligned is not None:
                scales.append(aligned.mean(axis=1))
    values = None if prepared is None else prepared[group.id]
    return GroupWeights(group, filters, scales, values)


def score(criterion, graph, group, prepared=None):
    """Scores the channels of `group` with `criterion`.

    Returns:
        Float array of shape (group.size,).

    Raises:
        ValueError: If the criterion returns the wrong shape or non-finite
            values.
    """
    return checked_scores(get(criterion), group_weights(graph, group, prepared))


def checked_scores(criterion, weights):
    """`criterion(weights)` as floats, checked for shape and finiteness.

    Raises:
        ValueError: If the scores have the wrong shape or are not finite,
            naming the group.
    """
    group = weights.group
    values = np.asarray(get(criterion)(weights), dtype=np.float64)
    if values.shape != (group.size,):
        raise ValueError(
            f"A criterion should return one score per channel, shape "
            f"({group.size},) for group {group.id}. Received: shape "
            f"{values.shape}."
        )
    if not np.all(np.isfinite(values)):
        raise ValueError(
            f"Criterion scores for group {group.id} "
            f"({', '.join(group.producers)}) are not all finite: "
            f"{int(np.sum(~np.isfinite(values)))} of {group.size} are NaN "
            "or infinite."
        )
    return values


def _filters(weights):
    if not weights.filters:
        raise ValueError(
            f"Group {weights.group.id} has no producer with filters to score."
        )
    return [np.ascontiguousarray(f, dtype=np.float64) for f in weights.filters]


def _align(channel_map, group, rows):
    """Rows of `rows` (one per channel of the map) gathered per group
    channel; channels that appear r times give r rows side by side."""
    positions = np.flatnonzero(channel_map.group == group.id)
    if not len(positions):
        return None
    order = positions[np.argsort(channel_map.index[positions], kind="stable")]
    repeats = len(order) // group.size
    if len(order) == len(rows) and np.array_equal(order, np.arange(len(rows))):
        gathered = rows  # Already in group order: no copy of the filters.
    else:
        gathered = rows[order]
    return gathered.reshape(group.size, repeats * rows.shape[1])


def _prepare_taylor(model, graph, data, loss=None):
    from ekg_keras.taylor import taylor_scores

    return taylor_scores(model, graph, data, loss=loss)


register_criterion("l1", l1_norm)
register_criterion("l2", l2_norm)
register_criterion("fpgm", geometric_median)
register_criterion("bn_scale", bn_scale)
register_criterion("taylor", taylor, prepare=_prepare_taylor)
register_criterion("random", random)
_CRITERIA.register("l2+fpgm", fpgm_mix())
