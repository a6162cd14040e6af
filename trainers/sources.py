"""The data sets a trainer reads, behind one interface.

A `DataSource` knows its size and classes and builds batched pipelines in
the library's element format (`(image, label)`, or `({"image", "id"},
label)` with ids), optionally sharded for `tf.distribute`.
"""

import dataclasses
import functools

import numpy as np
import tensorflow as tf

from ekg_keras import data as data_lib
from ekg_keras.data.preprocessing import pack_example
from ekg_keras.data.tfds_datasets import IMAGENET_NAME


class DataError(ValueError):
    """A data set that is missing or cannot be read as asked."""


@dataclasses.dataclass(frozen=True)
class DataSource:
    """A data set with a training and an evaluation split.

    Attributes:
        name: The data set's name, e.g. `"cifar10"`.
        num_classes: Number of classes.
        input_shape: `(H, W, C)` of the preprocessed images.
        num_train: Examples in the training split.
        num_eval: Examples in the evaluation split.
        build: `build(split, batch_size, training, augment, with_ids, seed,
            input_context)`, with `split` "train" or "eval", returning a
            batched `tf.data.Dataset`.
        views_augment: The in-step augmentation of EKG fine-tuning's two
            views (`EKGFineTuning(augment=...)`): "pad_crop_flip" for
            small images, "flip" when the pipeline crops (ImageNet).
    """

    name: str
    num_classes: int
    input_shape: tuple
    num_train: int
    num_eval: int
    build: object
    views_augment: str = "pad_crop_flip"

    def dataset(
        self,
        split,
        batch_size,
        *,
        training=False,
        augment=None,
        with_ids=False,
        seed=0,
        input_context=None,
    ):
        """A batched pipeline of `split` ("train" or "eval").

        Args:
            split: "train" or "eval".
            batch_size: Global batch size.
            training: Shuffle (afresh every epoch) and drop the remainder.
            augment: Training augmentation; defaults to `training`.
            with_ids: Carry the sample ids (for the memory bank).
            seed: Shuffle and augmentation seed.
            input_context: A `tf.distribute.InputContext`: shard and batch
                per replica.

        Returns:
            A `tf.data.Dataset`.
        """
        if split not in ("train", "eval"):
            raise ValueError(
                f"`split` should be 'train' or 'eval'. Received: {split!r}"
            )
        return self.build(
            split=split,
            batch_size=batch_size,
            training=training,
            augment=training if augment is None else augment,
            with_ids=with_ids,
            seed=seed,
            input_context=input_context,
        )


def digits(image_size=32):
    """The embedded scikit-learn digits (no download), resized.

    No augmentation, in the pipeline or in EKG fine-tuning's two views:
    flips and 4-pixel crops change what a digit is at this size.
    """
    loaded = data_lib.digits(image_size=image_size, seed=0)
    arrays = {
        "train": (loaded.x_train, loaded.y_train),
        "eval": (loaded.x_test, loaded.y_test),
    }

    def build(split, augment, **options):
        del augment  # See the docstring.
        images, labels = arrays[split]
        examples = tf.data.Dataset.from_tensor_slices(
            {"image": images, "label": labels}
        )
        return data_lib.pipeline(
            examples,
            lambda image, seed: image,
            shuffle_buffer=len(images),
            augment=False,
            **options,
        )

    return DataSource(
        name="digits",
        num_classes=loaded.num_classes,
        input_shape=loaded.input_shape,
        num_train=len(loaded.y_train),
        num_eval=len(loaded.y_test),
        build=build,
        views_augment=None,
    )


def cifar(name, data_dir=None, download=False):
    """CIFAR-10 or CIFAR-100 from TFDS (EKG reference code preprocessing).

    Raises:
        DataError: If the data set is not prepared in `data_dir` (and
            `download` is off), saying how to prepare it.
    """
    splits = {"train": "train", "eval": "test"}
    reader = functools.partial(
        data_lib.cifar, name, data_dir=data_dir, download=download
    )
    return _tfds_source(name, splits, reader, data_dir, (32, 32, 3))


def imagenet(data_dir=None, manual_dir=None, image_size=224):
    """ImageNet-2012 from TFDS, prepared from `manual_dir` if needed.

    Raises:
        DataError: If the data set is not prepared in `data_dir` and
            `manual_dir` does not hold the archives, saying how to get them.
    """
    splits = {"train": "train", "eval": "validation"}
    reader = functools.partial(
        data_lib.imagenet,
        data_dir=data_dir,
        manual_dir=manual_dir,
        image_size=image_size,
    )
    return _tfds_source(
        IMAGENET_NAME,
        splits,
        reader,
        data_dir,
        (image_size, image_size, 3),
        views_augment="flip",
    )


