"""NPPM's Algorithm 1 as a Keras model: one compiled train step per batch."""

import copy
import dataclasses

import keras
import numpy as np

from ekg_keras._api import ekg_export
from ekg_keras._backend import tf
from ekg_keras.layers import is_prunable
from ekg_keras.layers import prunable_layers
from ekg_keras.methods.nppm.gates import ChannelGates
from ekg_keras.methods.nppm.gradients import confidence
from ekg_keras.methods.nppm.gradients import modified_gradient
from ekg_keras.methods.nppm.memory import EpisodicMemory
from ekg_keras.methods.nppm.options import NPPMOptions
from ekg_keras.methods.nppm.predictor import PerformancePredictor
from ekg_keras.methods.nppm.regularizer import FlopsRegularizer
from ekg_keras.methods.nppm.replicas import apply_if
from ekg_keras.methods.nppm.replicas import replicated_state
from ekg_keras.methods.options import make_options
from ekg_keras.methods.setup import PruningSetup
from ekg_keras.scope import PruningScope
from ekg_keras.taylor import ends_in_softmax

#: The metrics a step reports (progress bar, epoch logs, TensorBoard).
METRICS = (
    "loss",
    "accuracy",
    "flops_fraction",
    "predictor_loss",
    "gamma",
    "memory_size",
)


