"""Prune a ResNet-50 (or any zoo model) on ImageNet-2012.

    python trainers/imagenet.py --strategy=mirrored --data_dir=~/tfds \\
        --pretrained=resnet50.keras --method=ekg --flops=0.55

ImageNet comes through TensorFlow Datasets and cannot be downloaded
automatically: put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in a
directory and pass it as --manual_dir once; the data set is then prepared
in --data_dir (hours). The pipeline, stages and resume are those of
trainers/cifar.py.

`--preset` sets the defaults (any flag given wins; see trainers/presets.py):

* paper (the default): ResNet-50 at 55% of the FLOPs, 90 epochs of
  pre-training, 100 of fine-tuning, the methods' paper defaults.
* cpu: a smoke run of the whole pipeline, not a useful model: a ResNet-20
  on 64x64 images, one epoch of 50 batches of 64 per stage, the methods'
  "cpu" option sets (sized for the digits' 10 classes: EKG's search, for
  one, still scores 16 images of each of the 1,000 classes).
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

FLAGS = flags.FlagValues()
cli.define_flags(FLAGS, presets.IMAGENET, "paper")
flags.DEFINE_string(
    "manual_dir",
    None,
    "Directory holding ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar;"
    " used once to prepare the data set in --data_dir.",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "image_size", 224, "Side of the square input images.", flag_values=FLAGS
)


def make_source():
    """The ImageNet `DataSource`."""
    if FLAGS.image_size < 8:
        raise cli.ConfigError(
            f"--image_size should be at least 8. Received: {FLAGS.image_size}"
        )
    return sources.imagenet(
        data_dir=FLAGS.data_dir,
        manual_dir=FLAGS.manual_dir,
        image_size=FLAGS.image_size,
    )


def main(argv=None):
    """Runs the trainer on `argv` (default `sys.argv`); returns the summary."""
    return cli.main(FLAGS, make_source, argv, dataset="imagenet2012")


if __name__ == "__main__":
    main()
