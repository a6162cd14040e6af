"""The staged run behind both trainers: pretrain, prune, finetune, export.

`Run(config, source, strategy).run()` does the stages of `config.stages`
in order and resumes after a crash: the run's state (which stages are done,
their wall times and results) is `state.json` in `model_dir`, each finished
stage leaves its model as `<stage>/model.keras`, training stages back up
every epoch (`callbacks.Backup`), and the EKG search
checkpoints every step. A rerun of the same command skips the stages that
are done and continues the one that was interrupted.

Layout of `model_dir`:

    state.json                stages done, runs, seconds, results
    summary.json              the final summary (written at the end)
    pretrain/model.keras      the trained unpruned model
    prune/model.keras         the pruned model (masked; slim for soft methods)
    prune/search/             EKG search checkpoint
    finetune/model.keras      the fine-tuned masked model
    export/saved_model/       TF SavedModel of the slim model
    export/model.keras        the slim model
    logs/<stage>/             TensorBoard event files
    <stage>/backup/           training backup (deleted when a stage ends)

Under `multi_worker_mirrored` every worker runs the same stages. The chief
writes the layout above; every other worker keeps its own state, stage
models, backups and search checkpoint under `workers/<name>/` (the same
layout), and writes no logs, exports or summary.
"""

import json
import os
import time

import keras

import ekg_keras
from ekg_keras import taylor
from ekg_keras.training import EKGFineTuning
from ekg_keras.training import build_memory_bank
from ekg_keras.training.soft_pruning import SoftPruningCallback
from trainers import callbacks as callbacks_lib
from trainers import loop
from trainers import strategies
from trainers.config import ONESHOT_METHODS
from trainers.config import SOFT_METHODS
from trainers.config import STAGES
from trainers.config import ConfigError
from trainers.config import first_line

# Batches of training data that re-estimate batch-norm statistics after
# one-shot pruning and the EKG search.
RECALIBRATION_STEPS = 100


def build_model(config, source):
    """A fresh model of `config.model` for `source` (logits out)."""
    options = {
        "num_classes": source.num_classes,
        "input_shape": source.input_shape,
    }
    if ekg_keras.models.is_application(config.model):
        options.update(weights=None, classifier_activation=None)
    model = ekg_keras.models.get(config.model, **options)
    if keras.mixed_precision.global_policy().compute_dtype == "float16":
        # Keras' advice for mixed precision: float32 outputs (losses and
        # top-k metrics are not float16-safe).
        outputs = keras.layers.Activation(
            "linear", dtype="float32", name="logits_float32"
        )(model.outputs[0])
        model = keras.Model(model.inputs, outputs, name=model.name)
    return model


def load_pretrained(path, source):
    """Loads a `.keras` model and checks that it fits `source`.

    Raises:
        ConfigError: If the file cannot be read as a Keras model, or its
            input shape or class count differ from the data's.
    """
    if not os.path.isfile(path):
        raise ConfigError(
            f"--pretrained should be a .keras file. Not found: {path!r}"
        )
    try:
        model = keras.saving.load_model(path)
    except Exception as error:  # Keras raises many kinds here.
        raise ConfigError(
            f"--pretrained should be a .keras model file; {path!r} could not "
            f"be loaded: {type(error).__name__}: {first_line(error)}"
        ) from error
    check_compatible(model, source, what=f"--pretrained {path!r}")
    return model


def check_compatible(model, source, what):
    """Raises ConfigError if `model` cannot take `source`'s images/classes."""
    inputs = tuple(model.inputs[0].shape[1:])
    fits = len(inputs) == len(source.input_shape) and all(
        a is None or a == b for a, b in zip(inputs, source.input_shape)
    )
    classes = model.outputs[0].shape[-1]
    if not fits or classes != source.num_classes:
        raise ConfigError(
            f"{what} should take {source.name} images of shape "
            f"{source.input_shape} and output {source.num_classes} classes. "
            f"Received: input shape {inputs}, {classes} outputs."
        )


