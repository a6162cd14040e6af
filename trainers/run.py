"""The staged run behind both trainers: pretrain, prune, finetune, export.

`Run(config, source, strategy).run()` does the stages of `config.stages`
in order and resumes after a crash: the run's state (which stages are done,
their wall times and results) is `state.json` in `model_dir`, each finished
stage leaves its model as `<stage>/model.keras`, every training phase backs
up at every epoch (`callbacks.Backup`), and methods that checkpoint (the
EKG search) do so in `prune/search`. A rerun of the same command skips the
stages that are done and continues the one that was interrupted.

The method comes from the registry (`ekg_keras.methods`): the prune stage
runs it (training through `fitting.RunFitter` when it trains), the
finetune stage runs its fine-tuner (skipped for methods that train while
they prune), so a registered method needs no edit here.

Layout of `model_dir`:

    state.json                the record: settings, stages done, runs,
                              seconds, results, and each file below with
                              its size and SHA-256
    state.copy.json           the record again (read if state.json is
                              damaged)
    summary.json              the final summary (written at the end)
    pretrain/model.keras      the trained unpruned model
    prune/model.keras         the pruned (masked) model
    prune/trajectory.npz      the sub-networks the method passed through
    prune/search/             the method's checkpoint (EKG search)
    finetune/model.keras      the fine-tuned masked model
    export/saved_model/       TF SavedModel of the slim model
    export/model.keras        the slim model
    logs/<stage>/             TensorBoard event files (per phase inside)
    <stage>/backup/<phase>/   training backups (deleted when a stage ends)

Files you can trust (`trainers.files`): every file is written to a
temporary name and renamed (the SavedModel directory, which TensorFlow
writes in place, is emptied first and recorded only when whole), and
recorded in `state.json` with its size and SHA-256. Before a rerun skips
or resumes anything, `check` compares every file of a finished stage with
its record: a stage whose file is missing or damaged is done again (said
in one line naming the file), or, when that stage is not in `--stages`
but a stage to run needs its output, the run stops with one line naming
the file and the flag to pass. Backups and the search checkpoint carry
their own records (`callbacks.Backup`, `ekg_keras.methods.SearchCheckpoint`):
a damaged backup resumes from the one before it or restarts its
training, a damaged search checkpoint restarts the prune stage. TensorBoard
logs are not recorded: a run never reads them.

Under `multi_worker_mirrored` every worker runs the same stages. The chief
writes the layout above; every other worker keeps its own state, stage
models, backups and search checkpoint under `workers/<name>/` (the same
layout), and writes no logs, exports or summary.
"""

import dataclasses
import json
import os
import shutil
import time

import keras

import ekg_keras
from ekg_keras.methods import CheckpointError
from ekg_keras.methods import SearchCheckpoint
from ekg_keras.methods import Trajectory
from ekg_keras.taylor import default_loss
from ekg_keras.training import TrainingPhase
from ekg_keras.training import finetuners
from trainers import callbacks as callbacks_lib
from trainers import files
from trainers import loop
from trainers import strategies
from trainers.config import STAGES
from trainers.config import ConfigError
from trainers.fitting import RunFitter
from trainers.models import build_model
from trainers.models import load_pretrained
from trainers.pipelines import Pipelines
from trainers.state import RunState

# Batches of training data that re-estimate batch-norm statistics after
# pruning.
RECALIBRATION_STEPS = 100

#: Settings that make a run directory another run's.
IDENTITY_SETTINGS = ("model", "method", "method_options", "flops", "pretrained")
#: Settings each stage's result depends on (besides the stages before it):
#: a stage that began in `model_dir` refuses a change of any of them.
STAGE_SETTINGS = {
    "pretrain": (
        "pretrain_epochs",
        "batch_size",
        "steps_per_epoch",
        "pretrain_learning_rate",
        "pretrain_decay_points",
        "pretrain_decay_rate",
        "pretrain_weight_decay",
        "momentum",
        "mixed_precision",
        "seed",
    ),
    "prune": ("min_channels", "preset", "search_epochs"),
    "finetune": (
        "finetuner",
        "finetuner_options",
        "epochs",
        "learning_rate",
        "decay_points",
        "decay_rate",
        "weight_decay",
    ),
    "export": (),
}
#: The record's name of summary.json's "stage" (rewritten every run).
SUMMARY = "summary"


@dataclasses.dataclass(frozen=True)
class Repair:
    """What a run does about a damaged file before its stages run.

    Attributes:
        error: The `DamagedFileError`; its recovery says what is done.
        redo: The stage marked not done, so it runs again, or None.
        delete: Paths removed (a damaged checkpoint and its backups).
    """

    error: files.DamagedFileError
    redo: str = None
    delete: tuple = ()


