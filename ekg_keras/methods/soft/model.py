"""Soft filter pruning (SFP) and asymptotic soft filter pruning (ASFP) as a
Keras model trained with `compile` / `fit`."""

import dataclasses

import keras
import numpy as np

from ekg_keras import _backend as backend
from ekg_keras import _keras_private
from ekg_keras import criteria
from ekg_keras._api import ekg_export
from ekg_keras._backend import tf
from ekg_keras.allocation.levels import top_up
from ekg_keras.flops import FlopsCounter
from ekg_keras.layers import prunable_layers
from ekg_keras.methods.options import make_options
from ekg_keras.methods.setup import PruningSetup
from ekg_keras.methods.soft import schedules as schedules_lib
from ekg_keras.methods.soft.callback import SoftPruningCallback
from ekg_keras.methods.soft.options import SoftOptions
from ekg_keras.methods.soft.step import PruningStep
from ekg_keras.methods.soft.step import pruned_count
from ekg_keras.scope import PruningScope
from ekg_keras.slim import slim as slim_model


@ekg_export
class SoftFilterPruning(keras.Model):
    """Trains a model while soft-pruning its filters (SFP / ASFP / FPGM).

    At each pruning step (before training, then at the end of every
    `interval_epochs` epochs and of the last epoch) the filters of every
    prunable channel group are scored, the `floor(N * P)` lowest of each
    group of N channels are zeroed in place, and training goes on: the
    zeroed filters keep receiving gradients and may regrow, and the next
    step chooses afresh (He et al., SFP). P follows `schedule`: constant for
    SFP, rising asymptotically to the goal for ASFP. After training,
    `slim()` removes the zeroed filters; the slim model computes what this
    model computes, the batch-normalization constants of zeroed filters
    included.

    Groups come from the channel graph, so channels that are added together
    are zeroed together. `residual` chooses how groups joined by residual
    additions are treated:

    * `"coupled"` (default): they share indices like every other group
      (the EKG code's way); the slim model is smaller everywhere.
    * `"independent"`: the thesis' way (Eq. 4.8): each convolution of such
      a group zeroes its own filters while the residual stream stays full
      width. Its zeroed filters cannot be removed from a plain Keras model
      without a scatter-add, so `slim()` keeps them (as zeros) and only the
      other groups shrink.

    Regrowth behind batch normalization: a zeroed filter's channel has zero
    batch variance, so in training mode the normalization scales its
    gradient by gamma / sqrt(epsilon) (about 316 * gamma). Regrown filters
    come back with norms tens of times larger than the others, and the
    norm ranking of the next step then zeroes trained filters instead:
    measured on the digits example, ASFP from scratch with regrowth loses
    its accuracy mid-training, while `mask_gradients=True` trains normally.
    SFP from scratch is not affected in the same way: filters zeroed at
    initialisation have batch-norm beta = 0, so their channel sits at the
    ReLU kink and receives no gradient at all (they never regrow).

    The mask state (masks, completed epochs, last pruning step) lives in
    weights, so checkpoints, `.keras` files and `BackupAndRestore` resume a
    run with the same pruned set and schedule position. `fit` adds the
    `SoftPruningCallback` that runs the steps.

    Args:
        model: The model to prune (functional or Sequential); it is cloned
            into prunable soft-mode layers and not modified.
        rate: Goal filter rate P in [0, 1): each pruned group zeroes
            floor(N * P) of its N channels. Give `rate` or a budget
            (`flops=0.6`: the smallest P whose pruned model keeps at most
            that fraction of the FLOPs; then, one group at a time, the
            most pruned groups zero one filter fewer while the FLOPs stay
            within the budget, so the result lands as close below it as
            single filters allow, not up to a rate step below).
        pruned_counts: Filters each channel group zeroes at the goal rate
            (a list indexed by group id, None for groups that are not
            pruned), for a model restored from its config; by default
            they are resolved from `flops` (see above).
        options: A `SoftOptions`; its fields may also be given as keyword
            arguments (`criterion="fpgm"`, `schedule="asymptotic"`,
            `epochs=30`, `mask_gradients=True`, `residual="independent"`,
            ...), which override it. The criterion is "l2" (SFP), "l1",
            "fpgm", "l2+fpgm" (FPGM-mix), any registered criterion that
            needs no data, or a callable; with `mask_gradients=True` the
            gradients of zeroed filters are zeroed at every step (the
            official FPGM code), else they regrow (the thesis). With
            `recovery_epochs` the FLOPs budget is filled for the network
            `hold_pruned` leaves: call it after the last pruning step and
            train those epochs (the registered methods do).
        scope: The `ekg_keras.PruningScope` (FLOPs convention, ignored
            layers, floors; its budget, if any, is `flops` above), or a
            FLOPs fraction. With `round_to`, a step zeroes fewer than
            floor(N * P) filters where the kept count must be a multiple.
        cost: The cost of the pruning method's set-up to share (a latency
            model under a latency budget); default: the scope's own.
        name: The Keras model's name.
        **option_values: `SoftOptions` fields and `PruningScope` fields.

    Example:

    ```python
    sfp = ekg_keras.SoftFilterPruning(model, flops=0.6,
                                      schedule="asymptotic", epochs=30)
    sfp.compile(optimizer="sgd", loss=loss, metrics=["accuracy"])
    sfp.fit(train, epochs=30)
    small = sfp.slim()
    ```

    Reference:
        He et al., "Soft Filter Pruning for Accelerating Deep Convolutional
        Neural Networks", IJCAI 2018; He et al., "Asymptotic Soft Filter
        Pruning", IEEE T-Cybernetics 2019; He et al., "Filter Pruning via
        Geometric Median", CVPR 2019.
    """

    # The network it trains (see `ekg_keras.training.inner_model`).
    inner_model_attribute = "network"

    def __init__(
        self,
        model,
        rate=None,
        *,
        scope=None,
        options=None,
        cost=None,
        pruned_counts=None,
        name=None,
        **option_values,
    ):
        super().__init__(name=name)
        scope_values, option_values = PruningScope.split(option_values)
        self.scope = PruningScope.of(scope, **scope_values)
        self.options = make_options(
            SoftOptions, options, option_values, method="SoftFilterPruning"
        )
        options = self.options
        self.criterion = _check_criterion(options.criterion)
        self.interval_epochs = options.interval_epochs
        self.residual = options.residual
        self.fpgm_share = options.fpgm_share
        self._selection = _selection(options.criterion, options.fpgm_share)
        self.prune_before_training = bool(options.prune_before_training)
        self.mask_gradients = bool(options.mask_gradients)
        # The rate, not the set-up, carries the target (soft pruning has
        # its own reachability rule: whole rates k/N).
        self.setup = PruningSetup(
            model,
            self.scope,
            mode="soft",
            masked=model if _all_soft(model) else None,
            cost=cost,
            check_target=False,
        )
        self.network = self.setup.model
        self.graph = self.setup.graph
        self._held_cost = self._exact_cost_when_held()
        self.pruned_counts = pruned_counts
        self.rate = self._resolve_rate(rate, self.scope.fraction)
        if pruned_counts is None and rate is None:
            self.pruned_counts = self._fill_budget(self.scope.fraction)
        self.holding = False
        self.schedule = _resolve_schedule(
            options.schedule,
            self.rate,
            options.epochs,
            options.d,
            options.min_rate,
        )
        self.completed_epochs = self.add_weight(
            name="completed_epochs",
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )
        self.last_pruned_epoch = self.add_weight(
            name="last_pruned_epoch",
            shape=(),
            dtype="int64",
            initializer=keras.initializers.Constant(-1),
            trainable=False,
            aggregation="only_first_replica",
        )
        self.history_of_steps = []
        # The wrapped network is built already, and so is this model.
        self.built = True

    # Model interface.

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    def train_step(self, *args):
        # `(data)`, or `(state, data)` on JAX: Keras' own step, except
        # with masked gradients on TensorFlow and PyTorch (JAX masks them
        # in `compute_loss_and_updates`).
        if not self.mask_gradients or backend.name() == "jax":
            return super().train_step(*args)
        if backend.name() == "torch":
            return self._torch_train_step_with_masked_gradients(*args)
        return self._train_step_with_masked_gradients(*args)

    def compute_loss_and_updates(
        self, trainable_variables, non_trainable_variables, *args, **kwargs
    ):
        """JAX's stateless loss, whose gradients its trainer applies: with
        `mask_gradients`, each masked weight enters it as
        `w * m + stop_gradient(w * (1 - m))`, the same value with the
        gradient times the mask `m`, read from the state (the masks
        change between epochs, so they are not constants of the step)."""
        if self.mask_gradients and kwargs.get("training"):
            trainable_variables = self._with_masked_gradients(
                trainable_variables, non_trainable_variables
            )
        return super().compute_loss_and_updates(
            trainable_variables, non_trainable_variables, *args, **kwargs
        )

    def fit(self, *args, callbacks=None, **kwargs):
        """`keras.Model.fit`, with the `SoftPruningCallback` added."""
        callbacks = list(callbacks or [])
        if not any(isinstance(c, SoftPruningCallback) for c in callbacks):
            # First, so that checkpoints saved at the end of an epoch
            # (BackupAndRestore, ModelCheckpoint) include that epoch's step.
            callbacks.insert(0, SoftPruningCallback())
        return super().fit(*args, callbacks=callbacks, **kwargs)

    # Pruning.

    def prune_step(self):
        """Scores, selects and zeroes filters at the current schedule rate.

        Runs in the cross-replica context (from a callback), reading the
        weights and assigning masks and zeros to every replica.

        Returns:
            The `PruningStep` it ran.
        """
        epoch = int(self.completed_epochs.numpy())
        rate = float(self.schedule(epoch))
        zeroed = {}
        cache = {}
        keep = self.graph.full_keep()
        own_masks = {}
        for group in self.graph.prunable_groups:
            count = self._pruned_count(group, rate)
            if self._independent(group):
                own_masks.update(self._per_producer_masks(group, count, cache))
                continue
            weights = criteria.group_weights(self.graph, group, cache=cache)
            keep[group.id][self._selection.pruned(weights, count)] = False
        masks = self.graph.layer_masks(keep)
        masks.update(own_masks)
        for layer in prunable_layers(self.network):
            if id(layer) not in masks:
                continue
            layer.filter_mask.assign(masks[id(layer)])
            record = self.graph.layers[id(layer)]
            if record.kind == "source" or not hasattr(layer, "gamma"):
                # Convolution filters (depthwise ones too) are zeroed; batch
                # normalization is left alone, as in SFP.
                layer.zero_masked_weights()
                zeroed[record.path] = int(np.sum(masks[id(layer)] == 0))
        self.last_pruned_epoch.assign(epoch)
        step = PruningStep(epoch=epoch, rate=rate, zeroed=zeroed)
        self.history_of_steps.append(step)
        return step

    def hold_pruned(self):
        """Trains on with the filters zeroed now held at zero.

        No more pruning steps, and the gradients of the zeroed filters are
        masked: training from here is the fine-tuning of the pruned
        network (`SoftOptions.recovery_epochs`). The batch normalization
        of the zeroed filters (with a scale) gets gamma and beta zeroed and
        held too, so their channels are exact zeros whatever the moving
        statistics: the slim model needs no constant folds for them, and
        the budget (filled for this from the start, see
        `fraction`) is met exactly rather than under an upper
        bound. This changes the network's function (the removed channels'
        constants are gone); the recovery epochs train that in.
        """
        for layer in self._held_normalization():
            layer.zero_masked_weights()
        self.holding = True
        self.mask_gradients = True
        # The compiled step reads the flag when it is traced.
        self.train_function = None

    def slim(self, fold="exact"):
        """The slim plain model: zeroed filters removed (`ekg_keras.slim`)."""
        return slim_model(self.network, fold=fold)

    @property
    def current_rate(self):
        """The schedule's rate at the current number of completed epochs."""
        return float(self.schedule(int(self.completed_epochs.numpy())))

    def kept_flops_fraction(self, rate=None):
        """Fraction of FLOPs the slim model keeps at `rate` (default: goal)."""
        return self.fraction(
            self._keep_counts(self.rate if rate is None else rate)
        )

    def fraction(self, keep_counts):
        """The budget's fraction (FLOPs or latency) of per-group keep
        counts: exact for the network recovery leaves (see
        `hold_pruned`), else the set-up's upper bound."""
        if self._held_cost is None:
            return self.setup.fraction(keep_counts)
        return self._held_cost.macs(keep_counts) / self.setup.full_macs

    # Serialization.

    def get_config(self):
        options = {
            field.name: getattr(self.options, field.name)
            for field in dataclasses.fields(self.options)
        }
        return {
            "model": keras.saving.serialize_keras_object(self.network),
            "rate": self.rate,
            "pruned_counts": self.pruned_counts,
            **options,
            # The resolved schedule, which also fixes epochs, d, min_rate.
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            # The rate is resolved: the scope is saved without its budget.
            "scope": self.scope.without_budget().get_config(),
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        config["schedule"] = schedules_lib.get(config["schedule"])
        config["scope"] = PruningScope.from_config(config["scope"])
        return cls(**config)

    # Internals.

    def _independent(self, group):
        return self.residual == "independent" and len(group.producers) > 1

    def _per_producer_masks(self, group, count, cache):
        """Masks for the producers of a residual group pruned one by one
        (the thesis' full-width residual stream)."""
        masks = {}
        for path in group.producers:
            record = self.graph.channels(path)
            own = criteria.group_weights(
                self.graph, group, cache=cache, records=[record]
            )
            pruned = self._selection.pruned(own, count)
            out = record.outputs[0]
            mask = np.ones(len(out), dtype="float32")
            rows = np.flatnonzero(out.group == group.id)
            mask[rows[np.isin(out.index[rows], pruned)]] = 0.0
            masks[id(record.layer)] = mask
        return masks

    def _held_normalization(self):
        """The batch normalization layers `hold_pruned` zeroes and holds."""
        return [
            layer
            for layer in prunable_layers(self.network)
            if id(layer) in self.graph.layers
            and hasattr(layer, "gamma")
            and _handler(self.graph, layer).holds_zero_constants(layer)
        ]

    def _exact_cost_when_held(self):
        """The FLOPs counter that is exact for the network `hold_pruned`
        leaves (its zeroed channels' constants held at zero), when the run
        ends with recovery epochs under a FLOPs budget; else None, and the
        set-up's cost counts those constants as non-zero (an upper bound:
        the slim model may keep up to a few tenths of a point less)."""
        counter = self.setup.counter
        if not self.options.recovery_epochs or not isinstance(
            counter, FlopsCounter
        ):
            return None
        return FlopsCounter(
            self.graph,
            include_bn=counter.include_bn,
            include_fc=counter.include_fc,
            fold=counter.fold,
            held_constants=True,
        )

    def _keep_counts(self, rate):
        keep = self.graph.sizes.astype(np.float64)
        for group in self.graph.prunable_groups:
            if not self._independent(group):
                keep[group.id] = group.size - self._pruned_count(group, rate)
        return keep

    def _pruned_count(self, group, rate):
        """floor(N * P), less where the kept count must rise to an allowed
        one (`round_to`, `min_channels`)."""
        kept = group.size - pruned_count(group.size, rate)
        allowed = self.setup.levels.levels[group.id]
        count = group.size - int(allowed[np.searchsorted(allowed, kept)])
        if self.pruned_counts is not None:
            count = min(count, int(self.pruned_counts[group.id]))
        return count

    def _fill_budget(self, flops):
        """Per-group filter counts zeroed at the goal rate: floor(N * P),
        then one filter fewer, most pruned group first, while the kept
        FLOPs stay at most `flops`."""
        keep = self._keep_counts(self.rate).astype(np.int64)
        sizes = self.graph.sizes
        fixed = [
            g.id for g in self.graph.prunable_groups if self._independent(g)
        ]

        def allowed(trial):
            return all(trial[g] == keep[g] for g in fixed)

        raised = top_up(
            keep,
            self.setup.levels,
            self.fraction,
            flops,
            priority=lambda g, k: -k[g] / sizes[g],
            allowed=allowed,
        )
        counts = [None] * len(sizes)
        for group in self.graph.prunable_groups:
            counts[group.id] = int(sizes[group.id] - raised[group.id])
        return counts

    def _resolve_rate(self, rate, flops):
        if (rate is None) == (flops is None):
            raise ValueError(
                "Give exactly one of `rate` (filter rate P) and `flops` "
                f"(fraction of FLOPs to keep). Received: rate={rate!r}, "
                f"flops={flops!r}"
            )
        if rate is not None:
            return _check_rate(rate)
        return self._rate_for_flops(flops)

    def _rate_for_flops(self, flops):
        """The smallest rate k/N (over the groups' sizes N) whose pruned
        model keeps at most `flops` of the FLOPs."""
        sizes = {
            g.size
            for g in self.graph.prunable_groups
            if not self._independent(g)
        }
        candidates = sorted({k / n for n in sizes for k in range(n)})
        for rate in candidates:
            if self.fraction(self._keep_counts(rate)) <= flops:
                return rate
        smallest = self.fraction(self._keep_counts(candidates[-1]))
        budget = self.scope.budget or "flops"
        raise ValueError(
            f"{budget}={flops} is below the smallest reachable fraction "
            f"{smallest:.4f} with soft pruning of these groups. Received: "
            f"{budget}={flops}"
        )

    def _gradient_masks(self):
        """Trainable variable id -> (mask variable, axes) for soft layers
        (batch normalization only while holding, see `hold_pruned`)."""
        masks = {}
        held = set()
        if self.holding:
            held = {id(layer) for layer in self._held_normalization()}
        for layer in prunable_layers(self.network):
            if id(layer) not in self.graph.layers:
                continue
            if hasattr(layer, "gamma") and id(layer) not in held:
                continue
            for variable, axes in layer._output_weights():
                masks[id(variable)] = (layer.filter_mask, axes)
        return masks

    def _train_step_with_masked_gradients(self, data):
        # The TensorFlow trainer's step, with the gradients of zeroed
        # filters masked before they are applied (official FPGM code).
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(
                x=x,
                y=y,
                y_pred=y_pred,
                sample_weight=sample_weight,
                training=True,
            )
            _keras_private.track_training_loss(self, loss, x)
            loss = self.optimizer.scale_loss(loss)
        variables = self.trainable_weights
        gradients = tape.gradient(loss, variables)
        masks = self._gradient_masks()
        gradients = [
            _masked_gradient(g, v, masks.get(id(v)))
            for g, v in zip(gradients, variables)
        ]
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _torch_train_step_with_masked_gradients(self, data):
        # Keras' PyTorch step, with the gradients masked before they are
        # applied (the masks are read when the step runs: it is eager).
        import torch

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self(x, training=True)
        self.zero_grad()
        loss = self.compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
        )
        batch = next(t for t in keras.tree.flatten(x) if t is not None)
        self._loss_tracker.update_state(loss, sample_weight=batch.shape[0])
        loss = self.optimizer.scale_loss(loss)
        loss.backward()
        variables = self.trainable_weights[:]
        masks = self._gradient_masks()
        gradients = [
            _masked_gradient(v.value.grad, v, masks.get(id(v)))
            for v in variables
        ]
        with torch.no_grad():
            self.optimizer.apply(gradients, variables)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _with_masked_gradients(self, trainable_values, non_trainable_values):
        """The trainable values (JAX), each masked weight with the gradient
        of its zeroed filters stopped (see `compute_loss_and_updates`)."""
        masks = self._gradient_masks()
        position = {
            id(v): i for i, v in enumerate(self.non_trainable_variables)
        }
        values = list(trainable_values)
        for i, variable in enumerate(self.trainable_variables):
            if id(variable) not in masks:
                continue
            mask, axes = masks[id(variable)]
            mask = non_trainable_values[position[id(mask)]]
            value = values[i]
            kept = _masked_gradient(value, variable, (mask, axes))
            values[i] = kept + keras.ops.stop_gradient(value - kept)
        return values


