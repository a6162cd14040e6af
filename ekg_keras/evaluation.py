"""Evaluate many sub-networks (keep configurations) of one model, fast.

Searches score many sub-networks of one masked model on fixed batches: EKG
evaluates one candidate per group and step, NPPM samples structures, SP
scores evolutionary populations. A candidate usually changes only the masks
of a few groups, so everything upstream of those groups' layers is the same
for all of them: the evaluator runs the network once up to each group's
frontier (the tensors entering the part of the graph the group influences),
caches those activations, and evaluates a candidate from its group's
frontier onward with a compiled sub-model. Masks are variables, so no
candidate retraces anything. With `cache=False` every candidate runs the
whole network (the plain mode, as the EKG reference code does).
"""

import collections
import contextlib
import functools
import time

import keras
import numpy as np

from ekg_keras._backend import tf
from ekg_keras._keras_private import functional_of
from ekg_keras._keras_private import graph_nodes
from ekg_keras.layers import is_prunable
from ekg_keras.numerics import check_finite
from ekg_keras.taylor import ends_in_softmax

_KERNELS = {
    keras.layers.Conv2D: "kernel",
    keras.layers.Dense: "kernel",
    keras.layers.DepthwiseConv2D: "kernel",
    keras.layers.SeparableConv2D: "pointwise_kernel",
}