@ekg_export
class PerformanceMaximization(keras.Model):
    """NPPM's search (Gao et al., CVPR 2021) as a `keras.Model`.

    Every `train_step` runs one iteration of Algorithm 1 on a batch:

    1. sample a structure from the `ChannelGates` (hard 0/1 gates with
       straight-through gradients) and run the frozen network with it; the
       batch's accuracy is the sample's quality q;
    2. add `(a, q)` to the `EpisodicMemory` (a window of c steps makes one
       sample; replacement by closest accuracy once full);
    3. once the memory holds more than `predictor_batch_size` samples,
       train the `PerformancePredictor` on a re-sampled memory batch (MAE,
       its own Adam);
    4. update the gates with `g_L + orth(gamma * g_P, g_L) + lambda * g_R`
       (the task loss, the predictor's `log(1 / PN(a))` made orthogonal to
       it, and the FLOPs regulariser `log(max(T(a), p) / p)`), where gamma
       = 1[K >= K_max / 4] (1 - L_P)^2.

    The network's weights never change (its prunable layers read the
    sampled gates in place of their masks, in a `keras.StatelessScope`);
    only the gates (with `compile`'s optimizer) and the predictor train.
    Gates, predictor, memory, both optimizers' state, the step count and
    the trajectory's snapshots (`add_snapshot`) are weights of this model,
    so `BackupAndRestore`, the trainers' backups and `.keras` files resume
    the search exactly. Noise comes from a stateless generator
    seeded by `seed` and the step, so every replica of a `tf.distribute`
    strategy samples the same structure; the task gradient and the batch
    accuracy are summed over replicas before the (non-linear) gradient
    modification, so the result does not depend on how a global batch is
    split. XLA compiles the step on one replica only (see `compile`).

    Args:
        model: The model to search (functional or Sequential). A model
            already wrapped into hard-mode prunable layers is used as it
            is; any other is cloned and wrapped.
        scope: The `ekg_keras.PruningScope` (its budget is p, the
            fraction of FLOPs, or of latency, to keep), or p as a FLOPs
            fraction in (0, 1]. Scope fields may be given as keywords
            instead (`flops=0.5`, `ignored_layers=[...]`).
        options: An `NPPMOptions`; its fields may also be given as keyword
            arguments, which override it. The model reads the gate, memory,
            predictor and gradient knobs (`tau`, `initial_logit`,
            `flops_weight`, `memory_size`, `window`, `predictor_batch_size`,
            `bins`, `encoder_units`, `recurrent_units`,
            `predictor_learning_rate`, `orthogonal`, `batch_statistics`,
            `trajectory_points`, `seed`); the gates' optimizer is
            `compile`'s, and the data, epochs and batch size are `fit`'s.
        cost: The pruning method's cost to share (its latency model under
            a latency budget); default: the scope's own.
        name: The Keras model's name.
        **option_values: `NPPMOptions` fields and `PruningScope` fields.

    Example:

    ```python
    search = PerformanceMaximization(model, flops=0.5, memory_size=500)
    search.compile(optimizer=keras.optimizers.Adam(1e-3))
    search.fit(subset, epochs=200)
    search.noise_free_keep()          # kept channels per group
    ```
    """

    # The network it trains (see `ekg_keras.training.inner_model`).
    inner_model_attribute = "network"

    def __init__(
        self,
        model,
        scope=None,
        *,
        options=None,
        cost=None,
        name=None,
        **option_values,
    ):
        super().__init__(name=name)
        scope_values, option_values = PruningScope.split(option_values)
        scope = PruningScope.of(scope, **scope_values)
        self.options = make_options(
            NPPMOptions,
            options,
            option_values,
            method="PerformanceMaximization",
        )
        options = self.options
        self.setup = PruningSetup(
            model,
            scope,
            masked=model if _all_hard(model) else None,
            cost=cost,
        )
        self.scope = self.setup.scope
        self.network = self.setup.model
        self.graph = self.setup.graph
        self.gated_groups = [g.id for g in self.graph.prunable_groups]
        sizes = [self.graph.groups[g].size for g in self.gated_groups]
        self.gates = ChannelGates(
            sizes,
            tau=options.tau,
            initial_logit=options.initial_logit,
            name="gates",
        )
        self.predictor = PerformancePredictor(
            sizes,
            encoder_units=options.encoder_units,
            recurrent_units=options.recurrent_units,
            name="predictor",
        )
        self.predictor.build((None, self.gates.length))
        self.memory = EpisodicMemory(
            self.gates.length,
            capacity=options.memory_size,
            window=options.window,
            bins=options.bins,
            name="memory",
        )
        self.regularizer = FlopsRegularizer(
            self.setup.counter.terms("macs"),
            self.setup.full_macs,
            self.setup.target,
            self.graph.sizes,
            self.gated_groups,
        )
        self._masks = _mask_layout(self.network, self.graph, self.gated_groups)
        self._from_probabilities = ends_in_softmax(self.network)
        self.steps = replicated_state(self, "steps", (), "int64")
        self.last_predictor_loss = replicated_state(
            self, "last_predictor_loss", (), initializer="ones"
        )
        points = options.trajectory_points
        self.snapshot_structures = replicated_state(
            self, "snapshot_structures", (points + 1, self.gates.length)
        )
        self.snapshot_losses = replicated_state(
            self, "snapshot_losses", (points + 1,)
        )
        self.snapshot_count = replicated_state(
            self, "snapshot_count", (), "int32"
        )
        self.trackers = [keras.metrics.Mean(name=name) for name in METRICS]
        self.predictor_optimizer = None
        self.built = True

    @property
    def target(self):
        """p, the fraction of FLOPs (or of latency) to keep."""
        return self.setup.target

    # Model interface.

    def compile(self, optimizer="adam", jit_compile=False, **kwargs):
        """Compiles with `optimizer` for the gates (Adam 1e-3 in the
        paper) and builds the predictor's own Adam.

        Both optimizers are built for their variables only (the frozen
        network gets no optimizer slots). XLA (`jit_compile=True`) works
        on one replica; over several the step's cross-replica state
        updates do not compile, so it is refused (and off by default).
        """
        replicas = self.distribute_strategy.num_replicas_in_sync
        if jit_compile is True and replicas > 1:
            raise ValueError(
                "The NPPM search step cannot be compiled with XLA over "
                f"{replicas} replicas (its memory and predictor updates are "
                "cross-replica); use jit_compile=False. Received: "
                "jit_compile=True"
            )
        super().compile(
            optimizer=optimizer, jit_compile=jit_compile is True, **kwargs
        )
        self.predictor_optimizer = keras.optimizers.Adam(
            self.options.predictor_learning_rate, name="predictor_optimizer"
        )
        self.optimizer.build(self.gates.trainable_variables)
        self.predictor_optimizer.build(self.predictor.trainable_variables)

    def compile_from_config(self, config):
        """Compiles a loaded search as it was compiled (`.keras` files)."""
        self.compile(**keras.saving.deserialize_keras_object(config))

    @property
    def metrics(self):
        return list(self.trackers)

    def call(self, inputs, training=None):
        """The network with the masks it holds (not the gates)."""
        return self.network(inputs, training=training)

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync
        seeds = tf.random.experimental.stateless_split(
            tf.stack(
                [
                    tf.constant(self.options.seed, tf.int64),
                    tf.convert_to_tensor(self.steps),
                ]
            ),
            2,
        )
        gate_variables = self.gates.trainable_variables
        with tf.GradientTape(persistent=True) as tape:
            structure = self.gates.sample(seeds[0])
            logits = self.gated_logits(x, structure)
            labels = tf.cast(tf.reshape(y, [-1]), tf.int32)
            losses = keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True
            )
            hits = tf.cast(
                tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels),
                tf.float32,
            )
            local = tf.stack(
                [
                    tf.reduce_sum(losses),
                    tf.reduce_sum(hits),
                    tf.cast(tf.size(labels), tf.float32),
                ]
            )
            total = context.all_reduce(
                tf.distribute.ReduceOp.SUM, tf.stop_gradient(local)
            )
            # Summed over replicas, this is the global batch's mean loss.
            task_loss = tf.reduce_sum(losses) / total[2]
            fraction = self.regularizer.fraction(structure)
            penalty = self.options.flops_weight * self.regularizer(structure)
            with tape.stop_recording():
                accuracy = total[1] / total[2]
                self.memory.record(structure, accuracy)
                predictor_loss = self._train_predictor(seeds[1], replicas)
                gamma = confidence(
                    self.memory.size, self.memory.capacity, predictor_loss
                )
            predicted = self.predictor(structure[None])[0]
            performance = -tf.math.log(tf.maximum(predicted, 1e-7))
        task = context.all_reduce(
            tf.distribute.ReduceOp.SUM,
            tape.gradient(task_loss, gate_variables),
        )
        performance = tape.gradient(performance, gate_variables)
        penalty = tape.gradient(penalty, gate_variables)
        del tape
        gradients = [
            modified_gradient(t, gamma * p, r, self.options.orthogonal)
            for t, p, r in zip(task, performance, penalty)
        ]
        # Every replica holds the same gradients; the optimizer sums them.
        self.optimizer.apply([g / replicas for g in gradients], gate_variables)
        self.steps.assign_add(1)
        values = {
            "loss": total[0] / total[2],
            "accuracy": accuracy,
            "flops_fraction": fraction,
            "predictor_loss": predictor_loss,
            "gamma": gamma,
            "memory_size": tf.cast(self.memory.size, tf.float32),
        }
        for tracker in self.trackers:
            tracker.update_state(values[tracker.name])
        return {tracker.name: tracker.result() for tracker in self.trackers}

    # The pieces of a step.

    def gated_logits(self, x, structure):
        """The network's logits with the structure in place of its masks."""
        mapping = [
            (variable, _layer_mask(structure, index))
            for variable, index in self._masks
        ]
        with keras.StatelessScope(state_mapping=mapping):
            outputs = self.network(x, training=self.options.batch_statistics)
        outputs = keras.tree.flatten(outputs)[0]
        outputs = tf.cast(outputs, tf.float32)
        if self._from_probabilities:
            outputs = tf.math.log(tf.maximum(outputs, 1e-12))
        return outputs

    def _train_predictor(self, seed, replicas):
        """Step 4 of Algorithm 1; returns the current predictor loss."""
        structures, accuracies = self.memory.sample(
            self.options.predictor_batch_size, seed
        )
        variables = self.predictor.trainable_variables
        with tf.GradientTape() as tape:
            predicted = self.predictor(structures)
            loss = tf.reduce_mean(tf.abs(accuracies - predicted))
        gradients = tape.gradient(loss, variables)
        trains = self.memory.size > self.options.predictor_batch_size
        apply_if(
            trains,
            self.predictor_optimizer,
            [g / replicas for g in gradients],
            variables,
        )
        current = tf.where(trains, loss, self.last_predictor_loss)
        self.last_predictor_loss.assign(current)
        return current

    # Results.

    def gate_logits(self):
        """Logits per group of the graph (None for groups without gates)."""
        values = dict(zip(self.gated_groups, self.gates.logit_values()))
        return [values.get(group.id) for group in self.graph.groups]

    def noise_free_keep(self):
        """Keep masks per group of the noise-free gates (`w > 0`)."""
        return [
            np.ones(group.size, bool) if values is None else values > 0
            for group, values in zip(self.graph.groups, self.gate_logits())
        ]

    def structure_of(self, keep):
        """The flat structure vector of per-group keep masks."""
        return np.concatenate(
            [np.asarray(keep[g], np.float32) for g in self.gated_groups]
        )

    def keep_of(self, structure):
        """Per-group keep masks of a flat structure vector."""
        structure = np.asarray(structure) > 0.5
        keep = [np.ones(group.size, bool) for group in self.graph.groups]
        start = 0
        for group in self.gated_groups:
            size = self.graph.groups[group].size
            keep[group] = structure[start : start + size]
            start += size
        return keep

    def add_snapshot(self, keep, loss):
        """Stores a sub-network (per-group keep masks) and its loss, from
        outside the train step (a callback); once full, the last slot is
        overwritten."""
        slot = min(
            int(self.snapshot_count.numpy()), self.options.trajectory_points
        )
        structures = self.snapshot_structures.numpy()
        structures[slot] = self.structure_of(keep)
        losses = self.snapshot_losses.numpy()
        losses[slot] = loss
        self.snapshot_structures.assign(structures)
        self.snapshot_losses.assign(losses)
        self.snapshot_count.assign(slot + 1)

    def snapshots(self):
        """The stored sub-networks: `(keep masks per snapshot, losses)`."""
        count = int(self.snapshot_count.numpy())
        structures = self.snapshot_structures.numpy()[:count]
        losses = self.snapshot_losses.numpy()[:count]
        return [self.keep_of(s) for s in structures], losses.astype(float)

    # Serialization.

    def get_config(self):
        return {
            "model": keras.saving.serialize_keras_object(self.network),
            "scope": self.scope.get_config(),
            **dataclasses.asdict(self.options),
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = copy.deepcopy(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        config["scope"] = PruningScope.from_config(config["scope"])
        return cls(**config)


def _all_hard(model):
    """Whether `model` is wrapped into hard-mode prunable layers already."""
    layers = prunable_layers(model)
    return bool(layers) and all(layer.mode == "hard" for layer in layers)


def _mask_layout(network, graph, gated_groups):
    """`(mask variable, gather index)` for every prunable layer.

    A terminal layer's mask gathers its channels' gates from the structure
    vector; index `length` reads a constant 1, for channels without a gate
    and for every channel of a non-terminal layer (a convolution followed
    by its batch normalization: the gate after the normalization zeroes
    the channel already, so each gate acts once, on the feature map, as in
    the paper).
    """
    offsets, start = {}, 0
    for group in gated_groups:
        offsets[group] = start
        start += graph.groups[group].size
    layout = []
    for record in graph.maskable_layers():
        if not is_prunable(record.layer):
            continue
        channels = record.outputs[0]
        index = np.full(len(channels), start, np.int32)
        if record.terminal:
            for position, (group, within) in enumerate(
                zip(channels.group, channels.index)
            ):
                if group in offsets:
                    index[position] = offsets[group] + within
        layout.append((record.layer.filter_mask, tf.constant(index)))
    return layout


def _layer_mask(structure, index):
    padded = tf.concat([structure, tf.ones([1], structure.dtype)], 0)
    return tf.gather(padded, index)
