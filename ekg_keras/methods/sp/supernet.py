"""The stage-wise super-net and its train step (SP, Alg. 1)."""

import copy

import keras
import numpy as np
from keras import ops

from ekg_keras._api import ekg_export
from ekg_keras._backend import tf
from ekg_keras.batchnorm import batchnorm_settings
from ekg_keras.methods.setup import PruningSetup
from ekg_keras.methods.sp import widths as widths_lib
from ekg_keras.methods.sp.masking import ChannelPositions
from ekg_keras.methods.sp.masking import run_masked
from ekg_keras.methods.sp.stages import find_stages
from ekg_keras.scope import PruningScope
from ekg_keras.taylor import ends_in_softmax


@ekg_export
class StageSuperNet(keras.Model):
    """A network trained as a stage-wise super-net (SP, Sec. 3.2, Alg. 1).

    Every prunable channel group may keep a prefix of its channels (ranked
    by `criterion`) of any count from its table (`num_ratios` ratios from
    `smallest_ratio` to 1.0, snapped to what `min_channels` and `round_to`
    allow). The network is split into stages where its resolution changes
    (`find_stages`), and each stage but the last gets an adapter: a 1x1
    convolution without batch normalization or activation, initialised to
    the identity, from the stage's output to the full width.

    One training step (the sandwich rule with stage-wise in-place
    distillation) on a batch:

    1. The full network: cross-entropy on the labels; its stage inputs
       `X_i` and outputs `Y_i` are kept.
    2. One random width per group (the same for every replica, drawn from
       `seed` and the step counter) and the smallest widths: for each, every
       stage runs at those widths on the full network's (stop-gradient)
       input `X_i`, its adapter maps the output to full width, and the loss
       is the mean squared error to the (stop-gradient) `Y_i`; the last
       stage, ending at the model output, has no adapter and is distilled
       by KL divergence of the predictions (see `stage_error`).
    3. One optimizer step on the sum of the three losses.

    Sub-network passes leave the batch-normalization moving statistics as
    the full network left them. Samples whose id is in `validation_ids` are
    held out: they weigh nothing in the losses and metrics (they still pass
    through batch normalization with the rest of the batch). Batches carry
    ids as `({"image": x, "id": id}, y)`; plain `(x, y)` batches train on
    everything.

    All state is in weights (the network, adapters, channel ranks, held-out
    ids, the step counter), so checkpoints, `.keras` files and
    `BackupAndRestore` resume a run with the same sampled widths.

    Args:
        network: A hard-masked model (`ekg_keras.wrap`), one input and one
            output; trained in place.
        criterion: Orders each group's channels (`ekg_keras.criteria`
            name or callable that needs no data); ignored when `ranks` is
            given.
        ranks: Optional channel ranks per group (0 = most important).
        num_ratios: Number of width ratios (31).
        smallest_ratio: The smallest ratio (0.1).
        scope: The `ekg_keras.PruningScope` whose floors, `round_to` and
            ignored layers shape the widths (its budget is not used: the
            super-net trains every width); default: the default scope.
        validation_ids: Sample ids held out for the search.
        seed: Seed of the random widths.
        **kwargs: `PruningScope` fields (`round_to=8`, ...) and
            `keras.Model` arguments (e.g. `name`).

    Reference:
        Zhang and Ou, "Stage-wise Channel Pruning for Model Compression".
    """

    # The network it trains (see `ekg_keras.training.inner_model`).
    inner_model_attribute = "network"

    def __init__(
        self,
        network,
        *,
        criterion="l1",
        ranks=None,
        num_ratios=widths_lib.NUM_RATIOS,
        smallest_ratio=widths_lib.SMALLEST_RATIO,
        scope=None,
        validation_ids=(),
        seed=0,
        **kwargs,
    ):
        scope_values, kwargs = PruningScope.split(kwargs)
        super().__init__(**kwargs)
        self.network = network
        self.criterion = criterion
        self.num_ratios = int(num_ratios)
        self.smallest_ratio = float(smallest_ratio)
        self.scope = PruningScope.of(scope, **scope_values).without_budget()
        self.seed = int(seed)
        self.setup = PruningSetup(network, self.scope, masked=network)
        graph = self.setup.graph
        self.stages = find_stages(network, graph)
        self.count_tables = widths_lib.count_tables(
            self.setup.levels,
            widths_lib.width_ratios(num_ratios, smallest_ratio),
        )
        if ranks is None:
            ranks = widths_lib.channel_ranks(self.setup, criterion)
        self._check_ranks(ranks)
        sizes = graph.sizes
        self.channel_ranks = self._constant_weight(
            "channel_ranks", np.concatenate(ranks), "int32"
        )
        ids = np.unique(np.asarray(validation_ids, dtype=np.int64))
        self.validation_ids = self._constant_weight(
            "validation_ids", ids, "int64"
        )
        self.sampled_steps = self.add_weight(
            name="sampled_steps",
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )
        self.adapters = [
            None if stage.last else _identity_adapter(stage)
            for stage in self.stages
        ]
        self._positions = [
            ChannelPositions(graph, stage.layer_ids, sizes)
            for stage in self.stages
        ]
        # One row per group, padded; a draw indexes the first len(table).
        table = np.stack(
            [np.resize(t, self.num_ratios) for t in self.count_tables]
        )
        self._table = tf.constant(table.astype(np.int32))
        self._table_sizes = tf.constant(
            [len(t) for t in self.count_tables], tf.int32
        )
        self._boundaries = keras.Model(
            network.inputs,
            [s.output for s in self.stages[:-1]] + [network.outputs[0]],
        )
        self._from_probabilities = ends_in_softmax(network)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.task_tracker = keras.metrics.Mean(name="task_loss")
        self.random_tracker = keras.metrics.Mean(name="random_distillation")
        self.smallest_tracker = keras.metrics.Mean(name="smallest_distillation")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(
            name="accuracy"
        )
        # The network and adapters exist already, so checkpoint callbacks
        # (BackupAndRestore) need no first batch.
        self.built = True

    # Widths.

    @property
    def graph(self):
        """The network's `ChannelGraph`."""
        return self.setup.graph

    def ranks(self):
        """Channel ranks per group (0 = most important), as NumPy."""
        flat = self.channel_ranks.numpy()
        ends = np.cumsum(self.graph.sizes)[:-1]
        return [r.astype(np.int64) for r in np.split(flat, ends)]

    def smallest_counts(self):
        """The smallest allowed count of every group (the small-net)."""
        return np.array([t[0] for t in self.count_tables], dtype=np.int64)

    def full_counts(self):
        """Every group at full width (the full network)."""
        return self.graph.sizes.astype(np.int64)

    def sample_counts(self, step):
        """The random widths of training step `step` (a tensor): one count
        per group, uniform over its table; the same on every replica."""
        seed = tf.stack(
            [tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)]
        )
        uniform = tf.random.stateless_uniform(
            tf.shape(self._table_sizes), seed=seed
        )
        sizes = self._table_sizes
        index = tf.minimum(
            tf.cast(uniform * tf.cast(sizes, tf.float32), tf.int32), sizes - 1
        )
        return tf.gather(self._table, index, batch_dims=1)

    def keep_masks(self, counts):
        """Boolean keep masks per group for keep counts (prefixes)."""
        return widths_lib.prefix_keep(self.ranks(), counts)

    # Model interface.

    def call(self, inputs, training=None):
        images = inputs["image"] if isinstance(inputs, dict) else inputs
        return self.network(images, training=training)

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            self.task_tracker,
            self.random_tracker,
            self.smallest_tracker,
            self.accuracy_tracker,
        ]

    def stage_output(self, index, inputs, counts, training=True):
        """Stage `index` at widths `counts` on `inputs`, through its adapter.

        Args:
            index: The stage.
            inputs: The stage's input (the full network's, in training).
            counts: Keep count per group (a tensor or array).
            training: Run batch normalization in training mode.

        Returns:
            The adapted stage output, shaped like the full network's.
        """
        masks = self._positions[index].masks(
            self.channel_ranks, tf.convert_to_tensor(counts, tf.int32)
        )
        stage = self.stages[index]
        outputs = run_masked(stage.functional, inputs, masks, training)
        adapter = self.adapters[index]
        return outputs if adapter is None else adapter(outputs)

    def stage_features(self, images, batch_size=256):
        """The full network's stage inputs and outputs on `images`.

        Batch normalization uses each batch's statistics (as sub-networks
        are scored in the search) and keeps its moving statistics.

        Returns:
            `(inputs, outputs)`: one array per stage each; stage `i`'s
            output is stage `i + 1`'s input.
        """
        forward = tf.function(
            lambda x: keras.tree.flatten(self._boundaries(x, training=True)),
            autograph=False,
        )
        parts = []
        with batchnorm_settings(self.network, momentum=1.0):
            for start in range(0, len(images), batch_size):
                batch = tf.constant(images[start : start + batch_size])
                parts.append([np.asarray(o) for o in forward(batch)])
        outputs = [np.concatenate(p) for p in zip(*parts)]
        return [np.asarray(images), *outputs[:-1]], outputs

    def stage_error(self, index, output, target):
        """Per-sample distillation loss of stage `index` (see
        `stage_error`)."""
        return stage_error(
            output, target, self.stages[index].last, self._from_probabilities
        )

    def compute_losses(self, images, labels, weights, counts_list):
        """The step's losses: the full network's task loss and, per width
        configuration in `counts_list`, the summed stage distillation.

        Per-sample losses are weighted by `weights` and divided by the
        weights' sum over all replicas, so summing the replicas' gradients
        gives the gradient of the global weighted mean.

        Returns:
            `(task_loss, [distillation per configuration], logits,
            local_weight)`.
        """
        total = _sum_over_replicas(tf.reduce_sum(weights))
        normalizer = tf.maximum(total, 1.0)
        *boundaries, logits = keras.tree.flatten(
            self._boundaries(images, training=True)
        )
        task = keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=not self._from_probabilities
        )
        task_loss = tf.reduce_sum(weights * task) / normalizer
        inputs = [images, *boundaries]
        targets = [*boundaries, logits]
        distillations = []
        # Traced with momentum 1: the sub-networks keep the full network's
        # moving statistics.
        with batchnorm_settings(self.network, momentum=1.0):
            for counts in counts_list:
                loss = 0.0
                for index in range(len(self.stages)):
                    output = self.stage_output(
                        index, tf.stop_gradient(inputs[index]), counts
                    )
                    error = self.stage_error(
                        index, output, tf.stop_gradient(targets[index])
                    )
                    loss += tf.reduce_sum(weights * error) / normalizer
                distillations.append(loss)
        return task_loss, distillations, logits, tf.reduce_sum(weights)

    def train_step(self, data):
        features, labels = data[0], data[1]
        images, weights = self._images_and_weights(features)
        counts = [
            self.sample_counts(self.sampled_steps),
            self.smallest_counts(),
        ]
        with tf.GradientTape() as tape:
            task, (random, smallest), logits, local = self.compute_losses(
                images, labels, weights, counts
            )
            loss = task + random + smallest
            scaled = loss
            if self.network.losses:
                replicas = tf.distribute.get_strategy().num_replicas_in_sync
                scaled += tf.add_n(self.network.losses) / replicas
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        self.sampled_steps.assign_add(1)
        return self._update_metrics(
            (loss, task, random, smallest), local, labels, logits, weights
        )

    def test_step(self, data):
        features, labels = data[0], data[1]
        images, weights = self._images_and_weights(features)
        logits = self.network(images, training=False)
        task = keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=not self._from_probabilities
        )
        local = tf.reduce_sum(weights)
        mean = tf.reduce_sum(weights * task) / tf.maximum(local, 1.0)
        self.task_tracker.update_state(mean, sample_weight=local)
        self.accuracy_tracker.update_state(
            labels, logits, sample_weight=weights
        )
        return {
            m.name: m.result()
            for m in (self.task_tracker, self.accuracy_tracker)
        }

    # Serialization.

    def get_config(self):
        return {
            "name": self.name,
            "network": keras.saving.serialize_keras_object(self.network),
            "criterion": self.criterion,
            "num_ratios": self.num_ratios,
            "smallest_ratio": self.smallest_ratio,
            "scope": self.scope.get_config(),
            "validation_ids": [int(i) for i in self.validation_ids.numpy()],
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = copy.deepcopy(config)  # Deserialising consumes the dicts.
        config["network"] = keras.saving.deserialize_keras_object(
            config["network"]
        )
        # The ranks are weights: placeholders here, loaded with the rest.
        config["scope"] = PruningScope.from_config(config["scope"])
        graph_sizes = PruningSetup(
            config["network"], config["scope"], masked=config["network"]
        ).graph.sizes
        config["ranks"] = [np.arange(n) for n in graph_sizes]
        return cls(**config)

    # Internals.

    def _check_ranks(self, ranks):
        sizes = self.graph.sizes
        if len(ranks) != len(sizes) or any(
            sorted(np.asarray(r).tolist()) != list(range(n))
            for r, n in zip(ranks, sizes)
        ):
            raise ValueError(
                "`ranks` should hold, per channel group, a permutation of "
                f"0..size-1 (sizes {sizes.tolist()}). Received: "
                f"{[len(r) for r in ranks]} ranks."
            )

    def _constant_weight(self, name, values, dtype):
        return self.add_weight(
            name=name,
            shape=values.shape,
            dtype=dtype,
            initializer=keras.initializers.Constant(values),
            trainable=False,
            aggregation="only_first_replica",
        )

    def _images_and_weights(self, features):
        if not isinstance(features, dict):
            images = features
            return images, tf.ones(tf.shape(images)[:1], tf.float32)
        images = features["image"]
        held_out = _contains(self.validation_ids, features["id"])
        return images, 1.0 - tf.cast(held_out, tf.float32)

    def _update_metrics(self, losses, local, labels, logits, weights):
        # Each replica's loss values are its share of the global means;
        # the trackers get the local weighted means with the local weight.
        total = _sum_over_replicas(local)
        share = tf.maximum(local, 1e-12) / tf.maximum(total, 1.0)
        for tracker, value in zip(
            (
                self.loss_tracker,
                self.task_tracker,
                self.random_tracker,
                self.smallest_tracker,
            ),
            losses,
        ):
            tracker.update_state(value / share, sample_weight=local)
        self.accuracy_tracker.update_state(
            labels, logits, sample_weight=weights
        )
        return {m.name: m.result() for m in self.metrics}


def _identity_adapter(stage):
    """A 1x1 convolution to the stage's full width, set to the identity."""
    channels = int(stage.output.shape[-1])
    adapter = keras.layers.Conv2D(channels, 1, name=f"sp_adapter_{stage.index}")
    adapter.build(stage.output.shape)
    adapter.kernel.assign(np.eye(channels, dtype="float32")[None, None])
    return adapter


def stage_error(output, target, last, from_probabilities=False):
    """Per-sample distillation loss of a stage's output against the full
    network's (works on symbolic and eager tensors).

    Inner stages: the mean squared error over every non-batch axis (the SP
    paper's Eq. 7, `1/K ||Y - Y_full||^2`, averaged over positions too).
    The last stage, which ends at the model's output: the KL divergence
    from the full network's predictions (softmax of the logits, or the
    probabilities of a softmax model) to the sub-network's, the in-place
    distillation of slimmable networks. Mean squared error on logits
    overwhelms the task loss (on ResNet-20 it wrecked the full network in
    two epochs, even at a tenth of the learning rate).

    Args:
        output: The sub-network's stage output (adapted).
        target: The full network's stage output.
        last: Whether the stage ends at the model output.
        from_probabilities: Whether the model outputs probabilities.

    Returns:
        A tensor of shape (batch,).
    """
    output = ops.cast(output, "float32")
    target = ops.cast(target, "float32")
    if not last:
        axes = tuple(range(1, len(output.shape)))
        return ops.mean(ops.square(output - target), axis=axes)
    if from_probabilities:
        log_output = ops.log(ops.maximum(output, 1e-12))
        log_target = ops.log(ops.maximum(target, 1e-12))
    else:
        log_output = ops.log_softmax(output, axis=-1)
        log_target = ops.log_softmax(target, axis=-1)
    return ops.sum(ops.exp(log_target) * (log_target - log_output), axis=-1)


def _contains(sorted_values, values):
    """Whether each of `values` is in the sorted 1-D `sorted_values`."""
    sorted_values = tf.convert_to_tensor(sorted_values)
    values = tf.cast(tf.reshape(values, [-1]), sorted_values.dtype)
    if sorted_values.shape[0] == 0:
        return tf.zeros_like(values, tf.bool)
    position = tf.searchsorted(sorted_values, values)
    position = tf.minimum(position, tf.shape(sorted_values)[0] - 1)
    return tf.equal(tf.gather(sorted_values, position), values)


def _sum_over_replicas(value):
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)
