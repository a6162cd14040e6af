"""Fine-tuners: how a pruned model is trained back, one registry of them.

A fine-tuner turns a method's result (the masked model, and the
sub-networks the method passed through, if any) into a `TrainingPhase`
that a `Fitter` (or the trainers' loop) runs. "plain" is cross-entropy on
the training data; methods register others (EKG registers "ekg", its
memory-bank distillation, usable after any method that leaves a
trajectory of sub-networks).

A fine-tuner declares what it needs, so that callers (`prune`, the
trainers, the benchmarks) never branch on its name: `needs_trajectory`
(the method's sub-networks), `needs_sample_ids` (batches that carry sample
ids; `check_data` tests data for what it needs before a long search runs)
and `options_from` (its options from a run's settings, e.g. `verbose`).
"""

from ekg_keras.methods.options import NoOptions
from ekg_keras.registry import Registry
from ekg_keras.taylor import default_loss
from ekg_keras.training.fitting import TrainingPhase
from ekg_keras.training.fitting import check_ids

_FINETUNERS = Registry("fine-tuner")


class FineTuner:
    """Base of the fine-tuners.

    Attributes:
        name: The registered name.
        needs_trajectory: Whether it reads the sub-networks a method passed
            through (`PruningMethod.trajectory()`).
        needs_sample_ids: Whether it trains on batches that carry sample
            ids (`({"image": x, "id": id}, y)`, from
            `Fitter.training_data(with_ids=True)`).
        Options: A frozen dataclass of the options a run may set by name
            (the trainers' `--finetuner_options`), validated before the run
            starts; its fields are keyword arguments of `phase`.
    """

    name = None
    needs_trajectory = False
    needs_sample_ids = False
    Options = NoOptions

    def check_data(self, data):
        """Checks that it can fine-tune on `data`, before a search runs.

        The default checks sample ids when `needs_sample_ids`: a
        `tf.data.Dataset` must carry them, `(x, y)` arrays get theirs from
        the `Fitter`.

        Args:
            data: The training data a `Fitter` will be given.

        Raises:
            ValueError: If `data` lacks what the fine-tuner needs.
        """
        if self.needs_sample_ids and not isinstance(data, (tuple, list)):
            check_ids(data)

    def phase(
        self,
        model,
        epochs,
        fitter,
        trajectory=None,
        apply_keep=None,
        **options,
    ):
        """The `TrainingPhase` that fine-tunes `model`.

        Args:
            model: The masked model to fine-tune (trained in place).
            epochs: Epochs of fine-tuning.
            fitter: The `Fitter` that will run the phase (for the data in a
                fixed order and the strategy).
            trajectory: The method's `Trajectory`, for fine-tuners that
                need one.
            apply_keep: Writes one of its keep configurations into `model`
                (a method's own, e.g. with EKG's kernel rescale).
            **options: Fine-tuner options.
        """
        raise NotImplementedError

    def options_from(self, settings):
        """Its options taken from a run's settings (a trainer's flags and
        data source, `prune`'s `verbose`), so callers need not know the
        fine-tuner.

        Args:
            settings: Dict of run settings.

        Returns:
            A dict of options for `phase`.
        """
        del settings
        return {}


class PlainFineTuning(FineTuner):
    """Cross-entropy on the (augmented) training data, the masks fixed."""

    name = "plain"

    def phase(
        self,
        model,
        epochs,
        fitter,
        trajectory=None,
        apply_keep=None,
        **options,
    ):
        if options:
            raise ValueError(
                "Plain fine-tuning takes no options. Received: "
                f"{', '.join(sorted(options))}"
            )
        return TrainingPhase(
            "finetune", model, epochs, loss=default_loss(model)
        )


