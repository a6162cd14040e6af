"""Flags shared by the trainers, and their entry point.

Each script defines its flags at import, at module level (the common ones
through `define_flags`, in its own `FlagValues`, so both scripts can live
in one process), and reads them only in `main`, which turns them into a
`RunConfig`, a strategy and a data source, and calls `Run`. Bad input (an
unknown flag value, a setting out of range, a missing data set, a
`--pretrained` model that does not fit) ends the program with one line on
stderr and exit code 2, before anything is written.
"""

import dataclasses
import functools
import json
import os
import sys

import keras
from absl import flags
from absl import logging

from ekg_keras import methods
from ekg_keras import models
from ekg_keras.methods import options as options_lib
from ekg_keras.training import finetuners
from trainers import presets as presets_lib
from trainers import sources
from trainers import strategies
from trainers.config import STAGES
from trainers.config import ConfigError
from trainers.config import RunConfig
from trainers.run import Run
from trainers.sources import DataError

USAGE_ERROR_EXIT_CODE = 2

# The presets of each trainer's `FlagValues` (by id), which `parse` applies.
_PRESETS = {}


def define_flags(flag_values, presets=None, preset=None, **defaults):
    """Defines the common flags in `flag_values`, with trainer `defaults`.

    Args:
        flag_values: The trainer's own `absl.flags.FlagValues`.
        presets: The trainer's presets (`trainers.presets.CIFAR`, ...):
            flag values by preset name; with them a `--preset` flag picks
            one (`parse` applies it under the flags given).
        preset: The default preset's name; its values are the flags'
            defaults.
        **defaults: Default values by flag name (e.g. `model="resnet56"`,
            `epochs=100`) over the preset's; every flag here has a
            fallback.
    """
    if presets is not None:
        defaults = {**presets[preset], **defaults}
        _PRESETS[id(flag_values)] = presets
        flags.DEFINE_enum(
            "preset",
            preset,
            presets_lib.NAMES,
            "Defaults sized for a machine (flags given win): "
            + presets_lib.describe(presets)
            + ".",
            flag_values=flag_values,
        )

    def default(name, fallback):
        return defaults.get(name, fallback)

    def definer(kind):
        define = getattr(flags, f"DEFINE_{kind}")
        return functools.partial(define, flag_values=flag_values)

    define_enum, define_string, define_integer, define_float = (
        definer(kind) for kind in ("enum", "string", "integer", "float")
    )
    define_list, define_boolean = definer("list"), definer("boolean")

    define_enum(
        "strategy",
        default("strategy", "default"),
        strategies.STRATEGIES,
        "tf.distribute strategy: default (none), one_device, mirrored (all "
        "local GPUs, or the logical CPUs of --logical_cpus), "
        "multi_worker_mirrored (machines from TF_CONFIG, e.g. "
        f"{strategies.TF_CONFIG_EXAMPLE}), or tpu (see --tpu).",
    )
    define_string(
        "tpu",
        None,
        "For --strategy=tpu: the TPU's gRPC address, Cloud TPU name, or "
        "'local'.",
    )
    define_integer(
        "logical_cpus",
        0,
        "Split the CPU into this many logical devices (no GPU needed to try "
        "--strategy=mirrored); 0 keeps it whole.",
    )
    define_enum(
        "model", default("model", "resnet56"), models.names(), "Model to build."
    )
    define_string(
        "method",
        default("method", methods.default(with_data=True)),
        "Pruning method, one of the registered methods (checked when the "
        "run starts; a method registered with ekg_keras.methods."
        "register_method is one too): "
        + "; ".join(methods.describe().splitlines())
        + ".",
    )
    define_list(
        "method_options",
        [],
        "The method's own options as key=value pairs, e.g. "
        "--method_options=variant=poster,val_per_class=16 (names and "
        "defaults: the method's Options class; an option that follows a "
        "run setting, e.g. a batch size following --eval_batch_size, takes "
        "the setting unless given here).",
    )
    define_integer(
        "search_epochs",
        None,
        "Epochs of the method's own search training, for methods that have "
        f"one ({_followers('search_epochs')}); default: the --preset's "
        "option set (paper: the method's paper default).",
        lower_bound=1,
    )
    define_list(
        "finetuner_options",
        [],
        "The fine-tuner's own options as key=value pairs, e.g. "
        "--finetuner_options=num_teachers=2 (names and defaults: the "
        "fine-tuner's Options class).",
    )
    define_string(
        "finetuner",
        None,
        "Fine-tuning after pruning: "
        + ", ".join(finetuners.names())
        + " (default: the method's own: ekg after the EKG search, plain "
        "otherwise).",
    )
    define_float(
        "flops",
        default("flops", 0.45),
        "Fraction of the FLOPs to keep, in (0, 1]: 0.45 keeps 45%.",
    )
    define_string(
        "pretrained",
        None,
        "A .keras file of the trained model to prune; without it the model "
        "is trained first (stage pretrain).",
    )
    define_list(
        "stages",
        list(STAGES),
        "Stages to run, in order, from pretrain, prune, finetune (sfp, asfp "
        "and fpgm train in prune and skip it), export (SavedModel and .keras"
        " of the slim model). Stages done by an earlier run in --model_dir "
        "are skipped.",
    )
    define_integer(
        "epochs",
        default("epochs", 100),
        "Epochs of fine-tuning, or of the training of methods that train "
        "while they prune (sfp, asfp, fpgm).",
    )
    define_integer(
        "pretrain_epochs",
        default("pretrain_epochs", 200),
        "Epochs of pre-training.",
    )
    define_integer(
        "batch_size",
        default("batch_size", 128),
        "Global training batch size (split over replicas).",
    )
    define_integer(
        "eval_batch_size",
        default("eval_batch_size", 256),
        "Batch size of evaluation, of the methods' searches (their options "
        "that follow it) and of the memory bank.",
    )
    define_integer(
        "steps_per_epoch",
        0,
        "Cap on the training batches per epoch; 0 runs whole epochs.",
    )
    define_float(
        "learning_rate",
        default("learning_rate", 1e-2),
        "Initial learning rate of fine-tuning and soft pruning (SGD, "
        "Nesterov).",
    )
    define_list(
        "decay_points",
        default("decay_points", ["0.3", "0.6", "0.8"]),
        "Fractions of the run where the learning rate is multiplied by "
        "--decay_rate.",
    )
    define_float(
        "decay_rate", default("decay_rate", 0.2), "Learning-rate decay factor."
    )
    define_float(
        "weight_decay",
        default("weight_decay", 5e-4),
        "Weight decay of fine-tuning and soft pruning.",
    )
    define_float(
        "pretrain_learning_rate",
        default("pretrain_learning_rate", 0.1),
        "Initial learning rate of pre-training.",
    )
    define_list(
        "pretrain_decay_points",
        default("pretrain_decay_points", ["0.3", "0.6", "0.8"]),
        "Learning-rate decay points of pre-training (fractions of the run).",
    )
    define_float(
        "pretrain_decay_rate",
        default("pretrain_decay_rate", 0.2),
        "Learning-rate decay factor of pre-training.",
    )
    define_float(
        "pretrain_weight_decay",
        default("pretrain_weight_decay", 5e-4),
        "Weight decay of pre-training.",
    )
    define_float("momentum", 0.9, "SGD (Nesterov) momentum.")
    define_float(
        "min_channels",
        1,
        "Fewest channels a group keeps: a count >= 1, or a fraction in "
        "(0, 1) of its width.",
    )
    define_boolean("jit_compile", False, "Compile the train steps with XLA.")
    define_boolean(
        "sync_batchnorm",
        True,
        "Over several replicas, normalize with the statistics of the global "
        "batch, so results do not depend on the number of replicas and all "
        "workers keep identical weights.",
    )
    define_boolean(
        "mixed_precision",
        False,
        "Build the models this run creates with the mixed_float16 policy.",
    )
    define_string(
        "model_dir",
        None,
        "Directory of checkpoints, TensorBoard logs, summary.json and the "
        "exports; a rerun resumes there. Default: runs/<dataset>-<model>-"
        "<method>-<flops>.",
    )
    define_string("data_dir", None, "TensorFlow Datasets data directory.")
    define_boolean(
        "synthetic_data",
        False,
        "Train and evaluate on random images of the data set's shape, "
        "classes and size, made once in memory (no data set needed, next to "
        "no input-pipeline cost): to measure training and inference "
        "throughput. Default --model_dir: runs/synthetic-<dataset>-...",
    )
    define_integer(
        "backup_every_steps",
        0,
        "Also back up every this many batches (0: at epoch ends only).",
    )
    define_integer("seed", 1, "Seed of initialisation and shuffles.")
    define_integer(
        "verbose", 1, "Keras verbosity: 0 silent, 1 progress bars, 2 lines."
    )


