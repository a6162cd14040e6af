"""LFPC's differentiable criteria sampler (DCS) as a Keras model."""

import copy
import dataclasses

import keras
import numpy as np

from ekg_keras import ties
from ekg_keras._api import ekg_export
from ekg_keras._backend import tf
from ekg_keras.allocation.levels import width_counts
from ekg_keras.batchnorm import batchnorm_settings
from ekg_keras.layers import is_prunable
from ekg_keras.layers import prunable_layers
from ekg_keras.methods.lfpc.cost import ExpectedFlops
from ekg_keras.methods.lfpc.cost import computation_loss
from ekg_keras.methods.lfpc.criteria import DEFAULT_CRITERIA
from ekg_keras.methods.lfpc.criteria import UNRANKED
from ekg_keras.methods.lfpc.criteria import check_criteria
from ekg_keras.methods.lfpc.criteria import criterion_ranks
from ekg_keras.methods.lfpc.history import SCALARS
from ekg_keras.methods.lfpc.history import SamplerEpoch
from ekg_keras.methods.lfpc.history import group_label
from ekg_keras.methods.lfpc.widths import TAS_WIDTHS
from ekg_keras.methods.lfpc.widths import check_widths
from ekg_keras.methods.setup import PruningSetup
from ekg_keras.numerics import NonFiniteError
from ekg_keras.scope import PruningScope
from ekg_keras.taylor import ends_in_softmax

#: Logit of a padded (non-existent) keep count: probability exactly 0.
_IMPOSSIBLE = -1e9