#: How `evaluate` scores several keep configurations (see the class).
LAYOUTS = ("sequential", "stacked")
#: The compiled pieces `jit_compile` may name.
PIECES = ("importance", "candidates")
#: Compute precisions of `compute_precision` (Keras dtype policy names).
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@contextlib.contextmanager
def compute_precision(model, precision):
    """Runs `model` (and its nested models) under a Keras dtype policy.

    Inside the block every layer computes in `precision`'s compute dtype
    while its variables stay float32 (`"mixed_float16"` as in
    `keras.mixed_precision`); on exit each layer gets its own policy back.
    Build the evaluator and trace its functions inside the block. Mask
    gradients are then taken with a static loss scale (`importance`).

    Args:
        model: A built Keras model.
        precision: One of `PRECISIONS`; "float32" changes nothing.

    Raises:
        ValueError: For an unknown precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(
            f"`precision` should be one of {PRECISIONS}. Received: "
            f"precision={precision!r}"
        )
    if precision == "float32":
        yield model
        return
    layers = [model, *_all_layers(model)]
    saved = [layer.dtype_policy for layer in layers]
    try:
        for layer in layers:
            if keras.backend.is_float_dtype(layer.compute_dtype):
                layer.dtype_policy = precision
        yield model
    finally:
        for layer, policy in zip(layers, saved):
            layer.dtype_policy = policy


def cross_entropy_objective(labels, targets, logits):
    """Per-sample cross-entropy of `logits` (the default objective)."""
    del targets
    return keras.losses.sparse_categorical_crossentropy(
        labels, logits, from_logits=True
    )


class SubnetworkEvaluator:
    """Evaluates sub-networks of a hard-masked model on fixed batches.

    Args:
        model: The hard-masked model (from `ekg_keras.wrap`); the evaluator
            writes its masks.
        graph: Its `ChannelGraph`.
        inputs: The evaluation inputs: an array of N samples, or for a
            model with several inputs a list of such arrays, one per input
            (the "logits" are always the model's first output).
        labels: Their integer labels (needed by `importance`).
        batch_size: Evaluation batch size (with batch statistics on, the
            statistics are taken over these batches).
        strategy: A `tf.distribute` strategy; each batch is split over its
            replicas.
        cache: Cache frontier activations (fast mode) or not (plain mode).
        rescale_kernels: Rescale the kernels reading or writing a changed
            group to keep their Frobenius norm (EKG's norm-preserving
            masking, as the EKG reference code's masked layers do).
        batch_statistics: Normalize with batch statistics rather than the
            moving averages.
        objective: `(labels, targets, logits) -> per-sample loss` whose
            mask gradients `importance` returns; defaults to cross-entropy.
        jit_compile: Compile with XLA: a bool for every piece, or a dict
            with the keys "importance" (the gradient pass) and
            "candidates" (whole-network, prefix and suffix passes). Off by
            default: on a 2-core x86 CPU XLA made both pieces about 2x
            slower than TensorFlow's own kernels (benchmarks/README.md).
        layout: How `evaluate` scores several configurations: "sequential"
            (one compiled call per configuration and batch, the masks
            written from Python in between) or "stacked" (one compiled call
            per batch for all of them: the masks of each configuration are
            rows of one tensor, written inside the call, and each row is
            run from its own frontier). "stacked" needs one replica and no
            kernel rescale; otherwise "sequential" is used.

    Attributes:
        evaluations: Number of `logits` calls so far.
        seconds: Wall seconds per phase ("importance", "prefix",
            "evaluation").

    Example:

    ```python
    evaluator = SubnetworkEvaluator(masked, graph, x_val, y_val)
    evaluator.importance()                 # also caches the frontiers
    logits = evaluator.evaluate([keep_a, keep_b])
    ```
    """

    def __init__(
        self,
        model,
        graph,
        inputs,
        labels=None,
        *,
        batch_size=256,
        strategy=None,
        cache=True,
        rescale_kernels=False,
        batch_statistics=True,
        objective=None,
        jit_compile=False,
        layout="sequential",
    ):
        if layout not in LAYOUTS:
            raise ValueError(
                f"`layout` should be one of {LAYOUTS}. Received: "
                f"layout={layout!r}"
            )
        self.model = model
        self.graph = graph
        multiple = isinstance(inputs, (list, tuple))
        arrays = [np.asarray(a) for a in (inputs if multiple else [inputs])]
        if len(arrays) != len(model.inputs):
            raise ValueError(
                f"`inputs` should hold one array per model input "
                f"({len(model.inputs)}). Received: {len(arrays)} array(s)."
            )
        num = len(arrays[0])
        self.labels = (
            np.zeros(num, np.int32) if labels is None else np.asarray(labels)
        )
        self.strategy = strategy or tf.distribute.get_strategy()
        self.objective = objective or cross_entropy_objective
        # One traced function: eager `strategy.run` on several workers wraps
        # (and traces) the function anew at every call.
        self._stack_replicas = tf.function(
            lambda value: self.strategy.run(_add_leading_axis, args=(value,)),
            reduce_retracing=True,
        )
        self.training = bool(batch_statistics)
        self.rescale_kernels = rescale_kernels
        self.jit_compile = _jit_settings(jit_compile)
        self.layout = (
            layout
            if self.strategy.num_replicas_in_sync == 1 and not rescale_kernels
            else "sequential"
        )
        self.batches = [
            (start, min(start + batch_size, num))
            for start in range(0, num, batch_size)
        ]
        # On one replica the batches (and cached activations) stay tensors,
        # so no candidate pays a host-to-tensor copy.
        convert = (
            tf.constant
            if self.strategy.num_replicas_in_sync == 1
            else np.asarray
        )
        self._x_batches = [
            tuple(convert(array[a:b]) for array in arrays)
            for a, b in self.batches
        ]
        self._multiple_inputs = multiple
        self._from_probabilities = ends_in_softmax(model)
        self._records_of_group = _maskable_records_by_group(graph)
        self._kernels = _kernel_records(graph) if rescale_kernels else {}
        self._gates = [
            r
            for r in graph.maskable_layers()
            if r.terminal and is_prunable(r.layer)
        ]
        self._channels = int(sum(g.size for g in graph.groups))
        self._gate_segments = [
            _segment_ids(r.outputs[0], graph.groups) for r in self._gates
        ]
        self._masked = _unique_layers(graph)
        # Fixed signatures with an unknown batch size: every compiled piece
        # is traced exactly once, whatever the size of the last batch.
        specs = _specs(model.inputs)
        self.num_classes = int(model.outputs[0].shape[-1])
        self._full = self._compile(self._logits, specs, "candidates")
        self._gradients = self._compile(
            self._gate_sums,
            specs
            + [
                tf.TensorSpec((None,), tf.int32),
                tf.TensorSpec((None, self.num_classes), tf.float32),
            ],
            "importance",
        )
        self._suffixes = {}
        self._suffix_models = {}
        self._frontier_specs = []
        self._prefix = None
        self._scoring = None
        self._cached = None
        if cache:
            self._build_suffixes()
        self._stacked = None
        self._keep = None
        self.evaluations = 0
        self.seconds = collections.Counter()

    @property
    def batch_inputs(self):
        """The evaluation batches as the compiled functions receive them
        (per batch a list of arrays, one per input, for several inputs)."""
        if self._multiple_inputs:
            return [list(x) for x in self._x_batches]
        return [x[0] for x in self._x_batches]

    # Masks.

    def set_keep(self, keep, groups=None):
        """Writes group keep masks into the layers (only `groups` if given).

        With the kernel rescale on, the kernels reading or writing those
        groups are rescaled to keep their Frobenius norm.
        """
        groups = range(len(self.graph.groups)) if groups is None else groups
        touched = {}
        for group in groups:
            for record in self._records_of_group.get(group, ()):
                touched[id(record.layer)] = record
        for record in touched.values():
            mask = record.outputs[0].keep_mask(keep).astype("float32")
            record.layer.filter_mask.assign(mask)
        if self.rescale_kernels:
            self._rescale(keep, groups)
        self._keep = [np.array(k, dtype=bool) for k in keep]

    def _rescale(self, keep, groups):
        for group in groups:
            for record, name, original in self._kernels.get(group, ()):
                inputs = record.inputs[0].keep_mask(keep)
                outputs = record.outputs[0].keep_mask(keep)
                kept = _kept_entries(record.layer, original, inputs, outputs)
                norm = np.linalg.norm(kept)
                scale = np.linalg.norm(original) / norm if norm > 0 else 1.0
                getattr(record.layer, name).assign(original * scale)

    # Evaluation.

    def cache_prefix(self):
        """Runs the network up to every frontier once, with the current
        masks.

        Needed only when the masks changed since the last `importance`
        call, which caches the same activations on its way.
        """
        if self._prefix is None:
            return
        start = time.perf_counter()
        self._cached = [
            self._as_frontier(self._run(self._prefix, list(x), "concat"))
            for x in self._x_batches
        ]
        self.seconds["prefix"] += time.perf_counter() - start

    def logits(self, group=None):
        """Logits (N x classes) with the current masks.

        Args:
            group: The one group whose masks changed since the frontier
                activations were cached, to evaluate from its frontier; None
                runs the whole network.
        """
        self.evaluations += 1
        start = time.perf_counter()
        suffix = self._suffixes.get(group)
        if suffix is None or self._cached is None:
            parts = [
                self._run(self._full, list(x), "concat")
                for x in self._x_batches
            ]
        else:
            model, positions = suffix
            parts = [
                self._run(model, [cached[i] for i in positions], "concat")
                for cached in self._cached
            ]
        self.seconds["evaluation"] += time.perf_counter() - start
        return np.concatenate([np.asarray(p) for p in parts])

    def evaluate(self, keeps):
        """Logits of several keep configurations; the masks end as they were.

        Each configuration is compared with the current masks (the last
        `set_keep`): one that changes a single group is evaluated from that
        group's cached frontier, any other from the inputs. With
        `layout="stacked"` all of them are scored in one compiled call per
        batch.

        Args:
            keeps: A list of keep configurations (one boolean mask per
                group each).

        Returns:
            A list of logit arrays (N x classes), one per configuration.
        """
        if self._keep is None:
            self.set_keep([np.ones(g.size, bool) for g in self.graph.groups])
        if self._cached is None:
            self.cache_prefix()
        current = self._keep
        starts = []
        for keep in keeps:
            changed = [
                g
                for g, (new, old) in enumerate(zip(keep, current))
                if not np.array_equal(new, old)
            ]
            starts.append(changed[0] if len(changed) == 1 else None)
        if self.layout == "stacked" and keeps:
            return self._evaluate_stacked(keeps, starts)
        results = []
        for keep, start in zip(keeps, starts):
            changed = [
                g
                for g, (new, old) in enumerate(zip(keep, current))
                if not np.array_equal(new, old)
            ]
            self.set_keep(keep, changed)
            results.append(self.logits(start))
            self.set_keep(current, changed)
        return results

    def _evaluate_stacked(self, keeps, starts):
        """`evaluate` in one compiled call per batch (see `layout`)."""
        self.evaluations += len(keeps)
        begin = time.perf_counter()
        if self._stacked is None:
            self._stacked = self._build_stacked()
        function, branch_of = self._stacked
        rows = tf.constant(
            np.stack([self._mask_row(keep) for keep in keeps]), tf.float32
        )
        use_cache = self._cached is not None
        branches = tf.constant(
            [branch_of.get(s, 0) if use_cache else 0 for s in starts],
            tf.int32,
        )
        parts = [
            function(
                list(x),
                list(self._cached[index]) if use_cache else [],
                rows,
                branches,
            )
            for index, x in enumerate(self._x_batches)
        ]
        self.seconds["evaluation"] += time.perf_counter() - begin
        stacked = np.concatenate([np.asarray(p) for p in parts], axis=1)
        return list(stacked)

    def _as_frontier(self, values):
        """Frontier activations in the dtypes of the suffixes' signatures:
        a 16-bit compute policy produces them in 16 bits, and the suffixes'
        layers cast them back to their compute dtype as they run."""
        return [
            tf.cast(value, spec.dtype)
            for value, spec in zip(values, self._frontier_specs)
        ]

    def _mask_row(self, keep):
        """The masks of every masked layer under `keep`, concatenated."""
        return np.concatenate(
            [
                record.outputs[0].keep_mask(keep).astype("float32")
                for record in self._masked
            ]
        )

    def importance(self, targets=None):
        """Per-group first-order Taylor importance with the current masks.

        `S_c = sum over batches and terminal masked layers |m_c dJ/dm_c|`
        (`= |sum dJ/dy * y|`, as the EKG reference's gates compute it),
        where J is the batch mean of `objective(labels, targets, logits)`.
        Masked channels score 0. With the cache on, the same pass stores
        the frontier activations of the current masks (see `cache_prefix`).

        Args:
            targets: Per-sample float targets the objective reads, shape
                (N, classes) (EKG: its ensemble logits); zeros if None.

        Returns:
            One float array per group.

        Raises:
            NonFiniteError: If a group's scores are NaN or infinite.
        """
        start = time.perf_counter()
        if targets is None:
            targets = np.zeros((len(self.labels), self.num_classes))
        flat = np.zeros(self._channels + 1)
        cached = []
        for x, (a, b) in zip(self._x_batches, self.batches):
            sums, frontier = self._run(
                self._gradients,
                [
                    *x,
                    self.labels[a:b].astype(np.int32),
                    np.asarray(targets[a:b], np.float32),
                ],
                combine=("weighted_mean", "concat"),
            )
            cached.append(self._as_frontier(frontier))
            # One row per terminal masked layer: its signed per-channel
            # `sum(dJ/dy * y)`; the absolute value is taken per layer and
            # batch, as the reference's gates do.
            for row in np.asarray(sums):
                flat += np.abs(row)
        offsets = np.cumsum([0] + [g.size for g in self.graph.groups])
        scores = [
            flat[offsets[i] : offsets[i + 1]].copy()
            for i in range(len(self.graph.groups))
        ]
        for group, values in zip(self.graph.groups, scores):
            check_finite(
                values,
                "importance scores",
                f"group {group.id} ({', '.join(group.producers)})",
            )
        if self._scoring is not None:
            self._cached = cached
        self.seconds["importance"] += time.perf_counter() - start
        return scores

    # Compiled pieces.

    def _logits(self, *inputs):
        outputs = self._call(self.model, inputs)
        return _as_logits(outputs, self._from_probabilities)

    def _call(self, model, inputs):
        inputs = inputs[0] if len(inputs) == 1 else list(inputs)
        return model(inputs, training=self.training)

    def _gate_sums(self, *arguments):
        """Per terminal masked layer, `m * dJ/dm` summed into the flat
        channel positions of its groups, and the frontier activations.

        `arguments` are the model's inputs, then labels and targets. The
        gate product's gradient and its reduction to channels stay inside
        the compiled pass (in float64, as the scores are summed), so one
        (layers x channels) array leaves it per batch.
        """
        *x, y, targets = arguments
        variables = [r.layer.filter_mask.value for r in self._gates]
        scale = _loss_scale(self.model)
        with tf.GradientTape() as tape:
            tape.watch(variables)
            if self._scoring is None:
                outputs, frontier = self._call(self.model, x), []
            else:
                outputs, *frontier = self._call(self._scoring, x)
            logits = _as_logits(outputs, self._from_probabilities)
            objective = tf.reduce_mean(self.objective(y, targets, logits))
            scaled = objective * scale if scale != 1 else objective
        gradients = tape.gradient(scaled, variables)
        rows = []
        for variable, gradient, segments in zip(
            variables, gradients, self._gate_segments
        ):
            # dJ/dm * m = sum(dJ/dy * y): the reference's score, zero for
            # masked channels (y = 0), which so stay pruned.
            product = tf.cast(gradient * variable, tf.float64)
            if scale != 1:
                product = product / scale
            rows.append(
                tf.math.unsorted_segment_sum(
                    product, segments, self._channels + 1
                )
            )
        return tf.stack(rows), [tf.convert_to_tensor(t) for t in frontier]

    def _build_suffixes(self):
        """One sub-model per group from its frontier to the outputs."""
        graph = functional_of(self.model)
        nodes = list(graph_nodes(graph))
        inside = {id(node): _layer_ids(node.operation) for node in nodes}
        model_inputs = {id(t) for t in graph.inputs}
        frontiers = {}
        for group_id, records in self._records_of_group.items():
            starts = {id(r.layer) for r in records}
            frontier = _frontier(nodes, inside, starts)
            if frontier and not all(id(t) in model_inputs for t in frontier):
                frontiers[group_id] = frontier
        unique = {}
        for frontier in frontiers.values():
            for tensor in frontier:
                unique.setdefault(id(tensor), tensor)
        if not unique:
            return
        ordered = list(unique.values())
        position = {id(t): i for i, t in enumerate(ordered)}
        prefix = keras.Model(graph.inputs, ordered)
        # The scoring pass also returns the frontier activations, so a step
        # needs no separate prefix pass (its masks are the scored ones).
        self._scoring = keras.Model(
            graph.inputs, [keras.tree.flatten(graph.outputs)[0], *ordered]
        )
        self._prefix = self._compile(
            lambda *x: [
                tf.convert_to_tensor(t)
                for t in keras.tree.flatten(self._call(prefix, x))
            ],
            _specs(graph.inputs),
            "candidates",
        )
        self._frontier_specs = _specs(ordered)
        for group_id, frontier in frontiers.items():
            suffix = keras.Model(list(frontier), graph.outputs)
            positions = [position[id(t)] for t in frontier]
            self._suffix_models[group_id] = (suffix, positions)
            self._suffixes[group_id] = (
                self._logits_function(suffix, frontier),
                positions,
            )

    def _logits_function(self, model, inputs):
        return self._compile(
            functools.partial(self._model_logits, model),
            _specs(inputs),
            "candidates",
        )

    def _build_stacked(self):
        """The compiled function of `layout="stacked"`, and the branch of
        each start group (branch 0 runs the whole network).

        The function takes one batch's inputs, its cached frontier
        activations, the configurations' mask rows (configurations x
        masked channels) and each configuration's branch. For each row it
        writes the masks, runs its branch, and stacks the logits
        (configurations x N x classes); the masks end as they were.
        """
        groups = sorted(self._suffix_models)
        branch_of = {group: i + 1 for i, group in enumerate(groups)}
        masks = [record.layer.filter_mask for record in self._masked]
        sizes = [int(m.shape[0]) for m in masks]

        def branch(model, positions, x, frontier):
            def run():
                if model is None:
                    return self._logits(*x)
                return self._model_logits(
                    model, *[frontier[i] for i in positions]
                )

            return run

        def stacked(x, frontier, rows, branches):
            saved = [tf.identity(m.value) for m in masks]
            functions = [branch(None, None, x, frontier)] + [
                branch(*self._suffix_models[g], x, frontier) for g in groups
            ]

            def body(k, results):
                values = tf.split(rows[k], sizes)
                for mask, value in zip(masks, values):
                    mask.assign(value)
                logits = tf.switch_case(branches[k], functions)
                return k + 1, results.write(k, tf.cast(logits, tf.float32))

            count = tf.shape(rows)[0]
            results = tf.TensorArray(tf.float32, size=count)
            _, results = tf.while_loop(
                lambda k, _: k < count, body, (tf.constant(0), results)
            )
            stacked_logits = results.stack()
            with tf.control_dependencies([stacked_logits]):
                for mask, value in zip(masks, saved):
                    mask.assign(value)
            return tf.identity(stacked_logits)

        inputs = _specs(self.model.inputs)
        signature = [
            inputs,
            self._frontier_specs,
            tf.TensorSpec((None, sum(sizes)), tf.float32),
            tf.TensorSpec((None,), tf.int32),
        ]
        return self._compile(stacked, signature, "candidates"), branch_of

    def _compile(self, function, signature, piece):
        """A `tf.function` of `function`, traced once per batch shape class.

        On one replica the signature leaves the batch size open, so one
        trace serves every batch; under a multi-replica strategy (whose
        `run` does not accept signature-bound functions) retracing is
        relaxed instead. The function is wrapped in a fresh partial:
        tf.function's retracing detector keys on the Python code object,
        so functions sharing one `def` (the suffixes, or the engines of
        several searches) would share a detector and warn about retracing
        that is not there.
        """
        function = functools.partial(function)
        jit_compile = self.jit_compile[piece]
        if self.strategy.num_replicas_in_sync == 1:
            return tf.function(
                function,
                input_signature=signature,
                autograph=False,
                jit_compile=jit_compile,
            )
        return tf.function(
            function, reduce_retracing=True, jit_compile=jit_compile
        )

    def _model_logits(self, model, *inputs):
        return _as_logits(self._call(model, inputs), self._from_probabilities)

    # Distribution.

    def _run(self, function, arrays, combine):
        """Runs `function` on `arrays`, split over the strategy's replicas.

        On one replica the function's tensors are returned as they are.
        Over several, each batch is split between the replicas and every
        result is merged into a NumPy array: "concat" joins the replicas'
        rows, "weighted_mean" averages by shard size. `combine` is one of
        these for all results, or a tuple with one per top-level result.
        """
        replicas = self.strategy.num_replicas_in_sync
        if replicas == 1:
            return function(*arrays)
        shards = [np.array_split(np.asarray(a), replicas) for a in arrays]
        sizes = [len(s) for s in shards[0]]
        values = [
            self.strategy.experimental_distribute_values_from_function(
                lambda context, _s=s: _s[context.replica_id_in_sync_group]
            )
            for s in shards
        ]
        results = self.strategy.run(function, args=tuple(values))
        weights = np.asarray(sizes, dtype=np.float64) / sum(sizes)

        def merge(per_replica_value, how):
            local = self.strategy.experimental_local_results(per_replica_value)
            if len(local) == replicas:
                parts = [np.asarray(v) for v in local]
            else:
                # Replicas on other workers: `gather` collects every value,
                # in replica order (slower, so only then).
                if how == "concat":
                    return np.asarray(
                        self.strategy.gather(per_replica_value, axis=0)
                    )
                stacked = self.strategy.gather(
                    self._stack_replicas(per_replica_value), axis=0
                )
                parts = list(np.asarray(stacked))
            if how == "concat":
                return np.concatenate(parts)
            return sum(w * v for w, v in zip(weights, parts))

        if isinstance(combine, str):
            return tf.nest.map_structure(lambda v: merge(v, combine), results)
        return tuple(
            tf.nest.map_structure(lambda v, _how=how: merge(v, _how), result)
            for result, how in zip(results, combine)
        )


def _jit_settings(jit_compile):
    """`jit_compile` as a dict with one bool per compiled piece."""
    if isinstance(jit_compile, bool):
        return {piece: jit_compile for piece in PIECES}
    if not isinstance(jit_compile, dict) or set(jit_compile) - set(PIECES):
        raise ValueError(
            f"`jit_compile` should be a bool or a dict with keys in "
            f"{PIECES}. Received: jit_compile={jit_compile!r}"
        )
    return {piece: bool(jit_compile.get(piece, False)) for piece in PIECES}


def _segment_ids(channels, groups):
    """Flat channel position of each channel of a `ChannelMap` (groups one
    after another); channels outside every group go to the last, extra
    position."""
    offsets = np.cumsum([0] + [g.size for g in groups])
    ids = np.full(len(channels), offsets[-1], dtype=np.int32)
    inside = channels.group >= 0
    ids[inside] = offsets[channels.group[inside]] + channels.index[inside]
    return tf.constant(ids)


def _unique_layers(graph):
    """The prunable masked layers, each once, in graph order."""
    seen, records = set(), []
    for record in graph.maskable_layers():
        if is_prunable(record.layer) and id(record.layer) not in seen:
            seen.add(id(record.layer))
            records.append(record)
    return records


def _loss_scale(model):
    """A static loss scale for float16 gradients (1 otherwise): mask
    gradients are batch means and would underflow in half precision."""
    dtypes = {
        getattr(layer, "compute_dtype", None) for layer in _all_layers(model)
    }
    return 2.0**12 if "float16" in dtypes else 1.0


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _specs(tensors):
    """TensorSpecs of symbolic tensors with the batch size left open."""
    return [
        tf.TensorSpec((None,) + tuple(t.shape[1:]), t.dtype) for t in tensors
    ]


def _as_logits(outputs, from_probabilities):
    outputs = keras.tree.flatten(outputs)[0]
    if outputs.dtype != tf.float32:  # Mixed precision computes in 16 bits.
        outputs = tf.cast(outputs, tf.float32)
    if from_probabilities:
        return tf.math.log(tf.maximum(outputs, 1e-12))
    return outputs


def _maskable_records_by_group(graph):
    by_group = {}
    for record in graph.maskable_layers():
        if not is_prunable(record.layer):
            continue
        groups = np.unique(record.outputs[0].group)
        for group_id in groups[groups >= 0]:
            by_group.setdefault(int(group_id), []).append(record)
    return by_group


def _kernel_records(graph):
    """Per group, the kernels that read or write it, with their values."""
    by_group = {}
    for record in graph.layers.values():
        name = next(
            (n for cls, n in _KERNELS.items() if isinstance(record.layer, cls)),
            None,
        )
        if name is None or not record.inputs:
            continue
        original = np.array(getattr(record.layer, name).numpy())
        groups = set(np.unique(record.inputs[0].group)) | set(
            np.unique(record.outputs[0].group)
        )
        for group_id in groups:
            if group_id >= 0:
                by_group.setdefault(int(group_id), []).append(
                    (record, name, original)
                )
    return by_group


def _kept_entries(layer, kernel, inputs, outputs):
    """The kernel entries between kept input and output channels."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return kernel[:, :, inputs]
    if isinstance(layer, keras.layers.SeparableConv2D):
        rows = np.repeat(inputs, layer.depth_multiplier)
        return kernel[:, :, rows][..., outputs]
    if kernel.ndim == 2:
        return kernel[inputs][:, outputs]
    return kernel[:, :, inputs][..., outputs]


def _layer_ids(operation):
    ids = {id(operation)}
    if isinstance(operation, keras.Model):
        for layer in operation.layers:
            ids |= _layer_ids(layer)
    return ids


def _frontier(nodes, inside, starts):
    """Tensors entering the nodes downstream of (and including) `starts`."""
    affected_tensors, frontier = set(), {}
    for node in nodes:
        hit = inside[id(node)] & starts or any(
            id(t) in affected_tensors for t in node.input_tensors
        )
        if not hit:
            continue
        for tensor in node.outputs:
            affected_tensors.add(id(tensor))
        for tensor in node.input_tensors:
            if id(tensor) not in affected_tensors:
                frontier.setdefault(id(tensor), tensor)
    return list(frontier.values())


def _add_leading_axis(value):
    return tf.expand_dims(value, 0)
