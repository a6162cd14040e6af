"""The method protocol: what every pruning method shares and implements.

A method subclasses `PruningMethod`, declares its knobs as an `Options`
dataclass, implements `search(fitter)` (choose the masks of the prepared
model, training through `fitter` if it trains), and registers itself with
`ekg_keras.methods.register_method`. The base does the rest: the shared
set-up (`PruningSetup`), option handling, checkpoint and TensorBoard
locations, the final check that the result meets its budget, and the log
line. `prune(method=...)`, the trainers' `--method` and the comparison
benchmark then reach it without an edit.
"""

import time
import warnings

import numpy as np

from ekg_keras import _backend as backend
from ekg_keras import _logging as log
from ekg_keras import ties
from ekg_keras import validation
from ekg_keras.flops import count_flops
from ekg_keras.methods.budget import TrainingBudget
from ekg_keras.methods.budget import check_epochs
from ekg_keras.methods.measured_latency import meet_measured_latency
from ekg_keras.methods.options import NoOptions
from ekg_keras.methods.options import make_options
from ekg_keras.methods.setup import PruningSetup
from ekg_keras.scope import PruningScope
from ekg_keras.training.fitting import Fitter
from ekg_keras.training.fitting import check_ids


class PruningMethod:
    """Base of every pruning method.

    Class attributes a method sets:
        Options: A frozen dataclass of its knobs (default: none).
        mode: "hard" (masks multiply the outputs) or "soft" (masked filters
            are zeroed in place and may regrow) for its prunable layers.
        needs_data: Whether it cannot run without training data.
        needs_sample_ids: Whether it trains on batches that carry sample
            ids: a `Fitter`'s `tf.data.Dataset` must yield `({"image": x,
            "id": id}, y)` (`(x, y)` arrays get theirs), checked when
            `run` starts.
        trains_while_pruning: True for methods whose training already is
            the fine-tuning (soft pruning): callers skip a separate
            fine-tuning stage.
        finetuner: The fine-tuner its result gets by default ("plain", or
            "ekg" for distillation from its trajectory's sub-networks).
        smoke_options: Options that make it run in seconds on a tiny model
            and data set, for tests and smoke runs over the registry (the
            results are not meaningful).
        backends: The Keras backends it runs on, or None for every one
            (its code is `keras.ops` and `fit`); on another backend it
            refuses to start with a one-line `NotImplementedError`.
        compare_options: Options for a CPU-sized run in the method
            comparison (`benchmarks/compare.py`: a few minutes on ResNet-20
            with 16x16 digits), where its defaults are sized for a GPU.
        option_sets: Option values by set name, declared in the method's
            options module (`OPTION_SETS`): "cpu" sizes its search to
            minutes on a CPU with the embedded digits, "paper" keeps its
            paper's defaults. The trainers' `--preset` picks one
            (`MethodEntry.options_for`).

    Args:
        model: The trained model; not modified.
        scope: The `ekg_keras.PruningScope` (budget, FLOPs convention,
            ignored layers, floors, `round_to`, latency measurement), or
            the fraction of FLOPs to keep in (0, 1].
        data: Training data (an `(x, y)` tuple of arrays, or a
            `tf.data.Dataset` of `(inputs, labels)` batches), if the method
            uses any.
        options: An `Options` instance (keyword options override it).
        strategy: `tf.distribute` strategy (default: the one in scope).
        checkpoint_dir: Where a method that checkpoints saves its state
            and resumes from.
        tensorboard_dir: Where a method writes TensorBoard scalars.
        verbose: 0 silent, 1 progress lines.
        **option_values: The method's options by name; names of scope
            fields (`round_to=8`, `latency=0.5`, ...) replace the scope's.

    Attributes:
        name: The name it was registered (and created) under.
        setup: The `PruningSetup` (masked model, graph, cost, levels).
        history: What the method did, step by step (method-specific).
        finished: Whether the last `run` reached its target (a method may
            stop early when asked to, e.g. EKG's `max_steps`).
        seconds: Wall time of the last `run`.
        measured_latency: Under a latency budget, the measured time of
            the pruned network over the original's (None otherwise, or
            with `latency_options={"attempts": 0}`).
    """

    name = None
    Options = NoOptions
    mode = "hard"
    needs_data = False
    needs_sample_ids = False
    trains_while_pruning = False
    finetuner = "plain"
    smoke_options = {}
    compare_options = {}
    option_sets = {}
    backends = None

    def __init__(
        self,
        model,
        scope,
        data=None,
        *,
        options=None,
        strategy=None,
        checkpoint_dir=None,
        tensorboard_dir=None,
        verbose=1,
        **option_values,
    ):
        label = self.name or type(self).__name__
        check_backend(type(self), label)
        option_values = validation.real_numbers(option_values)
        scope_values, option_values = PruningScope.split(option_values)
        scope = validation.real_number(scope)
        self.scope = PruningScope.of(scope, **scope_values)
        validation.warn_unused_scope_fields(self.scope)
        self.options = make_options(
            type(self).Options, options, option_values, method=label
        )
        if self.needs_data and data is None:
            raise ValueError(
                f"Method {label!r} learns from data: pass `data=` with "
                "labelled (inputs, labels) batches or an (x, y) tuple."
            )
        # The one validation pass, before any work (see ekg_keras.validation).
        model = validation.check_model(model, verbose)
        if data is not None:
            data = validation.check_data(data, model, self.scope.input_shape)
        self.data = data
        self.strategy = backend.check_strategy(strategy, f"Method {label!r}")
        self.checkpoint_dir = checkpoint_dir
        self.tensorboard_dir = tensorboard_dir
        self.verbose = verbose
        self.history = []
        self.seconds = None
        self.measured_latency = None
        self.finished = False
        self.setup = self.set_up(model, self.scope)
        self._runs = 0

    def set_up(self, model, scope):
        """The method's `PruningSetup` of `model` under `scope`."""
        return PruningSetup(
            model, scope, mode=self.mode, strategy=self.strategy
        )

    # What a method implements.

    def search(self, fitter):
        """Chooses the masks of `self.model`; returns the masked model.

        Args:
            fitter: Runs the `TrainingPhase`s the method needs (a
                `ekg_keras.training.Fitter`, or the trainers' loop).
        """
        raise NotImplementedError(
            f"{type(self).__name__} should implement search(fitter)."
        )

    @classmethod
    def training_budget(cls, epochs, options=None):
        """How the method spends `epochs` epochs of weight updates.

        For comparisons at equal cost (`ekg_keras.methods.TrainingBudget`).
        The default is for methods whose `run` updates no weights (one-shot
        scoring, searches on a frozen network): every epoch goes to the
        fine-tuning after it. A method that trains weights while it prunes
        overrides this, the way its paper splits its schedule.

        Args:
            epochs: The budget, an integer >= 1.
            options: The option values the method would run with (a dict;
                a method may depend on them, e.g. a warm-up turned off).

        Returns:
            A `TrainingBudget` whose phases add up to `epochs`.
        """
        del options
        epochs = check_epochs(epochs)
        return TrainingBudget(epochs, finetune_epochs=epochs)

    def trajectory(self):
        """The sub-networks the method passed through (a `Trajectory`), or
        None if it leaves none; EKG's distillation fine-tuning needs one."""
        return None

    # The protocol's public face.

    @property
    def model(self):
        """The masked model the method prunes (a clone of the user's)."""
        return self.setup.model

    @property
    def graph(self):
        """The masked model's `ChannelGraph`."""
        return self.setup.graph

    @property
    def target(self):
        """The fraction of FLOPs (or of latency) to keep."""
        return self.setup.target

    def run(self, fitter=None):
        """Runs the method and returns the masked model.

        Args:
            fitter: Runs training phases; by default a `Fitter` on `data`
                (needed only by methods that train).

        Returns:
            The masked model (hard masks, or zeroed soft-mode filters);
            `ekg_keras.slim` turns it into the small plain model.

        Raises:
            ValueError: For bad data or options.
            ekg_keras.numerics.NonFiniteError: If NaN or infinity appears
                in data, losses or scores.
            RuntimeError: If the result misses the FLOPs (or latency)
                target.
        """
        start = time.perf_counter()
        if self._runs:
            # Every run starts from the user's model again.
            self.setup = self.set_up(self.setup.source, self.scope)
        self._runs += 1
        if fitter is None and self.data is not None:
            fitter = Fitter(
                self.data, strategy=self.strategy, verbose=self.verbose
            )
        if self.needs_sample_ids and isinstance(fitter, Fitter):
            # Before the first step (the trainers' loop brings its own ids).
            if not isinstance(fitter.data, (tuple, list)):
                check_ids(fitter.data)
        self.finished = True
        self.measured_latency = None
        with validation.reported_input_errors():
            masked = self.search(fitter)
        if self.setup.budget == "latency" and self.setup.counter.attempts:
            masked = meet_measured_latency(self, masked, fitter)
        self.seconds = time.perf_counter() - start
        counts = self.setup.keep_counts(self.setup.current_keep())
        achieved = self.kept_fraction()
        budget = self.setup.budget_name
        if self.finished and achieved > self.target + 1e-9:
            raise RuntimeError(
                f"Method {self.name!r} kept {achieved:.4f} of the {budget}, "
                f"above its target {self.target}."
            )
        if self.verbose:
            log.info(self._summary(masked, counts, achieved))
        return masked

    def _summary(self, masked, counts, achieved):
        """The line about the masked model, its MACs and parameters
        measured from it (`count_flops`: what its slim model keeps, which
        the keep counts of a soft method's groups may misstate)."""
        counter = self.setup.flops_counter
        with warnings.catch_warnings():  # `prune` warns once, at the end.
            warnings.simplefilter("ignore")
            report = count_flops(
                masked,
                include_bn=self.scope.include_bn,
                include_fc=self.scope.include_fc,
                input_shape=self.scope.input_shape,
            )
        full_macs = counter.macs(counter.full)
        if self.setup.budget == "latency":
            cost = (
                f"{self.setup.full_macs:.3f} -> "
                f"{self.setup.counter.macs(counts):.3f} ms predicted, "
                f"{report.macs / full_macs:.1%} of the FLOPs"
            )
        else:
            achieved = report.macs / full_macs
            cost = f"{full_macs / 1e6:.2f}M -> {report.macs / 1e6:.2f}M MACs"
        return (
            f"ekg_keras: {self.name} kept {achieved:.1%} of the "
            f"{self.setup.budget_name} ({cost}, params "
            f"{counter.params(counter.full) / 1e6:.3f}M -> "
            f"{report.params / 1e6:.3f}M; target {self.target:.1%}) in "
            f"{self.seconds:.1f} s"
        )

    def kept_fraction(self):
        """FLOPs (or predicted latency) of the model's current masks, as a
        fraction of the original (what the slim model keeps, or at most
        that: a method whose result leaves constants in removed channels
        may count them more exactly, see `SoftPruning`)."""
        keep = self.setup.current_keep()
        return self.setup.fraction(self.setup.keep_counts(keep))

    def apply_keep(self, keep):
        """Writes per-group keep masks into the masked model."""
        self.setup.apply(keep)