@ekg_export
class CriteriaSampler(keras.Model):
    """Learns a pruning criterion and a keep count per channel group (DCS).

    Each prunable channel group g has logits `alpha_g` over the candidate
    criteria and logits `beta_g` over its candidate keep counts: the
    fractions `widths` of its channels (TAS's 0.3, 0.4, ..., 1.0 by
    default), each rounded up to a count the group may keep under
    `min_channels` / `round_to` (`widths=None`: every count it may keep).
    A training step samples both with Gumbel-softmax at temperature tau
    (the thesis' Eq. 6.9 for the criteria; TAS-style for the counts,
    [impl]) and runs the network with the "criteria feature map": each
    group's channels multiplied by

    `m_g = sum_s p_s * sum_n w_n * [rank_s(c) < n]`,

    the sampled mixture of every criterion's keep mask over the sampled
    counts. For weight-based criteria this equals the aligned weighted sum
    of the pruned layers' outputs (thesis Eq. 6.11). The mixture is
    written into the mask variables of the group's terminal layers (where
    the channels leave their convolution / batch-normalization chain), so a
    one-hot sample is exactly the hard-masked sub-network. The step
    minimises `L_val = CE + lambda_comp * L_comp` (Eq. 6.14), where
    `L_comp` is `computation_loss` of the expected FLOPs under the count
    probabilities; the gradient reaches the logits through the masks
    (`dL/dmask` chained to `alpha`, `beta`). The network's weights stay
    fixed: only the logits are trainable weights of this model.

    tau decays linearly from `tau_start` to `tau_end` over `epochs *
    steps_per_epoch` steps, counted by the `step` weight; the Gumbel noise
    is stateless, seeded by `seed` and the step, so every replica of a
    `tf.distribute` strategy samples the same structure and a resumed run
    continues the same sequence. The logits, the step and the per-epoch
    history are weights, so checkpoints (`BackupAndRestore`, the trainers'
    backups) and `.keras` files carry them.

    Batch normalization: with `batch_statistics` (default) the network runs
    in training mode, normalising with each batch's statistics (as the
    sub-network will after recalibration); `fit` keeps the moving
    statistics unchanged (momentum 1).

    Args:
        network: A hard-masked model (`ekg_keras.wrap`); its masks are
            overwritten while training.
        scope: The `ekg_keras.PruningScope` (its budget is the fraction of
            FLOPs, or of latency, to keep), or a FLOPs fraction in (0, 1];
            scope fields may be given as keywords instead (`flops=0.5`).
        criteria: Candidate criterion names (`ekg_keras.criteria.names()`,
            weight-based ones).
        widths: Candidate widths as fractions in (0, 1] of each group's
            channels, or None for every allowed keep count.
        epochs: Epochs of the search (for tau's schedule and the history).
        steps_per_epoch: Steps per epoch (for tau's schedule).
        lambda_comp: Weight of the computation loss (2 in the thesis).
        tau_start: Initial Gumbel-softmax temperature (5).
        tau_end: Final temperature (0.1).
        seed: Seed of the Gumbel noise.
        batch_statistics: Normalize with batch statistics (see above).
        cost: The pruning method's cost to share (its latency model under
            a latency budget); default: the scope's own.
        **kwargs: `PruningScope` fields and `keras.Model` arguments (e.g.
            `name`).

    Attributes:
        network: The masked network.
        setup: Its `PruningSetup` (graph, FLOPs counter, levels, target).
        groups: The prunable `ChannelGroup`s, in the order of the logits'
            rows.
        candidates: (groups, most candidates) int array of each group's
            candidate keep counts (padding: `criteria.UNRANKED`).
        criteria_logits, count_logits: The trainable logits.
        ranks: (groups, criteria, widest group) channel ranks per
            criterion (0 = kept first), a weight.
        step: Training steps so far (tau's schedule, the noise's seed).

    Example:

    ```python
    masked = ekg_keras.wrap(model)
    sampler = CriteriaSampler(masked, flops=0.5, epochs=600,
                              steps_per_epoch=len(val_batches))
    sampler.compile(optimizer=keras.optimizers.Adam(1e-3,
                                                    weight_decay=1e-3))
    sampler.fit(val_batches, epochs=600)
    sampler.learned_criteria()      # one name per prunable group
    ```

    Reference:
        He et al., "Learning Filter Pruning Criteria for Deep Convolutional
        Neural Networks Acceleration", CVPR 2020 (thesis ch. 6); Dong and
        Yang, "Network Pruning via Transformable Architecture Search",
        NeurIPS 2019.
    """

    # The network it trains (see `ekg_keras.training.inner_model`).
    inner_model_attribute = "network"

    def __init__(
        self,
        network,
        scope=None,
        criteria=DEFAULT_CRITERIA,
        *,
        widths=TAS_WIDTHS,
        epochs=1,
        steps_per_epoch=1,
        lambda_comp=2.0,
        tau_start=5.0,
        tau_end=0.1,
        seed=0,
        batch_statistics=True,
        cost=None,
        **kwargs,
    ):
        scope_values, kwargs = PruningScope.split(kwargs)
        super().__init__(**kwargs)
        _check_hard_masked(network)
        self.criteria = check_criteria(criteria)
        self.widths = check_widths(widths)
        self.epochs = _positive_int(epochs, "epochs")
        self.steps_per_epoch = _positive_int(steps_per_epoch, "steps_per_epoch")
        self.lambda_comp = _non_negative(lambda_comp, "lambda_comp")
        self.tau_start = _positive(tau_start, "tau_start")
        self.tau_end = _positive(tau_end, "tau_end")
        self.seed = int(seed)
        self.batch_statistics = bool(batch_statistics)
        self.network = network
        self.setup = PruningSetup(
            network,
            PruningScope.of(scope, **scope_values),
            masked=network,
            cost=cost,
        )
        self.target = self.setup.target
        self.groups = [g for g in self.setup.graph.groups if g.prunable]
        self._prepare_structure()
        self._create_weights()
        self.ranks.assign(
            criterion_ranks(
                self.setup.graph, self.groups, self.criteria, self.width
            )
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.criteria_tracker = keras.metrics.Mean(name="criteria_loss")
        self.computation_tracker = keras.metrics.Mean(name="computation_loss")
        self.flops_tracker = keras.metrics.Mean(name="expected_flops")
        self.tau_tracker = keras.metrics.Mean(name="tau")
        self._from_probabilities = ends_in_softmax(network)
        # The network exists and every weight is created: built, so that
        # checkpoint callbacks need no first batch.
        self.built = True

    # Structure.

    def _prepare_structure(self):
        setup = self.setup
        every = width_counts(setup.levels, self.widths, rounding="ceil")
        levels = [every[g.id] for g in self.groups]
        self.width = int(max(g.size for g in self.groups))
        self.num_levels = int(max(len(lv) for lv in levels))
        # Padding: UNRANKED, above every rank, so `searchsorted` never
        # counts it (and its probability is 0).
        padded = np.full((len(levels), self.num_levels), UNRANKED, np.int32)
        for p, values in enumerate(levels):
            padded[p, : len(values)] = values
        self.candidates = padded
        self._valid = padded != UNRANKED
        self._level_values = tf.constant(
            np.where(self._valid, padded, 0), tf.float32
        )
        self._level_table = tf.constant(padded)
        self._valid_levels = tf.constant(self._valid)
        self._sizes = tf.constant(setup.graph.sizes, tf.float32)
        self._group_ids = tf.constant([[g.id] for g in self.groups], tf.int32)
        self.cost = ExpectedFlops(setup.counter.terms("macs"), setup.full_macs)
        position = {g.id: p for p, g in enumerate(self.groups)}
        layers, indices = [], []
        outside = len(self.groups) * self.width  # Index of a constant 1.
        for record in setup.graph.maskable_layers():
            out = record.outputs[0]
            if not (record.terminal and is_prunable(record.layer)):
                continue
            index = np.full(len(out), outside, np.int32)
            for channel, (group, i) in enumerate(zip(out.group, out.index)):
                if int(group) in position:
                    index[channel] = position[int(group)] * self.width + i
            if np.any(index != outside):
                layers.append(record.layer)
                indices.append(tf.constant(index))
        # Not a list attribute: Keras would track the layers a second time.
        self._targets = _MaskTargets(tuple(layers), tuple(indices))

    def _create_weights(self):
        groups, criteria = len(self.groups), len(self.criteria)
        self.criteria_logits = self.add_weight(
            name="criteria_logits",
            shape=(groups, criteria),
            initializer="zeros",
        )
        self.count_logits = self.add_weight(
            name="count_logits",
            shape=(groups, self.num_levels),
            initializer="zeros",
        )
        self.ranks = self.add_weight(
            name="ranks",
            shape=(groups, criteria, self.width),
            dtype="int32",
            initializer="zeros",
            trainable=False,
        )
        self.step = self._counter("step")
        self.completed_epochs = self._counter("completed_epochs")
        self.epoch_probabilities = self._record(
            "epoch_probabilities", (groups, criteria)
        )
        self.epoch_counts = self._record("epoch_counts", (groups,))
        self.epoch_scalars = self._record("epoch_scalars", (len(SCALARS),))

    def _counter(self, name):
        return self.add_weight(
            name=name,
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )

    def _record(self, name, shape):
        return self.add_weight(
            name=name,
            shape=(self.epochs, *shape),
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )

    @property
    def trainable_weights(self):
        # Only the sampler learns; the network's weights stay fixed (and
        # get no optimizer slots).
        return [self.criteria_logits, self.count_logits]

    @property
    def trainable_variables(self):
        return self.trainable_weights

    @property
    def non_trainable_weights(self):
        trainable = {id(w) for w in self.trainable_weights}
        return [w for w in self.weights if id(w) not in trainable]

    # Sampling.

    def temperature(self, step):
        """tau at `step`: linear from `tau_start` to `tau_end`."""
        total = max(self.epochs * self.steps_per_epoch - 1, 1)
        progress = tf.minimum(tf.cast(step, tf.float32) / total, 1.0)
        return self.tau_start + (self.tau_end - self.tau_start) * progress

    def criteria_probabilities(self):
        """softmax(alpha): (prunable groups, criteria), rows sum to one."""
        return tf.nn.softmax(self.criteria_logits)

    def count_probabilities(self):
        """softmax(beta) over each group's allowed keep counts (padded
        columns are 0): (prunable groups, most levels)."""
        return tf.nn.softmax(self._masked_count_logits())

    def expected_counts(self):
        """Expected channels kept per prunable group, (prunable groups,)."""
        return tf.reduce_sum(self.count_probabilities() * self._level_values, 1)

    def expected_keep_counts(self):
        """Expected keep counts of every group (fixed groups whole)."""
        return tf.tensor_scatter_nd_update(
            self._sizes, self._group_ids, self.expected_counts()
        )

    def expected_flops(self):
        """FLOPs fraction at the expected keep counts (differentiable)."""
        return self.cost(self.expected_keep_counts())

    def sample_weights(self, tau, seed):
        """Gumbel-softmax weights of the criteria and of the keep counts.

        Args:
            tau: Temperature.
            seed: Stateless seed, an int tensor of shape (2,).

        Returns:
            `(criteria_weights, count_weights)`, (groups, criteria) and
            (groups, most levels); each row sums to one.
        """
        criteria = len(self.criteria)
        uniform = tf.random.stateless_uniform(
            (len(self.groups), criteria + self.num_levels),
            seed=seed,
            minval=np.finfo(np.float32).tiny,
            maxval=1.0,
        )
        gumbel = -tf.math.log(-tf.math.log(uniform))
        criteria_weights = tf.nn.softmax(
            (tf.nn.log_softmax(self.criteria_logits) + gumbel[:, :criteria])
            / tau
        )
        count_weights = tf.nn.softmax(
            (
                tf.nn.log_softmax(self._masked_count_logits())
                + gumbel[:, criteria:]
            )
            / tau
        )
        return criteria_weights, count_weights

    def group_masks(self, criteria_weights, count_weights):
        """Each group's mask `sum_s p_s sum_n w_n [rank_s < n]`.

        Args:
            criteria_weights: (groups, criteria) weights of the criteria.
            count_weights: (groups, most levels) weights of the counts.

        Returns:
            (groups, widest group) masks; channels beyond a group's size 0.
        """
        groups, criteria = len(self.groups), len(self.criteria)
        # tail[n] = probability that the count is at least level n.
        tail = tf.concat(
            [
                tf.math.cumsum(count_weights, axis=1, reverse=True),
                tf.zeros((groups, 1), count_weights.dtype),
            ],
            axis=1,
        )
        # The first level above each channel's rank: it and all larger
        # levels keep the channel.
        first = tf.searchsorted(
            self._level_table,
            tf.reshape(self.ranks.value, (groups, criteria * self.width)),
            side="right",
        )
        kept = tf.reshape(
            tf.gather(tail, first, batch_dims=1),
            (groups, criteria, self.width),
        )
        return tf.einsum("ps,psn->pn", criteria_weights, kept)

    def layer_masks(self, group_masks):
        """The masks of the written (terminal) layers from group masks."""
        flat = tf.concat(
            [tf.reshape(group_masks, [-1]), tf.ones((1,), group_masks.dtype)], 0
        )
        return [tf.gather(flat, index) for index in self._targets.indices]

    def write_masks(self, group_masks):
        """Writes group masks into the terminal layers' mask variables."""
        self._assign(self.layer_masks(group_masks))

    def _assign(self, layer_masks):
        for layer, mask in zip(self._targets.layers, layer_masks):
            layer.filter_mask.assign(mask)

    def _masked_count_logits(self):
        return tf.where(self._valid_levels, self.count_logits, _IMPOSSIBLE)

    def _seed(self, step):
        return tf.stack([tf.constant(self.seed, tf.int64), step])

    # Training.

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            self.criteria_tracker,
            self.computation_tracker,
            self.flops_tracker,
            self.tau_tracker,
        ]

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    def train_step(self, data):
        images, labels = _unpack(data)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        step = self.step.value
        tau = self.temperature(step)
        variables = self.trainable_weights
        with tf.GradientTape() as tape:
            group_masks = self.group_masks(
                *self.sample_weights(tau, self._seed(step))
            )
            masks = self.layer_masks(group_masks)
            fraction = self.expected_flops()
            computation = computation_loss(fraction, self.target)
            # Every replica computes the same term; the gradients are summed.
            penalty = self.lambda_comp * computation / replicas
        self._assign(masks)
        mean, count, mask_gradients = self._criteria_loss(images, labels)
        gradients = tape.gradient(
            [*masks, penalty],
            variables,
            output_gradients=[*mask_gradients, tf.ones_like(penalty)],
        )
        self.optimizer.apply_gradients(zip(gradients, variables))
        self.step.assign_add(1)
        self.criteria_tracker.update_state(mean, sample_weight=count)
        self.loss_tracker.update_state(
            mean + self.lambda_comp * computation, sample_weight=count
        )
        self.computation_tracker.update_state(computation)
        self.flops_tracker.update_state(fraction)
        self.tau_tracker.update_state(tau)
        return {m.name: m.result() for m in self.metrics}

    def _criteria_loss(self, images, labels):
        """The local mean cross-entropy and batch size, and the gradients
        w.r.t. the masks of this replica's share of the global mean."""
        mask_variables = [
            layer.filter_mask.value for layer in self._targets.layers
        ]
        with tf.GradientTape() as tape:
            tape.watch(mask_variables)
            outputs = self.network(images, training=self.batch_statistics)
            if isinstance(outputs, (list, tuple)):
                outputs = outputs[0]
            per_sample = keras.losses.sparse_categorical_crossentropy(
                labels,
                tf.cast(outputs, tf.float32),
                from_logits=not self._from_probabilities,
            )
            count = tf.cast(tf.shape(per_sample)[0], tf.float32)
            share = tf.reduce_sum(per_sample) / _sum_over_replicas(count)
        gradients = tape.gradient(share, mask_variables)
        gradients = [
            tf.zeros_like(v) if g is None else g
            for g, v in zip(gradients, mask_variables)
        ]
        return tf.reduce_mean(per_sample), count, gradients

    def fit(self, *args, **kwargs):
        """`keras.Model.fit` with the batch-normalization moving statistics
        kept as they are (momentum 1), as the network's weights."""
        with batchnorm_settings(self.network, momentum=1.0):
            return super().fit(*args, **kwargs)

    # What it learned.

    def learned_criteria(self):
        """The most probable criterion of each prunable group (names)."""
        return tuple(
            self.criteria[i] for i in self._most_probable_criteria()
        )

    def _most_probable_criteria(self):
        """Criterion index per prunable group; near-ties to the first."""
        return [ties.argmax(row) for row in self.criteria_logits.numpy()]

    def argmax_counts(self):
        """The most probable keep count of each group (fixed groups whole),
        as a float array indexed by group id."""
        probabilities = self.count_probabilities().numpy()
        counts = self.setup.graph.sizes.astype(np.float64)
        for p, group in enumerate(self.groups):
            counts[group.id] = self.candidates[p, ties.argmax(probabilities[p])]
        return counts

    def keep_masks(self, keep_counts, criteria=None):
        """Boolean keep masks per group: each prunable group keeps its
        `keep_counts[id]` best channels by its criterion.

        Args:
            keep_counts: Keep count per group id.
            criteria: Criterion index per prunable group (default: the
                learned ones).
        """
        if criteria is None:
            criteria = self._most_probable_criteria()
        ranks = self.ranks.numpy()
        keep = self.setup.graph.full_keep()
        for p, group in enumerate(self.groups):
            rank = ranks[p, int(criteria[p]), : group.size]
            keep[group.id] = rank < int(keep_counts[group.id])
        return keep

    # History.

    def record_epoch(self, epoch, logs=None):
        """Stores the end of `epoch` in the history weights.

        Args:
            epoch: The epoch that ended (0-based).
            logs: The epoch's mean metrics (`loss`, `criteria_loss`, ...).

        Returns:
            The `SamplerEpoch`.

        Raises:
            NonFiniteError: If a logit is NaN or infinite, naming the epoch
                and the group.
        """
        self._check_finite(epoch)
        logs = dict(logs or {})
        epoch = min(int(epoch), self.epochs - 1)
        logs["expected_flops"] = float(self.expected_flops().numpy())
        logs.setdefault(
            "tau", float(self.temperature(max(self.step.numpy() - 1, 0)))
        )
        rows = (
            (self.epoch_probabilities, self.criteria_probabilities().numpy()),
            (self.epoch_counts, self.expected_counts().numpy()),
            (self.epoch_scalars, [float(logs.get(k, np.nan)) for k in SCALARS]),
        )
        for variable, row in rows:
            values = variable.numpy()
            values[epoch] = row
            variable.assign(values)
        self.completed_epochs.assign(
            max(epoch + 1, self.completed_epochs.numpy())
        )
        return self.epoch_history()[epoch]

    def epoch_history(self):
        """A `SamplerEpoch` per completed epoch."""
        done = int(self.completed_epochs.numpy())
        probabilities = self.epoch_probabilities.numpy()
        counts = self.epoch_counts.numpy()
        scalars = self.epoch_scalars.numpy()
        return [
            SamplerEpoch(
                epoch=e,
                criteria=self.criteria,
                criteria_probabilities=probabilities[e],
                expected_counts=counts[e],
                **dict(zip(SCALARS, map(float, scalars[e]))),
            )
            for e in range(done)
        ]

    def _check_finite(self, epoch):
        for name, values in (
            ("criteria logits", self.criteria_logits.numpy()),
            ("count logits", self.count_logits.numpy()),
        ):
            bad = ~np.all(np.isfinite(values), axis=1)
            if bad.any():
                group = self.groups[int(np.argmax(bad))]
                raise NonFiniteError(
                    f"LFPC sampler {name} at epoch {epoch + 1}, group "
                    f"{group.id} ({group_label(group)}) should be finite; "
                    f"{int(bad.sum())} groups hold NaN or infinity. Lower "
                    "the learning rate or check the data."
                )

    # Serialization.

    def get_config(self):
        return {
            "name": self.name,
            "network": keras.saving.serialize_keras_object(self.network),
            "scope": self.setup.scope.get_config(),
            "criteria": list(self.criteria),
            "widths": None if self.widths is None else list(self.widths),
            "epochs": self.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "lambda_comp": self.lambda_comp,
            "tau_start": self.tau_start,
            "tau_end": self.tau_end,
            "seed": self.seed,
            "batch_statistics": self.batch_statistics,
        }

    @classmethod
    def from_config(cls, config):
        config = copy.deepcopy(config)  # Deserialising consumes the dicts.
        config["network"] = keras.saving.deserialize_keras_object(
            config["network"]
        )
        config["scope"] = PruningScope.from_config(config["scope"])
        return cls(**config)


