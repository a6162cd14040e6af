"""Filter importance criteria, all with one signature.

A criterion is a callable `criterion(group_weights) -> scores` that takes a
`GroupWeights` (the weights of one channel group, aligned channel by
channel across the group's layers) and returns one float per channel of the
group; higher means more important. Pass a name from `names()` or your own
callable wherever a criterion is expected.
"""

import dataclasses

import numpy as np

from ekg_keras.graph.registry import get_handler


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
        taylor: First-order Taylor importance from data, shape (group size,),
            or None when no data was given.
    """

    group: object
    filters: list
    bn_scales: list
    taylor: object = None

    @property
    def size(self):
        """Number of channels in the group."""
        return self.group.size


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

    Computed by `taylor_scores` before scoring; needs `data`.
    """
    if weights.taylor is None:
        raise ValueError(
            "The 'taylor' criterion needs data: pass `data=` (batches of "
            "inputs and integer labels)."
        )
    return weights.taylor


taylor.requires_data = True


def random(weights):
    """Uniform random scores, seeded by the group id (a baseline)."""
    return np.random.default_rng(weights.group.id).random(weights.size)


_CRITERIA = {
    "l1": l1_norm,
    "l2": l2_norm,
    "fpgm": geometric_median,
    "bn_scale": bn_scale,
    "taylor": taylor,
    "random": random,
}


def names():
    """Names of the built-in criteria."""
    return tuple(_CRITERIA)


def get(criterion):
    """Resolves a criterion name or callable to a callable.

    Raises:
        ValueError: For an unknown name or a non-callable.
    """
    if callable(criterion):
        return criterion
    if criterion not in _CRITERIA:
        raise ValueError(
            f"`criterion` should be one of {names()} or a callable. "
            f"Received: criterion={criterion!r}"
        )
    return _CRITERIA[criterion]


def requires_data(criterion):
    """Whether the criterion needs data (e.g. Taylor)."""
    return bool(getattr(get(criterion), "requires_data", False))


def group_weights(graph, group, taylor_scores=None, cache=None, records=None):
    """Collects the `GroupWeights` of `group` from the traced model.

    Args:
        graph: The `ChannelGraph`.
        group: One of its groups.
        taylor_scores: Optional per-group Taylor scores.
        records: Optional `LayerChannels` to read from instead of every
            layer (e.g. one producer, to score it alone).
        cache: Optional dict reused across calls to read each layer's
            filters and scales once (valid while the weights do not
            change).
    """
    cache = {} if cache is None else cache
    records = graph.layers.values() if records is None else records
    filters, scales = [], []
    for record in records:
        if record.kind == "source":
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
    taylor_values = None
    if taylor_scores is not None:
        taylor_values = taylor_scores[group.id]
    return GroupWeights(group, filters, scales, taylor_values)


def score(criterion, graph, group, taylor_scores=None):
    """Scores the channels of `group` with `criterion`.

    Returns:
        Float array of shape (group.size,).

    Raises:
        ValueError: If the criterion returns the wrong shape or non-finite
            values.
    """
    values = np.asarray(
        get(criterion)(group_weights(graph, group, taylor_scores)),
        dtype=np.float64,
    )
    if values.shape != (group.size,):
        raise ValueError(
            f"A criterion should return one score per channel, shape "
            f"({group.size},) for group {group.id}. Received: shape "
            f"{values.shape}."
        )
    if not np.all(np.isfinite(values)):
        raise ValueError(
            f"Criterion scores for group {group.id} are not all finite."
        )
    return values


def _filters(weights):
    if not weights.filters:
        raise ValueError(
            f"Group {weights.group.id} has no producer with filters to score."
        )
    return [np.asarray(f, dtype=np.float64) for f in weights.filters]


def _align(channel_map, group, rows):
    """Rows of `rows` (one per channel of the map) gathered per group
    channel; channels that appear r times give r rows side by side."""
    positions = np.flatnonzero(channel_map.group == group.id)
    if not len(positions):
        return None
    order = positions[np.argsort(channel_map.index[positions], kind="stable")]
    repeats = len(order) // group.size
    return rows[order].reshape(group.size, repeats * rows.shape[1])