class RunState:
    """The run's progress, kept in a JSON file (`state.json`)."""

    def __init__(self, path):
        self.path = path
        self.data = {"stages": {}}
        if os.path.exists(path):
            with open(path) as handle:
                self.data = json.load(handle)

    def stage(self, name):
        """The record of stage `name` (a dict, empty if never started)."""
        return self.data["stages"].setdefault(name, {})

    def done(self, name):
        return bool(self.data["stages"].get(name, {}).get("completed"))

    def begin(self, name):
        record = self.stage(name)
        record["runs"] = record.get("runs", 0) + 1
        self.save()

    def complete(self, name, seconds, **results):
        record = self.stage(name)
        record.update(results)
        record["seconds"] = seconds
        record["completed"] = True
        self.save()

    def save(self):
        temporary = f"{self.path}.tmp"
        with open(temporary, "w") as handle:
            json.dump(self.data, handle, indent=2)
        os.replace(temporary, self.path)


class Run:
    """One trainer run; see the module docstring.

    Args:
        config: A `RunConfig`.
        source: The `DataSource` to train and evaluate on.
        strategy: The `tf.distribute.Strategy` to run under.
    """

    def __init__(self, config, source, strategy):
        self.config = config
        self.source = source
        self.strategy = strategy
        self.chief = strategies.is_chief(strategy)
        self.state = None
        self._models = {}
        self._search = None
        self._full = None
        self._checked = False
        self._evaluators = []

    # Paths.

    def path(self, *parts):
        """A path in `model_dir`."""
        return os.path.join(self.config.model_dir, *parts)

    def scratch(self, *parts):
        """A path of this worker's own files: in `model_dir` on the
        chief, in `model_dir/workers/<name>` on the other workers."""
        if self.chief:
            return self.path(*parts)
        name = strategies.worker_name(self.strategy)
        return self.path("workers", name, *parts)

    # Checks before anything is written.

    def check(self):
        """Checks the inputs of the stages to run; writes nothing.

        Raises:
            ConfigError: If `--pretrained` does not fit the data, or a
                stage's input is neither given nor left by an earlier run.
        """
        config = self.config
        # The state of an earlier run in `model_dir` (empty if none); the
        # run continues it.
        self.state = RunState(self.scratch("state.json"))
        self._check_same_run()
        if config.pretrained:
            self._models["pretrain"] = load_pretrained(
                config.pretrained, self.source
            )
        # The search of EKG's fine-tuning is restored from the pretrained
        # model and the search checkpoint.
        needs_pretrained = [
            stage
            for stage in ("prune", "finetune")
            if stage in config.stages
            and not self.state.done(stage)
            and (stage == "prune" or config.method == "ekg")
        ]
        if (
            needs_pretrained
            and not config.pretrained
            and "pretrain" not in config.stages
            and not os.path.exists(self.scratch("pretrain", "model.keras"))
        ):
            raise ConfigError(
                "--stages without pretrain needs --pretrained=<.keras file> "
                "or a pretrained model left in --model_dir by an earlier "
                f"run. Received: --stages={','.join(config.stages)}, nothing"
                f" in {self.scratch('pretrain')}"
            )
        for stage, needs in (("finetune", "prune"), ("export", "prune")):
            if (
                stage in config.stages
                and needs not in config.stages
                and not os.path.exists(self.scratch(needs, "model.keras"))
            ):
                raise ConfigError(
                    f"--stages={','.join(config.stages)} runs {stage} "
                    f"without {needs}, but {self.scratch(needs, 'model.keras')}"
                    " is missing: add prune to --stages."
                )
        self._checked = True

    def _check_same_run(self):
        """A `model_dir` holding another run's state is an error."""
        earlier = self.state.data.get("config", {})
        keys = ("model", "method", "flops", "pretrained")
        now = self.config.to_json()
        different = [k for k in keys if k in earlier and earlier[k] != now[k]]
        if different:
            raise ConfigError(
                f"--model_dir={self.config.model_dir} holds a run with other "
                "settings ("
                + ", ".join(
                    f"--{k}={earlier[k]} there, {now[k]} now" for k in different
                )
                + "): pass a new --model_dir to start over."
            )

    # The run.

    def run(self):
        """Runs the stages; returns the summary dict (also summary.json)."""
        if not self._checked:
            self.check()
        os.makedirs(self.scratch(), exist_ok=True)
        self.state.data["config"] = self.config.to_json()
        self.state.save()
        self._say(
            f"{strategies.describe(self.strategy)}; {self.source.name}: "
            f"{self.source.num_train} training and {self.source.num_eval} "
            "evaluation images"
        )
        for stage in STAGES:
            if stage not in self.config.stages:
                continue
            if self.state.done(stage):
                self._say(f"{stage}: done in an earlier run, skipped")
                continue
            skip = self._skip_reason(stage)
            if skip:
                self._say(f"{stage}: skipped, {skip}")
                continue
            self._say(f"{stage}: starting")
            self.state.begin(stage)
            start = time.perf_counter()
            results = getattr(self, f"_{stage}")()
            seconds = time.perf_counter() - start
            self.state.complete(stage, seconds, **results)
            self._say(f"{stage}: done in {seconds:.1f} s {results}")
        summary = self.summary()
        if self.chief:
            with open(self.path("summary.json"), "w") as handle:
                json.dump(summary, handle, indent=2)
        return summary

    def _skip_reason(self, stage):
        if stage == "pretrain" and self.config.pretrained:
            return f"--pretrained={self.config.pretrained} is used"
        if stage == "finetune" and self.config.is_soft:
            return (
                f"{self.config.method} trains while it prunes (prune stage);"
                " it has no separate fine-tuning"
            )
        return None

    # Stages.

    def _pretrain(self):
        config = self.config
        with self.strategy.scope():
            model = build_model(config, self.source)
        self._compile(model, pretrain=True)
        resumed = self._fit(model, "pretrain", config.pretrain_epochs)
        self._keep("pretrain", model)
        return {"resumed_at_epoch": resumed, **self.evaluate(model)}

    def _prune(self):
        config = self.config
        pretrained = self.model_after("pretrain")
        if config.method == "ekg":
            pruned = self._ekg_search(pretrained)
        elif config.is_soft:
            return self._soft_prune(pretrained)
        else:
            with self.strategy.scope():
                pruned = ekg_keras.prune(
                    pretrained,
                    config.flops,
                    method="oneshot",
                    criterion=ONESHOT_METHODS[config.method],
                    data=self._plain_train_data(),
                    recalibrate_steps=RECALIBRATION_STEPS,
                    min_channels=_min_channels(config.min_channels),
                    slim=False,
                    verbose=self.chief,
                )
        self._keep("prune", pruned)
        return {
            "flops_fraction": self.flops_fraction(pruned),
            **self.evaluate(pruned),
        }

    def _ekg_search(self, pretrained):
        self._search = self._make_search(pretrained)
        masked = self._search.run()
        ekg_keras.recalibrate_batchnorm(
            masked, self._plain_train_data(), steps=RECALIBRATION_STEPS
        )
        return masked

    def _make_search(self, pretrained):
        config = self.config
        return ekg_keras.EKGSearch(
            pretrained,
            config.flops,
            self._plain_train_data(),
            val_per_class=config.search_val_per_class,
            subset_per_class=config.search_subset_per_class,
            batch_size=config.eval_batch_size,
            min_channels=_min_channels(config.min_channels),
            strategy=self.strategy,
            checkpoint_dir=self.scratch("prune", "search"),
            tensorboard_dir=self._log_dir("prune"),
            verbose=1 if self.chief else 0,
        )

    def _soft_prune(self, pretrained):
        config = self.config
        criterion, schedule = SOFT_METHODS[config.method]
        with self.strategy.scope():
            soft = ekg_keras.SoftFilterPruning(
                pretrained,
                flops=config.flops,
                criterion=criterion,
                schedule=schedule,
                epochs=config.epochs,
            )
        self._compile(soft, pretrain=False)
        resumed = self._fit(soft, "prune", config.epochs)
        with self.strategy.scope():
            small = soft.slim()
        self._keep("prune", small)
        return {
            "resumed_at_epoch": resumed,
            "flops_fraction": self.flops_fraction(small),
            **self.evaluate(small),
        }

    def _finetune(self):
        config = self.config
        if config.method == "ekg":
            search = self._search or self._restored_search()
            bank, _ = build_memory_bank(
                search,
                self._plain_train_data(with_ids=True),
                num_teachers=config.num_teachers,
                verbose=1 if self.chief else 0,
            )
            with self.strategy.scope():
                trainer = EKGFineTuning(
                    search.model,
                    bank,
                    augment=self.source.views_augment,
                    seed=config.seed,
                )
            self._compile(trainer, pretrain=False, loss=False)
            resumed = self._fit(
                trainer, "finetune", config.epochs, with_ids=True, augment=False
            )
            model = search.model
        else:
            model = self.model_after("prune")
            self._compile(model, pretrain=False)
            resumed = self._fit(model, "finetune", config.epochs)
        self._keep("finetune", model)
        return {"resumed_at_epoch": resumed, **self.evaluate(model)}

    def _restored_search(self):
        """The finished search, from its checkpoint (after a restart).

        Its model then takes the weights the prune stage left (batch
        normalization recalibrated), as in an uninterrupted run.
        """
        search = self._make_search(self.model_after("pretrain"))
        search.run()
        search.model.set_weights(self.model_after("prune").get_weights())
        return search

    def _export(self):
        model = self.model_after("finetune", "prune")
        saved_model = self.path("export", "saved_model")
        if self.chief:
            os.makedirs(self.path("export"), exist_ok=True)
            small = ekg_keras.export(
                model,
                saved_model,
                keras_path=self.path("export", "model.keras"),
            )
        else:
            small = (
                ekg_keras.slim(model)
                if ekg_keras.layers.prunable_layers(model)
                else model
            )
        self._models["export"] = small
        report = ekg_keras.count_flops(small)
        return {
            "saved_model": saved_model,
            "flops_fraction": report.macs / self.full_macs(),
            "macs": report.macs,
            "params": report.params,
            **self.evaluate(small),
        }

    # Models between stages.

    def _keep(self, stage, model):
        """Holds `model` as `stage`'s output and saves it."""
        self._models[stage] = model
        os.makedirs(self.scratch(stage), exist_ok=True)
        model.save(self.scratch(stage, "model.keras"))

    def model_after(self, *stages):
        """The output of the first of `stages` that has one.

        From this run's memory, else from `<stage>/model.keras` of an
        earlier run (loaded under the strategy).

        Raises:
            ConfigError: If none of them has an output.
        """
        for stage in stages:
            if stage in self._models:
                return self._models[stage]
            path = self.scratch(stage, "model.keras")
            if os.path.exists(path) and (
                stage != "pretrain" or not self.config.pretrained
            ):
                with self.strategy.scope():
                    model = keras.saving.load_model(path)
                self._models[stage] = model
                return model
        raise ConfigError(
            f"No model from {' or '.join(stages)} in {self.config.model_dir}"
            ": run that stage first."
        )

    # Training.

    def _compile(self, model, pretrain, loss=True):
        config = self.config
        prefix = "pretrain_" if pretrain else ""
        epochs = config.pretrain_epochs if pretrain else config.epochs
        total = epochs * self.steps_per_epoch()
        rate = getattr(config, f"{prefix}learning_rate")
        decay = getattr(config, f"{prefix}decay_rate")
        points = getattr(config, f"{prefix}decay_points")
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
            [max(1, int(total * p)) for p in points],
            [rate * decay**k for k in range(len(points) + 1)],
        )
        with self.strategy.scope():
            optimizer = keras.optimizers.SGD(
                schedule,
                momentum=config.momentum,
                nesterov=True,
                weight_decay=getattr(config, f"{prefix}weight_decay") or None,
            )
            if not loss:
                model.compile(
                    optimizer=optimizer, jit_compile=config.jit_compile
                )
                return
            network = callbacks_lib.network_of(model)
            model.compile(
                optimizer=optimizer,
                loss=taylor.default_loss(network),
                metrics=self._metrics(),
                jit_compile=config.jit_compile,
            )

    def _metrics(self):
        return [
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            keras.metrics.SparseTopKCategoricalAccuracy(
                k=min(5, self.source.num_classes), name="top5"
            ),
        ]

    def steps_per_epoch(self):
        """Batches per epoch: the full split, capped by the config."""
        steps = max(1, self.source.num_train // self.config.batch_size)
        if self.config.steps_per_epoch:
            steps = min(steps, self.config.steps_per_epoch)
        return steps

    def _fit(self, model, stage, epochs, with_ids=False, augment=None):
        """Trains with backups, TensorBoard and summaries (see `loop`).

        Returns:
            The epoch it started at (> 0 when resumed after a crash).
        """
        backup = callbacks_lib.Backup(
            self.scratch(stage, "backup"), self.config.backup_every_steps
        )
        callbacks = [backup]
        if isinstance(model, ekg_keras.SoftFilterPruning):
            # Before the backup, so a backup holds its epoch's pruning.
            callbacks.insert(0, SoftPruningCallback())
        if self.chief:
            callbacks += [
                keras.callbacks.TensorBoard(self._log_dir(stage)),
                callbacks_lib.PruningSummaries(
                    self._log_dir(stage), self.full_macs()
                ),
            ]
        network = callbacks_lib.network_of(model)
        return loop.train(
            model,
            self.strategy,
            self._train_data(with_ids=with_ids, augment=augment),
            epochs=epochs,
            steps_per_epoch=self.steps_per_epoch(),
            element_spec=self._train_spec(with_ids),
            callbacks=callbacks,
            validate=lambda: self.evaluate(network),
            verbose=self.config.verbose if self.chief else 0,
            jit_compile=self.config.jit_compile,
            sync_batchnorm=self.config.sync_batchnorm,
        )

    def _log_dir(self, stage):
        return self.path("logs", stage) if self.chief else None

    # Data.

    def _train_data(self, with_ids=False, augment=None):
        """Shuffled, augmented, repeated, distributed training batches."""
        config = self.config

        def dataset(input_context):
            return self.source.dataset(
                "train",
                config.batch_size,
                training=True,
                augment=augment,
                with_ids=with_ids,
                seed=config.seed,
                input_context=input_context,
            ).repeat()

        return self.strategy.distribute_datasets_from_function(dataset)

    def _train_spec(self, with_ids):
        """The structure of one replica's training batch."""
        replicas = self.strategy.num_replicas_in_sync
        return self.source.dataset(
            "train",
            max(1, self.config.batch_size // replicas),
            training=True,
            with_ids=with_ids,
        ).element_spec

    def _plain_train_data(self, with_ids=False):
        """The training split in order, evaluation preprocessing."""
        return self.source.dataset(
            "train", self.config.eval_batch_size, with_ids=with_ids
        )

    def _eval_data(self):
        return self.source.dataset("eval", self.config.eval_batch_size)

    # Results.

    def evaluate(self, model):
        """Top-1 and top-5 accuracy on the evaluation split (inference)."""
        network = callbacks_lib.network_of(model)
        evaluator = next(
            (e for e in self._evaluators if e.network is network), None
        )
        if evaluator is None:
            evaluator = loop.Evaluator(network, self.source.num_classes)
            self._evaluators.append(evaluator)
        return evaluator(self._eval_data())

    def full_macs(self):
        """MACs of the unpruned model."""
        if self._full is None:
            reference = self._models.get("pretrain") or build_model(
                self.config, self.source
            )
            self._full = ekg_keras.count_flops(reference)
        return self._full.macs

    def flops_fraction(self, model):
        return (
            ekg_keras.count_flops(callbacks_lib.network_of(model)).macs
            / self.full_macs()
        )

    def summary(self):
        """Accuracy, FLOPs, params and wall times of the run so far."""
        stages = self.state.data["stages"]
        last = next(
            (
                s
                for s in reversed(STAGES)
                if stages.get(s, {}).get("completed") and "top1" in stages[s]
            ),
            None,
        )
        full = self._full or ekg_keras.count_flops(
            build_model(self.config, self.source)
        )
        summary = {
            "dataset": self.source.name,
            "model": self.config.model,
            "method": self.config.method,
            "flops_target": self.config.flops,
            "macs_full": full.macs,
            "params_full": full.params,
            "seconds": {
                s: round(stages[s].get("seconds", 0.0), 2)
                for s in STAGES
                if s in stages
            },
            "stages": stages,
        }
        exported = stages.get("export", {})
        if exported.get("completed"):
            summary.update(macs=exported["macs"], params=exported["params"])
        if last is not None:
            summary.update(
                final_stage=last,
                top1=stages[last]["top1"],
                top5=stages[last]["top5"],
                flops_fraction=stages[last].get("flops_fraction", 1.0),
            )
        return summary

    def _say(self, message):
        if self.chief:
            print(f"[{self.config.model_dir}] {message}", flush=True)


def _min_channels(value):
    """Counts as ints, fractions as floats (the library tells them apart)."""
    return int(value) if value >= 1 else float(value)