def check_backend(method_class, label):
    """Refuses, in one line, a method that does not run on this backend.

    Raises:
        NotImplementedError: If `method_class.backends` leaves out the
            Keras backend of this process, naming the methods that run.
    """
    supported = method_class.backends
    if supported is None or backend.name() in supported:
        return
    from ekg_keras.methods import registry  # Imports this module.

    here = [
        name
        for name in registry.names()
        if registry.get(name).method_class.backends is None
        or backend.name() in registry.get(name).method_class.backends
    ]
    raise NotImplementedError(
        f"Method {label!r} runs on KERAS_BACKEND={'|'.join(supported)}. "
        f"Received: KERAS_BACKEND={backend.name()}. Methods that run on "
        f"{backend.name()}: {', '.join(here)}; or set KERAS_BACKEND="
        f"{supported[0]}."
    )


def keep_top(scores, keep_counts, sizes):
    """Boolean keep masks keeping the `keep_counts[g]` best-scored channels.

    Groups without scores (fixed groups) keep everything.
    """
    keep = []
    for values, count, size in zip(scores, keep_counts, sizes):
        mask = np.ones(size, dtype=bool)
        if values is not None and count < size:
            order = ties.order(values, descending=True)
            mask[:] = False
            mask[order[: int(count)]] = True
        keep.append(mask)
    return keep
