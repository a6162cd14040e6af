"""Fine-tuners: how a pruned model is trained back, one registry of them.

A fine-tuner turns a method's result (the masked model, and the
sub-networks the method passed through, if any) into a `TrainingPhase`
that a `Fitter` (or the trainers' loop) runs. "plain" is cross-entropy on
the training data; methods register others (EKG registers "ekg", its
memory-bank distillation, usable after any method that leaves a
trajectory of sub-networks).
"""

from ekg_keras.registry import Registry
from ekg_keras.taylor import default_loss
from ekg_keras.training.fitting import TrainingPhase

_FINETUNERS = Registry("fine-tuner")


class FineTuner:
    """Base of the fine-tuners.

    Attributes:
        name: The registered name.
        needs_trajectory: Whether it reads the sub-networks a method passed
            through (`PruningMethod.trajectory()`).
    """

    name = None
    needs_trajectory = False

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
        data source), so trainers need not know the fine-tuner.

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


def finetune(method, epochs, fitter, finetuner=None, **options):
    """Fine-tunes a finished method's masked model in place.

    Args:
        method: A `PruningMethod` after `run`.
        epochs: Epochs of fine-tuning.
        fitter: The `Fitter` that runs the phase.
        finetuner: A fine-tuner name; default the method's own.
        **options: Options of the fine-tuner.

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
    phase = tuner.phase(
        method.model,
        epochs,
        fitter,
        trajectory=trajectory,
        apply_keep=method.apply_keep,
        **options,
    )
    fitter.fit(phase)
    return method.model


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