# What `synthetic` imitates: classes, training and evaluation examples,
# image side, and EKG fine-tuning's augmentation of each real data set.
SYNTHETIC = {
    "digits": (10, 1347, 450, 32, None),
    "cifar10": (10, 50_000, 10_000, 32, "pad_crop_flip"),
    "cifar100": (100, 50_000, 10_000, 32, "pad_crop_flip"),
    IMAGENET_NAME: (1000, 1_281_167, 50_000, 224, "flip"),
}


def synthetic(name, image_size=None, seed=0):
    """Random images in the shape, classes and split sizes of a data set.

    For measuring training and inference throughput without the data (as
    TensorFlow's official trainers' synthetic data): one batch of random
    normal images and random labels per replica is made once, in memory,
    and repeated, so the input pipeline costs next to nothing and the
    figures are the model's. Nothing is shuffled or augmented in the
    pipeline (EKG fine-tuning's in-step augmentation still runs); sample
    ids are unique per split, so the memory bank works as usual.

    Args:
        name: A key of `SYNTHETIC` ("digits", "cifar10", "cifar100" or
            "imagenet2012").
        image_size: Image side for digits and ImageNet (CIFAR is 32).
        seed: Seed of the random images and labels.

    Returns:
        A `DataSource` named `synthetic-<name>`.

    Raises:
        DataError: For an unknown name or an image side below 8.
    """
    if name not in SYNTHETIC:
        raise DataError(
            f"Synthetic data imitates one of {sorted(SYNTHETIC)}. Received: "
            f"{name!r}"
        )
    classes, num_train, num_eval, side, views_augment = SYNTHETIC[name]
    if image_size is not None and not name.startswith("cifar"):
        side = image_size
    if side < 8:
        raise DataError(
            f"--image_size should be at least 8. Received: {image_size}"
        )
    input_shape = (side, side, 3)

    def build(split, batch_size, training, with_ids, input_context, **_):
        count = num_train if split == "train" else num_eval
        pipelines, index = 1, 0
        if input_context is not None:
            pipelines = input_context.num_input_pipelines
            index = input_context.input_pipeline_id
            batch_size = input_context.get_per_replica_batch_size(batch_size)
        own = len(range(index, count, pipelines))  # This pipeline's share.
        rng = np.random.default_rng(seed)
        images = rng.standard_normal((batch_size, *input_shape), np.float32)
        labels = rng.integers(0, classes, batch_size).astype(np.int32)
        batches = tf.data.Dataset.from_tensors((images, labels))
        batches = batches.repeat(own // batch_size)
        rest = own % batch_size
        if rest and not training:
            last = (images[:rest], labels[:rest])
            batches = batches.concatenate(tf.data.Dataset.from_tensors(last))

        def element(position, batch):
            x, y = batch
            first = position * batch_size
            ids = first + tf.range(tf.shape(x, tf.int64)[0], dtype=tf.int64)
            ids = ids * pipelines + index if with_ids else None
            return pack_example(x, y, ids)

        return batches.enumerate().map(element).prefetch(tf.data.AUTOTUNE)

    return DataSource(
        name=f"synthetic-{name}",
        num_classes=classes,
        input_shape=input_shape,
        num_train=num_train,
        num_eval=num_eval,
        build=build,
        views_augment=views_augment,
    )


def _tfds_source(
    name, splits, reader, data_dir, input_shape, views_augment="pad_crop_flip"
):
    try:
        # Cheap (nothing is read yet), but fails at once when the data set
        # is missing, and prepares it first when it can.
        reader(split=splits["eval"], batch_size=1)
    except FileNotFoundError as error:
        raise DataError(str(error)) from error
    import tensorflow_datasets as tfds  # Slow to import; only here.

    builder = tfds.builder(name, data_dir=data_dir)

    def build(split, **options):
        return reader(split=splits[split], **options)

    return DataSource(
        name=name,
        num_classes=int(builder.info.features["label"].num_classes),
        input_shape=input_shape,
        num_train=_num_examples(builder, splits["train"], reader),
        num_eval=_num_examples(builder, splits["eval"], reader),
        build=build,
        views_augment=views_augment,
    )


def _num_examples(builder, split, reader):
    """From the TFDS metadata; counted when there is none (mocked data)."""
    try:
        return int(builder.info.splits[split].num_examples)
    except KeyError:
        batches = reader(split=split, batch_size=256)
        return int(
            batches.reduce(
                tf.constant(0, tf.int64),
                lambda count, batch: count + tf.shape(batch[1], tf.int64)[0],
            )
        )
