"""CIFAR-10/100 and ImageNet-2012 input pipelines on TensorFlow Datasets.

The pipelines never download anything unless asked to: `cifar(...,
download=True)` downloads and prepares CIFAR, and `imagenet(...,
manual_dir=...)` prepares ImageNet from the archives downloaded by hand.
Otherwise a data set that is not prepared in `data_dir` raises a
`FileNotFoundError` that says how to prepare it.

Elements are `(image, label)`, or with `with_ids=True`
`({"image": image, "id": id}, label)`, where `image` is float32
`[H, W, 3]`, `label` int32 and `id` the int64 index of the example within
the requested split (in the split's fixed on-disk order, so the same example
keeps the same id across calls and epochs). All are batched.
"""

import dataclasses
import functools
import numbers
import os

from ekg_keras._backend import tf
from ekg_keras.data import preprocessing

CIFAR_STATS = {
    "cifar10": (preprocessing.CIFAR10_MEAN, preprocessing.CIFAR10_STD),
    "cifar100": (preprocessing.CIFAR100_MEAN, preprocessing.CIFAR100_STD),
}
IMAGENET_NAME = "imagenet2012"
IMAGENET_ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
IMAGENET_CATALOG_URL = (
    "https://www.tensorflow.org/datasets/catalog/imagenet2012"
)


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    """Size of a prepared split, e.g. to compute `steps_per_epoch`.

    Attributes:
        num_examples: Number of examples in the split (slice strings such as
            `"train[:90%]"` count only the slice).
        num_classes: Number of classes of the data set's `label` feature.
    """

    num_examples: int
    num_classes: int


def cifar(
    name="cifar10",
    split="train",
    batch_size=128,
    data_dir=None,
    training=False,
    with_ids=False,
    shuffle_buffer=10_000,
    seed=0,
    download=False,
    input_context=None,
    augment=None,
):
    """Builds a batched CIFAR-10 or CIFAR-100 pipeline.

    Images are normalised with the EKG reference code's statistics
    (`preprocessing.CIFAR10_MEAN`, ...) on 0..255 pixel values. With
    `training=True` the examples are shuffled and augmented with a random
    horizontal flip, a 4-pixel reflect padding and a random 32x32 crop, and
    the last incomplete batch is dropped.

    Args:
        name: `"cifar10"` or `"cifar100"`.
        split: A TFDS split string, e.g. `"train"`, `"test"`,
            `"train[:90%]"`.
        batch_size: Global batch size (see `input_context`).
        data_dir: TFDS data directory; `None` for the TFDS default.
        training: Whether to shuffle, augment and drop the remainder.
        with_ids: Whether elements are `({"image", "id"}, label)` (see the
            module docstring) instead of `(image, label)`.
        shuffle_buffer: Size of the shuffle buffer (training only).
        seed: Seed of the file and example shuffles and of the augmentation.
        download: Whether to download and prepare the data set in
            `data_dir` when it is not prepared there (needs internet).
        input_context: Optional `tf.distribute.InputContext`: the examples
            are sharded across input pipelines (before shuffling) and
            batched by the per-replica batch size.
        augment: Whether to augment; defaults to `training`. With
            `training=True, augment=False` the examples are shuffled but
            keep the evaluation preprocessing, as EKG fine-tuning wants
            (it draws its own augmented views in the train step).

    Returns:
        A `tf.data.Dataset`.

    Raises:
        ValueError: If an argument is out of range.
        FileNotFoundError: If the data set is not prepared in `data_dir` and
            `download=False`.
    """
    if name not in CIFAR_STATS:
        raise ValueError(
            f"`name` should be one of {sorted(CIFAR_STATS)}. "
            f"Received: name={name!r}"
        )
    _check_pipeline_arguments(split, batch_size, shuffle_buffer, seed)
    builder = _tfds().builder(name, data_dir=data_dir)
    dataset = _load(
        builder,
        split,
        shuffle_files=training and not with_ids,
        seed=seed,
        prepare=builder.download_and_prepare if download else None,
        how_to_prepare=(
            "Pass download=True to download and prepare it there (needs "
            f"internet), or run `tfds build {name} --data_dir=DIR` and pass "
            "data_dir=DIR."
        ),
    )
    mean, std = CIFAR_STATS[name]
    return pipeline(
        dataset,
        functools.partial(_cifar_preprocess, mean=mean, std=std),
        batch_size=batch_size,
        training=training,
        with_ids=with_ids,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
        input_context=input_context,
        augment=augment,
    )