@dataclasses.dataclass(frozen=True, eq=False)
class _MaskTargets:
    """The terminal layers the sampler writes, and per layer the index of
    each output channel in the flattened group masks."""

    layers: tuple
    indices: tuple


def _unpack(data):
    images, labels = data[0], data[1]
    if isinstance(images, dict):
        images = images["image"]
    return images, labels


def _sum_over_replicas(value):
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def _check_hard_masked(network):
    layers = (
        prunable_layers(network) if isinstance(network, keras.Model) else []
    )
    if not layers or any(layer.mode != "hard" for layer in layers):
        raise ValueError(
            "`network` should be a hard-masked model (ekg_keras.wrap(model))."
            f" Received: {getattr(network, 'name', type(network).__name__)!r}"
            " without hard-mode prunable layers."
        )


def _positive_int(value, name):
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(
            f"`{name}` should be a positive integer. Received: {name}={value!r}"
        )
    return int(value)


def _positive(value, name):
    if isinstance(value, bool) or not float(value) > 0:
        raise ValueError(
            f"`{name}` should be a positive number. Received: {name}={value!r}"
        )
    return float(value)


def _non_negative(value, name):
    if isinstance(value, bool) or not float(value) >= 0:
        raise ValueError(
            f"`{name}` should be a number >= 0. Received: {name}={value!r}"
        )
    return float(value)
