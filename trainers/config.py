"""What a trainer run does, as one validated value (no flags in here)."""

import dataclasses

from ekg_keras import methods
from ekg_keras import models
from ekg_keras.methods import options as options_lib
from ekg_keras.training import finetuners
from trainers import presets

STAGES = ("pretrain", "prune", "finetune", "export")


class ConfigError(ValueError):
    """A run configuration that cannot work, found before anything runs."""


def first_line(error):
    """The first line of an exception's message (its type if empty), for
    one-line errors built on long library messages."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every setting of a trainer run (the trainers fill it from flags).

    Attributes:
        model: A name from `ekg_keras.models.names()`.
        method: A registered method (`ekg_keras.methods.names()`;
            default: the registry's default with data, the EKG search).
        method_options: The method's options as "key=value" strings
            (`--method_options`), over those the run settings give.
        preset: The option set of the method (`trainers.presets.NAMES`:
            "cpu" sizes its search for a CPU, "paper" keeps its paper
            defaults), under the run settings and `method_options`.
        search_epochs: Epochs of the method's own search training (the
            option that follows setting "search_epochs", e.g. NPPM's
            `epochs`), or None for the option set's.
        finetuner: The fine-tuner of stage finetune, or None for the
            method's own (`ekg_keras.training.finetuners.names()`).
        finetuner_options: The fine-tuner's options as "key=value" strings
            (`--finetuner_options`; names: its `Options` class).
        flops: Fraction of FLOPs to keep, in (0, 1].
        model_dir: Where checkpoints, summaries and exports go.
        stages: The stages to run, a subset of `STAGES` (run in that order).
        pretrained: A `.keras` file of the trained model, or None to
            pre-train (stage `pretrain`).
        epochs: Epochs of the stage that trains the pruned network:
            fine-tuning, or the training of methods that train while they
            prune (sfp, asfp, fpgm: they skip fine-tuning).
        pretrain_epochs: Epochs of pre-training.
        batch_size: Global batch size (split over replicas).
        eval_batch_size: Batch size of evaluation, search and memory bank.
        steps_per_epoch: Cap on the batches per epoch (0: the whole split).
        learning_rate, decay_points, decay_rate, weight_decay: The
            fine-tuning (and soft-pruning) schedule: piecewise constant,
            `learning_rate * decay_rate**k` after the k-th point (fractions
            of the run).
        pretrain_learning_rate, pretrain_decay_points, pretrain_decay_rate,
        pretrain_weight_decay: The same for pre-training.
        momentum: SGD (Nesterov) momentum.
        min_channels: Fewest channels a group keeps (int) or that fraction.
        jit_compile: Compile train steps with XLA.
        sync_batchnorm: Normalize with global-batch statistics over several
            replicas (see `loop.train`).
        mixed_precision: Build models with the `mixed_float16` policy.
        backup_every_steps: Checkpoint every this many batches as well as
            at every epoch end (0: epochs only).
        seed: Seed of initialisation, shuffles and augmentation.
        verbose: Keras verbosity (progress bars on the chief).
    """

    model: str
    method: str = methods.default(with_data=True)
    method_options: tuple = ()
    preset: str = "paper"
    search_epochs: int = None
    finetuner: str = None
    finetuner_options: tuple = ()
    flops: float = 0.45
    model_dir: str = "runs/default"
    stages: tuple = STAGES
    pretrained: str = None
    epochs: int = 100
    pretrain_epochs: int = 200
    batch_size: int = 128
    eval_batch_size: int = 256
    steps_per_epoch: int = 0
    learning_rate: float = 1e-2
    decay_points: tuple = (0.3, 0.6, 0.8)
    decay_rate: float = 0.2
    weight_decay: float = 5e-4
    pretrain_learning_rate: float = 0.1
    pretrain_decay_points: tuple = (0.3, 0.6, 0.8)
    pretrain_decay_rate: float = 0.2
    pretrain_weight_decay: float = 5e-4
    momentum: float = 0.9
    min_channels: float = 1
    jit_compile: bool = False
    sync_batchnorm: bool = True
    mixed_precision: bool = False
    backup_every_steps: int = 0
    seed: int = 1
    verbose: int = 1

    def __post_init__(self):
        check(self)

    @property
    def method_entry(self):
        """The registry entry of `method`."""
        return methods.get(self.method)

    @property
    def trains_while_pruning(self):
        """Whether the method's training is its fine-tuning (SFP, ...)."""
        return self.method_entry.method_class.trains_while_pruning

    def options(self):
        """The method's options: its option set of `preset`, then the run
        settings its option fields follow, then `method_options`."""
        entry = self.method_entry
        values = entry.options_for(self.preset)
        values.update(
            options_lib.from_settings(
                entry.method_class.Options, dataclasses.asdict(self)
            )
        )
        values.update(
            options_lib.parse(
                entry.method_class.Options, self.method_options, self.method
            )
        )
        return values

    @property
    def finetuner_entry(self):
        """The fine-tuner of stage finetune (None for a method that trains
        while it prunes and names none)."""
        name = self.finetuner or self.method_entry.method_class.finetuner
        return None if name is None else finetuners.get(name)

    def finetuner_values(self):
        """The fine-tuner's options from `finetuner_options`, typed."""
        tuner = self.finetuner_entry
        if tuner is None:
            if self.finetuner_options:
                raise ValueError(
                    f"Method {self.method!r} has no fine-tuning stage, so it "
                    "takes no fine-tuner options. Received: "
                    f"{list(self.finetuner_options)}"
                )
            return {}
        values = options_lib.parse(
            tuner.Options, self.finetuner_options, tuner.name
        )
        options_lib.make_options(
            tuner.Options, values=values, method=tuner.name
        )
        return values

    def to_json(self):
        """The settings as a JSON-ready dict (see `from_json`)."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_json(cls, settings):
        """The config that `to_json` wrote."""
        return cls(
            **{
                key: tuple(value) if isinstance(value, list) else value
                for key, value in settings.items()
            }
        )


def check(config):
    """Raises `ConfigError` naming the first setting out of range."""
    if config.model not in models.names():
        _fail("model", config.model, f"one of {', '.join(models.names())}")
    if config.method not in methods.names():
        _fail("method", config.method, f"one of {', '.join(methods.names())}")
    if config.preset not in presets.NAMES:
        _fail("preset", config.preset, f"one of {', '.join(presets.NAMES)}")
    _search_epochs(config)
    try:
        options_lib.make_options(
            config.method_entry.method_class.Options,
            values=config.options(),
            method=config.method,
        )
    except ValueError as error:
        raise ConfigError(f"--method_options: {first_line(error)}") from None
    if config.finetuner is not None and (
        config.finetuner not in finetuners.names()
    ):
        _fail(
            "finetuner",
            config.finetuner,
            f"one of {', '.join(finetuners.names())}",
        )
    try:
        config.finetuner_values()
    except ValueError as error:
        raise ConfigError(f"--finetuner_options: {first_line(error)}") from None
    if isinstance(config.flops, bool) or not 0 < config.flops <= 1:
        _fail(
            "flops",
            config.flops,
            "the fraction of FLOPs to keep, in (0, 1] (0.45 keeps 45%)",
        )
    unknown = [s for s in config.stages if s not in STAGES]
    if not config.stages or unknown:
        _fail(
            "stages",
            ",".join(config.stages),
            f"a comma-separated subset of {','.join(STAGES)}",
        )
    if not config.model_dir:
        _fail("model_dir", config.model_dir, "a directory")
    for name in ("epochs", "pretrain_epochs", "batch_size"):
        _positive_int(config, name)
    _positive_int(config, "eval_batch_size")
    for name in ("steps_per_epoch", "backup_every_steps"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            _fail(name, value, "an integer >= 0")
    for prefix in ("", "pretrain_"):
        _schedule(config, prefix)
    if not 0 <= config.momentum < 1:
        _fail("momentum", config.momentum, "a number in [0, 1)")
    if (
        not (
            config.min_channels >= 1 and float(config.min_channels).is_integer()
        )
        and not 0 < config.min_channels < 1
    ):
        _fail(
            "min_channels",
            config.min_channels,
            "a channel count >= 1 or a fraction in (0, 1)",
        )


def _schedule(config, prefix):
    rate = getattr(config, f"{prefix}learning_rate")
    if not rate > 0:
        _fail(f"{prefix}learning_rate", rate, "a positive number")
    points = getattr(config, f"{prefix}decay_points")
    if any(not 0 < p < 1 for p in points) or list(points) != sorted(points):
        _fail(
            f"{prefix}decay_points",
            ",".join(map(str, points)),
            "increasing fractions of the run in (0, 1)",
        )
    decay = getattr(config, f"{prefix}decay_rate")
    if not 0 < decay <= 1:
        _fail(f"{prefix}decay_rate", decay, "a number in (0, 1]")
    decay = getattr(config, f"{prefix}weight_decay")
    if not decay >= 0:
        _fail(f"{prefix}weight_decay", decay, "a number >= 0")


def _search_epochs(config):
    """Refuses a `search_epochs` out of range, or one the method has no
    option for (it would have no effect)."""
    if config.search_epochs is None:
        return
    _positive_int(config, "search_epochs")
    if not _follows(config.method, "search_epochs"):
        searching = [n for n in methods.names() if _follows(n, "search_epochs")]
        raise ConfigError(
            f"--search_epochs applies to methods that train a search "
            f"({', '.join(searching)}); method {config.method!r} has none. "
            f"Received: {config.search_epochs}"
        )


def _follows(method, setting):
    """Whether an option of `method` follows the run setting `setting`."""
    options_class = methods.get(method).method_class.Options
    return options_lib.follower(options_class, setting) is not None


def _positive_int(config, name):
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _fail(name, value, "a positive integer")


def _fail(name, value, expected):
    raise ConfigError(f"--{name} should be {expected}. Received: {value!r}")