def imagenet(
    split="train",
    batch_size=256,
    data_dir=None,
    manual_dir=None,
    image_size=224,
    training=False,
    with_ids=False,
    shuffle_buffer=10_000,
    seed=0,
    input_context=None,
    augment=None,
):
    """Builds a batched ImageNet-2012 (ILSVRC2012) pipeline.

    With `training=True` each image gets a random resized crop (area
    fraction in (0.08, 1), aspect ratio in (3/4, 4/3)) resized to
    `image_size`, and a random horizontal flip; the examples are shuffled
    and the last incomplete batch is dropped. For evaluation the shorter
    side is resized to `image_size / 0.875` and the centre
    `image_size x image_size` is cropped. Images are then normalised with
    the standard ImageNet statistics on 0..255 pixel values. JPEG decoding
    happens after shuffling, so the shuffle buffer holds encoded images.

    Args:
        split: A TFDS split string, e.g. `"train"`, `"validation"`.
        batch_size: Global batch size (see `input_context`).
        data_dir: TFDS data directory; `None` for the TFDS default.
        manual_dir: Directory holding `ILSVRC2012_img_train.tar` and
            `ILSVRC2012_img_val.tar`. When given and the data set is not yet
            prepared in `data_dir`, it is prepared from them (this takes
            hours). When `None`, nothing is prepared.
        image_size: Side of the square output images.
        training: Whether to shuffle, augment and drop the remainder.
        with_ids: Whether elements are `({"image", "id"}, label)` (see the
            module docstring) instead of `(image, label)`.
        shuffle_buffer: Size of the shuffle buffer (training only).
        seed: Seed of the file and example shuffles and of the augmentation.
        input_context: Optional `tf.distribute.InputContext`: the examples
            are sharded across input pipelines (before shuffling) and
            batched by the per-replica batch size.
        augment: Whether to augment; defaults to `training`. With
            `training=True, augment=False` the examples are shuffled but
            keep the evaluation preprocessing, as EKG fine-tuning wants
            (it draws its own augmented views in the train step).

    Returns:
        A `tf.data.Dataset`.

    Raises:
        ValueError: If an argument is out of range.
        FileNotFoundError: If the data set is not prepared in `data_dir` and
            `manual_dir` is `None` or lacks the archives.
    """
    _check_pipeline_arguments(split, batch_size, shuffle_buffer, seed)
    preprocessing.check_positive_int("image_size", image_size)
    tfds = _tfds()
    builder = tfds.builder(IMAGENET_NAME, data_dir=data_dir)
    prepare = None
    if manual_dir is not None:
        prepare = functools.partial(_prepare_imagenet, builder, manual_dir)
    dataset = _load(
        builder,
        split,
        shuffle_files=training and not with_ids,
        seed=seed,
        decoders={"image": tfds.decode.SkipDecoding()},
        prepare=prepare,
        how_to_prepare=_imagenet_how_to(),
    )
    return pipeline(
        dataset,
        functools.partial(_imagenet_preprocess, image_size=image_size),
        batch_size=batch_size,
        training=training,
        with_ids=with_ids,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
        input_context=input_context,
        augment=augment,
    )


def load_split_info(name, split="train", data_dir=None):
    """Reads the size of a split of a prepared TFDS data set.

    Only the data set's metadata is read; nothing is downloaded.

    Args:
        name: A TFDS name with a `label` class feature, e.g. `"cifar10"`,
            `"cifar100"` or `"imagenet2012"`.
        split: A TFDS split string, e.g. `"train"` or `"train[:90%]"`.
        data_dir: TFDS data directory; `None` for the TFDS default.

    Returns:
        A `SplitInfo`.

    Raises:
        FileNotFoundError: If the data set is not prepared in `data_dir`.
    """
    builder = _tfds().builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        how_to = (
            _imagenet_how_to()
            if name == IMAGENET_NAME
            else f"Run `tfds build {name} --data_dir=DIR` or call "
            "`cifar(..., download=True)`, and pass data_dir=DIR."
        )
        raise FileNotFoundError(_not_prepared_message(builder, how_to))
    return SplitInfo(
        num_examples=int(builder.info.splits[split].num_examples),
        num_classes=int(builder.info.features["label"].num_classes),
    )


def _tfds():
    """Imports `tensorflow_datasets` on first use: it is slow to import."""
    import tensorflow_datasets  # pylint: disable=g-import-not-at-top

    return tensorflow_datasets


def _check_pipeline_arguments(split, batch_size, shuffle_buffer, seed):
    """Raises a ValueError naming the first out-of-range argument."""
    if not isinstance(split, str) or not split:
        raise ValueError(
            "`split` should be a non-empty TFDS split string such as "
            f"'train' or 'train[:90%]'. Received: split={split!r}"
        )
    preprocessing.check_positive_int("batch_size", batch_size)
    preprocessing.check_positive_int("shuffle_buffer", shuffle_buffer)
    # An explicit seed keeps the file order identical on every input
    # pipeline, which `dataset.shard` relies on.
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(
            f"`seed` should be an integer. Received: seed={seed!r}"
        )


def _imagenet_how_to():
    """The instructions to prepare ImageNet-2012."""
    return (
        f"Download {' and '.join(IMAGENET_ARCHIVES)} into a directory and "
        f"pass manual_dir=<that directory>, see {IMAGENET_CATALOG_URL}."
    )


def _not_prepared_message(builder, how_to_prepare):
    """The error message for a data set that is not prepared."""
    return (
        f"The TFDS data set {builder.name!r} is not prepared in "
        f"{os.fspath(builder.data_dir)}. {how_to_prepare}"
    )


