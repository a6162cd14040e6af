"""Prune a CIFAR ResNet (or any zoo model) on CIFAR-10/100 or the digits.

    python trainers/cifar.py                     # the embedded digits, here
    python trainers/cifar.py --preset=paper --dataset=cifar10 \\
        --method=ekg --strategy=mirrored --data_dir=~/tfds

`--preset` sets the defaults (any flag given wins; see trainers/presets.py):

* cpu (the default): ResNet-20, 15 epochs of pre-training, EKG at 45% of
  the FLOPs, 5 epochs of fine-tuning, and the method's "cpu" option set
  (a small search): minutes on a CPU with the digits.
* paper: ResNet-56, 200 epochs of pre-training (lr 0.1, x0.2 at 30/60/80%),
  100 of fine-tuning (lr 1e-2, x0.2 at 30/60/80%, weight decay 5e-4) and
  the method's paper defaults: hours on a GPU.

The whole pipeline (pre-training unless --pretrained, pruning by --method,
fine-tuning, SavedModel export) in one command, resumable: rerun the same
command after a crash. `--dataset=digits` (the default) needs no download;
CIFAR needs `tfds build cifar10 --data_dir=DIR` once (or --download).
See trainers/run.py for what lands in --model_dir.
"""

import os
import pathlib
import sys

if __package__ in (None, ""):  # Run as a script: make `trainers` importable.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from trainers import quiet  # noqa: E402

# Before anything imports TensorFlow: its start-up lines would precede a
# one-line error.
quiet.import_tensorflow()

from absl import flags  # noqa: E402

from trainers import cli  # noqa: E402
from trainers import presets  # noqa: E402
from trainers import sources  # noqa: E402

DATASETS = ("digits", "cifar10", "cifar100")

FLAGS = flags.FlagValues()
cli.define_flags(FLAGS, presets.CIFAR, "cpu")
flags.DEFINE_enum(
    "dataset",
    "digits",
    DATASETS,
    "Data set: digits (embedded, 1797 images, no download), cifar10, "
    "cifar100 (TFDS, prepared in --data_dir).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "image_size",
    32,
    "Side of the digits images (CIFAR is always 32).",
    flag_values=FLAGS,
)
flags.DEFINE_boolean(
    "download",
    False,
    "Download and prepare CIFAR in --data_dir when missing (needs internet).",
    flag_values=FLAGS,
)


def make_source():
    """The `DataSource` of --dataset."""
    if FLAGS.dataset == "digits":
        if FLAGS.image_size < 8:
            raise cli.ConfigError(
                "--image_size should be at least 8. Received: "
                f"{FLAGS.image_size}"
            )
        return sources.digits(image_size=FLAGS.image_size)
    return sources.cifar(
        FLAGS.dataset, data_dir=FLAGS.data_dir, download=FLAGS.download
    )


def main(argv=None):
    """Runs the trainer on `argv` (default `sys.argv`); returns the summary."""
    return cli.main(FLAGS, make_source, argv)


if __name__ == "__main__":
    main()