def _handler(graph, layer):
    return graph.layers[id(layer)].handler


def _masked_gradient(gradient, variable, mask_and_axes):
    if gradient is None or mask_and_axes is None:
        return gradient
    mask, axes = mask_and_axes
    shape = [1] * len(variable.shape)
    for axis in axes:
        shape[axis] = variable.shape[axis]
    mask = keras.ops.cast(mask, gradient.dtype)
    return gradient * keras.ops.reshape(mask, shape)


def _all_soft(model):
    """Whether `model` is a soft-pruning network already (deserializing)."""
    layers = prunable_layers(model)
    return bool(layers) and all(layer.mode == "soft" for layer in layers)


def _check_criterion(criterion):
    """Returns `criterion` if soft pruning can use it, else raises."""
    if criteria.get(criterion).requires_data:
        raise ValueError(
            "Soft pruning scores filters from weights at every step; "
            f"criterion={criterion!r} needs data. Use one of "
            f"{_weight_criteria()} or a callable."
        )
    return criterion


def _weight_criteria():
    return tuple(
        name for name in criteria.names() if not criteria.requires_data(name)
    )


def _selection(criterion, fpgm_share):
    """The `Criterion` that selects the filters each step zeroes."""
    if criterion == "l2+fpgm":
        return criteria.fpgm_mix(fpgm_share)
    return criteria.get(criterion)


def _check_rate(rate):
    if (
        isinstance(rate, bool)
        or not isinstance(rate, (int, float))
        or not 0 <= rate < 1
    ):
        raise ValueError(
            f"`rate` should be a filter rate in [0, 1). Received: rate={rate!r}"
        )
    return float(rate)


def _resolve_schedule(schedule, rate, epochs, d, min_rate):
    if schedule == "constant":
        return schedules_lib.ConstantRate(rate)
    if schedule == "asymptotic":
        if epochs is None:
            raise ValueError(
                "The asymptotic (ASFP) schedule needs the total number of "
                "training epochs: pass `epochs=`. Received: epochs=None"
            )
        return schedules_lib.AsymptoticRate(
            rate, epochs, d=d, min_rate=min_rate
        )
    if isinstance(schedule, schedules_lib.PruningRateSchedule):
        if abs(schedule.final_rate - rate) > 1e-9:
            raise ValueError(
                f"The schedule ends at rate {schedule.final_rate}, but the "
                f"goal rate is {rate}; they should be equal. Received: "
                f"schedule={schedule!r}"
            )
        return schedule
    raise ValueError(
        "`schedule` should be 'constant', 'asymptotic' or a "
        f"PruningRateSchedule. Received: schedule={schedule!r}"
    )