def _load(
    builder,
    split,
    shuffle_files,
    seed,
    decoders=None,
    prepare=None,
    how_to_prepare="",
):
    """Reads a split, preparing it first with `prepare` if it is missing.

    The split is read before anything is prepared, so a prepared (or
    mocked) data set never triggers a download.

    Args:
        builder: A `tfds.core.DatasetBuilder`.
        split: A TFDS split string.
        shuffle_files: Whether to shuffle the file order (seeded by `seed`).
        seed: Seed of the file shuffle.
        decoders: Optional TFDS decoders, e.g. to skip image decoding.
        prepare: A no-argument callable that prepares the data set, or
            `None` to raise instead.
        how_to_prepare: The instructions of the error message.

    Returns:
        A `tf.data.Dataset` of TFDS feature dicts.

    Raises:
        FileNotFoundError: If the data set is not prepared and `prepare` is
            `None`.
    """
    read = functools.partial(
        builder.as_dataset,
        split=split,
        shuffle_files=shuffle_files,
        decoders=decoders,
        read_config=_tfds().ReadConfig(shuffle_seed=seed),
    )
    try:
        return read()
    except AssertionError as error:
        # TFDS signals a data set that is not prepared with AssertionError.
        if builder.is_prepared():
            raise
        if prepare is None:
            raise FileNotFoundError(
                _not_prepared_message(builder, how_to_prepare)
            ) from error
    prepare()
    return read()


def _prepare_imagenet(builder, manual_dir):
    """Prepares ImageNet-2012 from the archives in `manual_dir`.

    Args:
        builder: The `imagenet2012` `tfds.core.DatasetBuilder`.
        manual_dir: Directory that should hold the ILSVRC2012 archives.

    Raises:
        FileNotFoundError: If an archive is missing from `manual_dir`.
    """
    missing = [
        archive
        for archive in IMAGENET_ARCHIVES
        if not tf.io.gfile.exists(os.path.join(manual_dir, archive))
    ]
    if missing:
        raise FileNotFoundError(
            f"`manual_dir` should contain {', '.join(IMAGENET_ARCHIVES)}, "
            f"but {', '.join(missing)} is missing. Received: "
            f"manual_dir={manual_dir!r}. {_imagenet_how_to()}"
        )
    tfds = _tfds()
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
    )


def pipeline(
    dataset,
    preprocess,
    batch_size,
    training=False,
    with_ids=False,
    shuffle_buffer=10_000,
    seed=0,
    input_context=None,
    augment=None,
):
    """Ids, sharding, shuffling, preprocessing, batching and prefetching.

    The common tail of `cifar` and `imagenet`, for any data set of
    `{"image", "label"}` dicts in a fixed order (ids are positions in it).

    Args:
        dataset: A `tf.data.Dataset` of TFDS dicts with `image` and `label`.
        preprocess: `preprocess(image, seed) -> image`; `seed` is a shape
            `[2]` tensor when training and `None` otherwise.
        batch_size: Global batch size.
        training: Whether to shuffle, augment and drop the remainder.
        with_ids: Whether to attach the example ids.
        shuffle_buffer: Size of the shuffle buffer.
        seed: Seed of the shuffle and of the augmentation.
        input_context: Optional `tf.distribute.InputContext`.
        augment: Whether to pass `preprocess` a seed (training
            preprocessing) or `None` (evaluation preprocessing); defaults
            to `training`.

    Returns:
        The batched, prefetched `tf.data.Dataset`.
    """
    augment = training if augment is None else augment
    dataset = dataset.map(
        lambda example: {"image": example["image"], "label": example["label"]}
    )
    if with_ids:
        dataset = preprocessing.attach_ids(dataset)
    if input_context is not None:
        dataset = dataset.shard(
            input_context.num_input_pipelines,
            input_context.input_pipeline_id,
        )
        batch_size = input_context.get_per_replica_batch_size(batch_size)

    def finish(example, element_seed=None):
        image = preprocess(example["image"], element_seed)
        return preprocessing.pack_example(
            image, example["label"], example.get("id")
        )

    if training:
        dataset = dataset.shuffle(
            shuffle_buffer, seed=seed, reshuffle_each_iteration=True
        )
    if augment:
        dataset = preprocessing.with_seeds(dataset, seed)
    dataset = dataset.map(finish, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=training)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _cifar_preprocess(image, seed, mean, std):
    """Pad-crop-flip (when `seed` is given), then normalisation."""
    image = tf.cast(image, tf.float32)
    if seed is not None:
        image = preprocessing.pad_crop_flip(image, seed)
    return preprocessing.normalize(image, mean, std)


def _imagenet_preprocess(image_bytes, seed, image_size):
    """Decodes; random crop and flip (`seed` given) or centre crop."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    if seed is None:
        image = preprocessing.center_crop(image, image_size)
    else:
        crop_seed, flip_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, num=2)
        )
        image = preprocessing.random_resized_crop(image, image_size, crop_seed)
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return preprocessing.normalize(
        image, preprocessing.IMAGENET_MEAN, preprocessing.IMAGENET_STD
    )