def _check_writable(directory):
    """Raises ConfigError unless `directory` exists as a writable directory
    or can be created (its nearest existing ancestor is one)."""
    path = os.path.abspath(directory)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
        what = "not a directory" if not os.path.isdir(path) else "not writable"
        raise ConfigError(
            "--model_dir should be a directory this process can write (or "
            f"create). Received: {directory} ({path} is {what})"
        )


def settings_of(stage):
    """The settings `stage` and every stage before it depend on."""
    return tuple(
        key
        for earlier in STAGES[: STAGES.index(stage) + 1]
        for key in STAGE_SETTINGS[earlier]
    )


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
        self.entry = config.method_entry
        self.pipelines = Pipelines(config, source, strategy)
        self.chief = strategies.is_chief(strategy)
        self.state = None
        self._models = {}
        self._method = None
        self._full = None
        self._checked = False
        self._evaluators = []
        self._repairs = []
        self._pretrained_file = None

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
        _check_writable(self.scratch())
        # The state of an earlier run in `model_dir` (empty if none); the
        # run continues it.
        self.state = RunState(self.scratch("state.json"))
        if config.pretrained:
            self._models["pretrain"] = load_pretrained(
                config.pretrained, self.source
            )
            self._pretrained_file = files.fingerprint(config.pretrained)
        self._check_same_run()
        self._repairs = self._check_files()
        if (
            "prune" in config.stages
            and not self.state.done("prune")
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
        """A `model_dir` holding another run's state is an error where a
        stage it began depends on a setting that differs now (a rerun
        would skip or resume that stage with the old setting)."""
        earlier = self.state.data.get("config", {})
        now = self.config.to_json()
        keys = set(IDENTITY_SETTINGS)
        for stage in STAGES:
            if stage in self.state.data["stages"]:
                keys.update(settings_of(stage))
        different = [
            k for k in sorted(keys) if k in earlier and earlier[k] != now[k]
        ]
        if different:
            raise ConfigError(
                f"--model_dir={self.config.model_dir} holds a run with other "
                "settings ("
                + ", ".join(
                    f"--{k}={earlier[k]} there, {now[k]} now" for k in different
                )
                + "): pass a new --model_dir to start over."
            )
        # The same --pretrained path with other contents is another run.
        recorded = self.state.data.get("pretrained_file")
        if self._pretrained_file and recorded and self.state.data["stages"]:
            reason = files.check(self.config.pretrained, recorded)
            if reason is not None:
                raise ConfigError(
                    f"--pretrained={self.config.pretrained} changed since "
                    f"--model_dir={self.config.model_dir} began with it "
                    f"({reason}): restore it, or pass a new --model_dir to "
                    "start over."
                )

    def _check_files(self):
        """Checks the files of finished stages against their records.

        Writes nothing; `run` makes the repairs returned.

        Returns:
            A list of `Repair`s, each error's recovery saying what the
            run does.

        Raises:
            DamagedFileError: If a damaged file's stage is not in
                `--stages` but a stage to run needs its output.
        """
        config, state = self.config, self.state
        damaged = self._damaged_files()
        redo = [
            s
            for s in STAGES
            if s in damaged and s in config.stages and not self._skip_reason(s)
        ]
        repairs = [
            Repair(damaged[s].with_recovery(f"redoing the {s} stage"), s)
            for s in redo
        ]
        runs = [
            s
            for s in config.stages
            if (s in redo or not state.done(s)) and not self._skip_reason(s)
        ]
        for stage in STAGES:
            if stage not in damaged or stage in redo:
                continue
            flag = f"add {stage} to --stages to redo it"
            needing = [s for s in runs if stage in self._inputs(s, runs)]
            if needing:
                raise damaged[stage].with_recovery(
                    f"the {needing[0]} stage needs it; {flag}"
                )
            repairs.append(
                Repair(damaged[stage].with_recovery(f"not needed now; {flag}"))
            )
        if SUMMARY in damaged:
            repairs.append(
                Repair(
                    damaged[SUMMARY].with_recovery(
                        "rewritten at the end of this run"
                    )
                )
            )
        if "prune" in runs:
            repairs.extend(self._check_search())
        return repairs

    def _damaged_files(self):
        """`{stage: DamagedFileError}` for the first damaged file of each
        finished stage (and of summary.json)."""
        state = self.state
        damaged = {}
        for name, record in state.files().items():
            stage = record["stage"]
            if stage in damaged or (stage != SUMMARY and not state.done(stage)):
                continue  # Written by a stage that will run again.
            reason = files.check(self.scratch(name), record)
            if reason is not None:
                damaged[stage] = files.DamagedFileError(
                    self.scratch(name), reason
                )
        # Runs recorded before files were: their stage models must be there.
        for stage in ("pretrain", "prune", "finetune"):
            path = self.scratch(stage, "model.keras")
            if (
                state.done(stage)
                and not state.files(stage)
                and not os.path.exists(path)
            ):
                damaged.setdefault(
                    stage, files.DamagedFileError(path, "missing")
                )
        return damaged

    def _check_search(self):
        """The repair of a damaged search checkpoint of the prune stage,
        which will run (none if it is intact or absent)."""
        search = self.scratch("prune", "search")
        checkpoint = SearchCheckpoint(search)
        try:
            if checkpoint.exists():
                checkpoint.verify()
        except CheckpointError as error:
            damage = files.DamagedFileError(
                error.path,
                error.reason,
                "the prune stage starts over (its search checkpoint and "
                "backups are deleted)",
            )
            return [
                Repair(damage, delete=(search, self.scratch("prune", "backup")))
            ]
        return []

    def _inputs(self, stage, runs):
        """The stages whose output `stage` reads, given the stages to run."""
        if stage == "prune":
            return () if self.config.pretrained else ("pretrain",)
        if stage == "finetune":
            return ("prune",)
        if stage == "export":
            if "finetune" in runs or self.state.done("finetune"):
                return ("finetune",)
            return ("prune",)
        return ()

    # The run.

    def run(self):
        """Runs the stages; returns the summary dict (also summary.json)."""
        if not self._checked:
            self.check()
        os.makedirs(self.scratch(), exist_ok=True)
        if self.state.repaired is not None:
            self._say(str(self.state.repaired))
        self.state.data["config"] = self.config.to_json()
        if self._pretrained_file is not None:
            self.state.data["pretrained_file"] = self._pretrained_file
        self.state.save()
        self._say(
            f"{strategies.describe(self.strategy)}; {self.source.name}: "
            f"{self.source.num_train} training and {self.source.num_eval} "
            "evaluation images"
        )
        for repair in self._repairs:
            self._say(str(repair.error))
            for path in repair.delete:
                shutil.rmtree(path, ignore_errors=True)
            if repair.redo is not None:
                self.state.reopen(repair.redo)
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
            # Finished stages need their training backups no more.
            shutil.rmtree(self.scratch(stage, "backup"), ignore_errors=True)
            self._say(f"{stage}: done in {seconds:.1f} s {results}")
        summary = self.summary()
        if self.chief:

            def write_summary(path):
                with open(path, "w") as handle:
                    json.dump(summary, handle, indent=2)

            self._write(SUMMARY, "summary.json", write_summary)
            self.state.save()
        return summary

    def _skip_reason(self, stage):
        if stage == "pretrain" and self.config.pretrained:
            return f"--pretrained={self.config.pretrained} is used"
        if stage == "finetune" and self.config.trains_while_pruning:
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
        fitter = self._fitter("pretrain", pretrain=True)
        fitter.fit(
            TrainingPhase(
                "pretrain",
                model,
                config.pretrain_epochs,
                loss=default_loss(model),
            )
        )
        self._keep("pretrain", model)
        return {
            "resumed_at_epoch": fitter.resumed_at_epoch,
            **self.evaluate(model),
        }

    def _prune(self):
        config = self.config
        pretrained = self.model_after("pretrain")
        fitter = self._fitter("prune")
        with self.strategy.scope():
            scope = ekg_keras.PruningScope(
                flops=config.flops,
                min_channels=_min_channels(config.min_channels),
                input_shape=self.source.input_shape,
            )
            self._method = self.entry.create(
                pretrained,
                scope,
                self.pipelines.ordered(),
                strategy=self.strategy,
                checkpoint_dir=self.scratch("prune", "search"),
                tensorboard_dir=self._log_dir("prune"),
                verbose=1 if self.chief else 0,
                **config.options(),
            )
        try:
            masked = self._method.run(fitter)
        except CheckpointError as error:
            # Damaged after `check` verified it: the next run redoes it.
            raise files.DamagedFileError(
                error.path,
                error.reason,
                "rerun the same command: the prune stage starts over",
            ) from None
        ekg_keras.recalibrate_batchnorm(
            masked, self.pipelines.ordered(), steps=RECALIBRATION_STEPS
        )
        # Counted at the data's size; the --pretrained model's own input
        # shapes (dynamic ones too) come back for the stages after.
        masked = self._method.setup.restore_inputs(masked)
        self._keep("prune", masked)
        trajectory = self._method.trajectory()
        if trajectory is not None:
            self._write("prune", "prune/trajectory.npz", trajectory.save)
        return {
            "resumed_at_epoch": fitter.resumed_at_epoch,
            "flops_fraction": self.flops_fraction(masked),
            **self.evaluate(masked),
        }

    def _finetune(self):
        config = self.config
        model = self.model_after("prune")
        tuner = finetuners.get(
            config.finetuner or self.entry.method_class.finetuner
        )
        trajectory = None
        if tuner.needs_trajectory:
            trajectory = self._trajectory(tuner)
        fitter = self._fitter("finetune")
        finetuners.finetune_model(
            model,
            config.epochs,
            fitter,
            tuner,
            trajectory=trajectory,
            apply_keep=self._method.apply_keep if self._method else None,
            settings=self._settings(),
            **config.finetuner_values(),
        )
        self._keep("finetune", model)
        return {
            "resumed_at_epoch": fitter.resumed_at_epoch,
            **self.evaluate(model),
        }

    def _trajectory(self, tuner):
        """The prune stage's sub-networks (from memory or its file)."""
        if self._method is not None and self._method.trajectory():
            return self._method.trajectory()
        path = self.scratch("prune", "trajectory.npz")
        if not os.path.exists(path):
            raise ConfigError(
                f"--finetuner={tuner.name} learns from the sub-networks the "
                f"method passed through; --method={self.config.method} left "
                f"none ({path} is missing)."
            )
        return self._read("prune", "prune/trajectory.npz", Trajectory.load)

    def _settings(self):
        """Run settings fine-tuners may read (see `FineTuner.options_from`)."""
        return {
            **self.config.to_json(),
            "views_augment": self.source.views_augment,
            "verbose": 1 if self.chief else 0,
        }

    def _export(self):
        model = self.model_after("finetune", "prune")
        saved_model = self.path("export", "saved_model")
        if self.chief:
            # TensorFlow writes the SavedModel in place: into an empty
            # directory, recorded once whole.
            shutil.rmtree(saved_model, ignore_errors=True)
            exported = []

            def export_to(keras_path):
                exported.append(
                    ekg_keras.export(model, saved_model, keras_path=keras_path)
                )

            self._write("export", "export/model.keras", export_to)
            small = exported[0]
            self.state.record_file(
                "export/saved_model", "export", files.fingerprint(saved_model)
            )
        else:
            small = (
                ekg_keras.slim(model)
                if ekg_keras.layers.prunable_layers(model)
                else model
            )
        self._models["export"] = small
        report = self.count_flops(small)
        return {
            "saved_model": saved_model,
            "flops_fraction": report.macs / self.full_macs(),
            "macs": report.macs,
            "params": report.params,
            **self.evaluate(small),
        }

    def _fitter(self, stage, pretrain=False):
        return RunFitter(
            self.config,
            self.pipelines,
            directory=self.scratch(stage),
            log_dir=self._log_dir(stage),
            full_macs=self.full_macs(),
            validate=self.evaluate,
            pretrain=pretrain,
            verbose=self.config.verbose if self.chief else 0,
            say=lambda message: self._say(f"{stage}: {message}"),
        )

    # Models between stages.

    def _keep(self, stage, model):
        """Holds `model` as `stage`'s output and saves it."""
        self._models[stage] = model
        self._write(stage, f"{stage}/model.keras", model.save)

    def _write(self, stage, name, write_to):
        """Writes file `name` of this worker's directory atomically and
        records it as `stage`'s (see `files.write`)."""
        fingerprint = files.write(self.scratch(name), write_to)
        self.state.record_file(name, stage, fingerprint)

    def _read(self, stage, name, reader):
        """Reads file `name` of this worker's directory, checked against
        its record (`files.read`).

        Raises:
            DamagedFileError: Naming the file and the way out.
        """
        try:
            return files.read(
                self.scratch(name), reader, self.state.files().get(name)
            )
        except files.DamagedFileError as error:
            raise error.with_recovery(
                f"delete it and rerun the same command to redo {stage}"
            ) from None

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
                    model = self._read(
                        stage, f"{stage}/model.keras", keras.saving.load_model
                    )
                self._models[stage] = model
                return model
        raise ConfigError(
            f"No model from {' or '.join(stages)} in {self.config.model_dir}"
            ": run that stage first."
        )

    def _log_dir(self, stage):
        return self.path("logs", stage) if self.chief else None

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
        return evaluator(self.pipelines.evaluation())

    def full_macs(self):
        """MACs of the unpruned model."""
        if self._full is None:
            reference = self._models.get("pretrain") or build_model(
                self.config, self.source
            )
            self._full = self.count_flops(reference)
        return self._full.macs

    def flops_fraction(self, model):
        return (
            self.count_flops(callbacks_lib.network_of(model)).macs
            / self.full_macs()
        )

    def count_flops(self, model):
        """`ekg_keras.count_flops` at the data's image size.

        A `--pretrained` model may take images of any size (KerasHub's
        default); its cost is counted at the size the run feeds it.
        """
        return ekg_keras.count_flops(model, input_shape=self.source.input_shape)

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
        full = self._full or self.count_flops(
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