def _followers(setting):
    """"method: option" for each registered name with an option that
    follows run setting `setting` (for help texts)."""
    found = []
    for name in methods.names():
        options_class = methods.get(name).method_class.Options
        option = options_lib.follower(options_class, setting)
        if option is not None:
            found.append(f"{name}: {option}")
    return ", ".join(found)


def config_from_flags(flag_values, dataset):
    """The `RunConfig` that the common flags describe.

    Args:
        flag_values: Parsed `FlagValues` holding the common flags.
        dataset: Data set name for the default `--model_dir` (a
            `--dataset` flag overrides it).

    Raises:
        ConfigError: For values out of range.
    """
    values = flag_values
    if "dataset" in values:
        dataset = values.dataset
    if values.synthetic_data:  # Never resumes or overwrites a real run.
        dataset = f"synthetic-{dataset}"
    model_dir = values.model_dir or os.path.join(
        "runs",
        f"{dataset}-{values.model}-{values.method}-{values.flops:g}",
    )
    settings = {
        field.name: getattr(values, field.name)
        for field in dataclasses.fields(RunConfig)
        if field.name in values
    }
    settings.update(
        model_dir=model_dir,
        method_options=tuple(values.method_options),
        finetuner_options=tuple(values.finetuner_options),
        stages=tuple(values.stages),
        decay_points=_floats(values, "decay_points"),
        pretrain_decay_points=_floats(values, "pretrain_decay_points"),
    )
    return RunConfig(**settings)