def register_finetuner(finetuner_class):
    """Class decorator registering a `FineTuner` under its `name`.

    Raises:
        ValueError: If the name is missing or taken.
    """
    name = finetuner_class.name
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"{finetuner_class.__name__}.name should be a non-empty string."
            f" Received: {name!r}"
        )
    return _FINETUNERS.register(name, finetuner_class)


def names():
    """The registered fine-tuner names, sorted."""
    return _FINETUNERS.names()


def get(name):
    """A new instance of the fine-tuner registered as `name`.

    Raises:
        ValueError: For an unknown name, listing the registered ones.
    """
    return _FINETUNERS.get(name)()


def finetune(
    method, epochs, fitter, finetuner=None, *, settings=None, **options
):
    """Fine-tunes a finished method's masked model in place.

    Args:
        method: A `PruningMethod` after `run`.
        epochs: Epochs of fine-tuning.
        fitter: The `Fitter` that runs the phase.
        finetuner: A fine-tuner name; default the method's own.
        settings: Run settings the fine-tuner takes options from
            (`FineTuner.options_from`, e.g. `{"verbose": 0}`).
        **options: Options of the fine-tuner (over those of `settings`).

    Returns:
        The fine-tuned masked model (`method.model`).

    Raises:
        ValueError: For a method that has no separate fine-tuning, or a
            fine-tuner that needs a trajectory the method did not leave.
    """
    tuner = get(resolve(method, finetuner))
    trajectory = method.trajectory() if tuner.needs_trajectory else None
    if tuner.needs_trajectory and trajectory is None:
        raise ValueError(
            f"Fine-tuner {tuner.name!r} learns from the sub-networks a "
            f"method passed through; method {method.name!r} leaves none."
        )
    return finetune_model(
        method.model,
        epochs,
        fitter,
        tuner,
        trajectory=trajectory,
        apply_keep=method.apply_keep,
        settings=settings,
        **options,
    )


def finetune_model(
    model,
    epochs,
    fitter,
    finetuner,
    *,
    trajectory=None,
    apply_keep=None,
    settings=None,
    **options,
):
    """Fine-tunes a masked model in place, without the method object
    (e.g. a model and a trajectory that an earlier run saved).

    Args:
        model: The masked model.
        epochs: Epochs of fine-tuning.
        fitter: What runs the phase: a `Fitter`, or any object with its
            `fit(phase)`, `ordered_data`, `training_data` and `strategy`
            (the trainers' own).
        finetuner: A fine-tuner name or `FineTuner` instance.
        trajectory: The method's `Trajectory`, for fine-tuners that need
            one.
        apply_keep: Writes one of the method's keep configurations into
            `model` (default: the plain masks).
        settings: Run settings the fine-tuner takes options from
            (`FineTuner.options_from`).
        **options: Options of the fine-tuner (over those of `settings`).

    Returns:
        `model`, fine-tuned.

    Raises:
        ValueError: For an unknown fine-tuner, or one that needs a
            trajectory when none is given.
    """
    tuner = get(finetuner) if isinstance(finetuner, str) else finetuner
    if tuner.needs_trajectory and trajectory is None:
        raise ValueError(
            f"Fine-tuner {tuner.name!r} learns from the sub-networks a "
            "method passed through: pass their `trajectory`."
        )
    options = {**tuner.options_from(dict(settings or {})), **options}
    fitter.fit(
        tuner.phase(
            model,
            epochs,
            fitter,
            trajectory=trajectory,
            apply_keep=apply_keep,
            **options,
        )
    )
    return model


def resolve(method, finetuner=None):
    """The fine-tuner name for `method` (its default unless given).

    Raises:
        ValueError: If the method trains while pruning (no fine-tuning).
    """
    if finetuner is None:
        finetuner = method.finetuner
    if finetuner is None:
        raise ValueError(
            f"Method {method.name!r} trains while it prunes; its training "
            "is the fine-tuning, so it takes no separate one."
        )
    get(finetuner)  # Validates the name.
    return finetuner


register_finetuner(PlainFineTuning)