def _floats(flag_values, name):
    text = ",".join(flag_values[name].value)
    try:
        return tuple(float(v) for v in flag_values[name].value)
    except ValueError:
        raise ConfigError(
            f"--{name} should be comma-separated numbers. Received: {text!r}"
        ) from None


def main(flag_values, make_source, argv=None, dataset=None):
    """A trainer's entry point: parse, check, run; returns the summary.

    Bad input ends the program with one line on stderr and exit code 2
    (before anything is written); `--help` prints every flag. The order
    matters: the CPU split and a multi-worker strategy must come before
    TensorFlow initialises, which loading data does.

    Args:
        flag_values: The trainer's `FlagValues` (common flags defined by
            `define_flags`, plus its own).
        make_source: No-argument callable returning the `DataSource` (it
            reads the trainer's own flags); raises `DataError` or
            `ConfigError` for bad input.
        argv: Command line, program name first (default `sys.argv`).
        dataset: Data set name for the default `--model_dir`, when the
            trainer has no `--dataset` flag.
    """
    argv = sys.argv if argv is None else argv
    parse(flag_values, argv)
    try:
        config = config_from_flags(flag_values, dataset)
        strategies.split_cpu(flag_values.logical_cpus)
        strategy = strategies.create_strategy(
            flag_values.strategy, flag_values.tpu
        )
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_float16")
        keras.utils.set_random_seed(config.seed)
        source = (
            _synthetic_source(flag_values, dataset)
            if flag_values.synthetic_data
            else make_source()
        )
        run = Run(config, source, strategy)
        run.check()
    except (ConfigError, DataError, strategies.StrategyError) as error:
        fail(error, argv)
    try:
        summary = run.run()
    except ConfigError as error:  # A file found damaged as it is read.
        fail(error, argv)
    if run.chief:
        brief = {
            k: summary[k]
            for k in ("top1", "top5", "flops_fraction", "macs", "params")
            if k in summary
        }
        print(f"summary: {json.dumps(brief)}", flush=True)
    return summary


def _synthetic_source(flag_values, dataset):
    """Random data like the trainer's data set (`--synthetic_data`)."""
    name = flag_values.dataset if "dataset" in flag_values else dataset
    size = (
        flag_values["image_size"].value if "image_size" in flag_values else None
    )
    return sources.synthetic(name, image_size=size, seed=flag_values.seed)


def parse(flag_values, argv):
    """Parses `argv` into `flag_values`; `--help` prints help and exits 0.

    Unknown flags, bad values and positional arguments end the program with
    one line and exit code 2.
    """
    if any(arg in ("-h", "--help", "-help", "--helpfull") for arg in argv[1:]):
        print(f"usage: {os.path.basename(argv[0])} [--flag=value ...]\n")
        print(flag_values.get_help())
        sys.exit(0)
    flag_values.unparse_flags()  # Defaults again if parsed before.
    try:
        rest = flag_values(argv)
    except flags.Error as error:
        fail(error, argv)
    if len(rest) > 1:
        fail(
            "unexpected arguments (flags start with --): " + " ".join(rest[1:]),
            argv,
        )
    if id(flag_values) in _PRESETS:
        presets_lib.apply(flag_values, _PRESETS[id(flag_values)])
    # TensorFlow logs every SavedModel asset at INFO level through absl.
    logging.set_verbosity(logging.WARNING)


def fail(error, argv):
    """Ends the program: one line on stderr, exit code 2."""
    program = os.path.basename(argv[0]) if argv else "trainer"
    message = " ".join(str(error).split())
    print(f"{program}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(USAGE_ERROR_EXIT_CODE)
