"""Tests for the TFDS pipelines, on mocked data: nothing is downloaded."""

import os
import socket

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from ekg_keras.data import cifar
from ekg_keras.data import imagenet
from ekg_keras.data import load_split_info
from ekg_keras.data import preprocessing

NUM_EXAMPLES = 20
BATCH = 4
CIFAR_STATS = {
    "cifar10": ([113.9, 123.0, 125.3], [66.7, 62.1, 63.0], 10),
    "cifar100": ([112.0, 124.0, 129.0], [70.0, 65.0, 68.0], 100),
}
IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]


@pytest.fixture
def mock_tfds():
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        yield


@pytest.fixture
def no_network(monkeypatch):
    """Fails the test on any connection attempt or TFDS preparation."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(
        tfds.core.DatasetBuilder, "download_and_prepare", refuse
    )
    yield
    assert not attempts


def _batches(dataset):
    return list(dataset.as_numpy_iterator())


def _raw_examples(name, split="train", decoders=None):
    """The mocked examples of a split, in order, as numpy dicts."""
    builder = tfds.builder(name)
    dataset = builder.as_dataset(split=split, decoders=decoders)
    return list(dataset.as_numpy_iterator())


def _ids_and_images(batches):
    ids = np.concatenate([inputs["id"] for inputs, _ in batches])
    images = np.concatenate([inputs["image"] for inputs, _ in batches])
    return ids, images


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("training", [False, True])
def test_cifar_shapes_dtypes_and_batches(mock_tfds, name, training):
    dataset = cifar(name, batch_size=BATCH, training=training)
    image_spec, label_spec = dataset.element_spec
    assert image_spec.dtype == tf.float32
    assert label_spec.dtype == tf.int32
    # Training drops the remainder, so the batch dimension is static.
    batch_dim = BATCH if training else None
    assert image_spec.shape.as_list() == [batch_dim, 32, 32, 3]
    batches = _batches(dataset)
    assert len(batches) == NUM_EXAMPLES // BATCH
    num_classes = CIFAR_STATS[name][2]
    for images, labels in batches:
        assert images.shape == (BATCH, 32, 32, 3)
        assert ((0 <= labels) & (labels < num_classes)).all()


def test_cifar_training_drops_the_remainder(mock_tfds):
    train = cifar(batch_size=6, training=True)
    test = cifar(batch_size=6, training=False)
    assert [len(labels) for _, labels in _batches(train)] == [6, 6, 6]
    assert [len(labels) for _, labels in _batches(test)] == [6, 6, 6, 2]


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_eval_normalises_with_the_reference_constants(mock_tfds, name):
    mean, std, _ = CIFAR_STATS[name]
    raw = _raw_examples(name)
    images, labels = _batches(cifar(name, batch_size=NUM_EXAMPLES))[0]
    expected = (raw[0]["image"].astype(np.float64) - mean) / std
    np.testing.assert_allclose(images[0], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(labels, [ex["label"] for ex in raw])


def test_cifar_training_pads_crops_and_flips(mock_tfds):
    mean, std, _ = CIFAR_STATS["cifar10"]
    raw = _raw_examples("cifar10")
    dataset = cifar(batch_size=BATCH, training=True, with_ids=True)
    ids, images = _ids_and_images(_batches(dataset))
    pads = [[4, 4], [4, 4], [0, 0]]
    for example_id, image in zip(ids[:4], images[:4]):
        pixels = np.round(image * std + mean)
        source = raw[example_id]["image"]
        candidates = [
            np.pad(source, pads, mode="reflect"),
            np.pad(source[:, ::-1], pads, mode="reflect"),
        ]
        found = any(
            np.array_equal(pixels, padded[top : top + 32, left : left + 32])
            for padded in candidates
            for top in range(9)
            for left in range(9)
        )
        assert found, f"example {example_id} is not a padded crop"


def test_cifar_with_ids_eval_in_order_and_aligned(mock_tfds):
    raw = _raw_examples("cifar10")
    dataset = cifar(batch_size=BATCH, with_ids=True)
    inputs_spec, _ = dataset.element_spec
    assert set(inputs_spec) == {"image", "id"}
    assert inputs_spec["id"].dtype == tf.int64
    ids, images = _ids_and_images(_batches(dataset))
    np.testing.assert_array_equal(ids, np.arange(NUM_EXAMPLES))
    mean, std, _ = CIFAR_STATS["cifar10"]
    np.testing.assert_allclose(
        images[7], (raw[7]["image"] - np.array(mean)) / std, atol=1e-4
    )


def test_cifar_training_without_augmentation_shuffles_only(mock_tfds):
    evaluation = cifar(batch_size=BATCH, with_ids=True)
    eval_ids, eval_images = _ids_and_images(_batches(evaluation))
    dataset = cifar(
        batch_size=BATCH, training=True, with_ids=True, augment=False
    )
    ids, images = _ids_and_images(_batches(dataset))
    assert not np.array_equal(ids, np.sort(ids)), "training is not shuffled"
    np.testing.assert_allclose(images, eval_images[ids], atol=1e-6)


def test_cifar_with_ids_training_covers_every_id_once(mock_tfds):
    dataset = cifar(batch_size=BATCH, training=True, with_ids=True)
    ids, _ = _ids_and_images(_batches(dataset))
    assert not np.array_equal(ids, np.sort(ids)), "training is not shuffled"
    np.testing.assert_array_equal(np.sort(ids), np.arange(NUM_EXAMPLES))


def test_cifar_training_is_reproducible_and_reshuffled(mock_tfds):
    first = cifar(batch_size=BATCH, training=True, with_ids=True)
    second = cifar(batch_size=BATCH, training=True, with_ids=True)
    epoch_1, images_1 = _ids_and_images(_batches(first))
    epoch_2, _ = _ids_and_images(_batches(first))
    again, images_again = _ids_and_images(_batches(second))
    assert not np.array_equal(epoch_1, epoch_2)
    np.testing.assert_array_equal(epoch_1, again)
    np.testing.assert_array_equal(images_1, images_again)


@pytest.mark.parametrize("training", [False, True])
def test_input_context_shards_and_uses_per_replica_batch(mock_tfds, training):
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2
    )
    dataset = cifar(
        batch_size=BATCH,
        training=training,
        with_ids=True,
        input_context=context,
    )
    batches = _batches(dataset)
    assert {len(labels) for _, labels in batches} == {BATCH // 2}
    ids, _ = _ids_and_images(batches)
    assert len(ids) == NUM_EXAMPLES // 2
    # Pipeline 1 of 2 reads every other example, starting at the second.
    np.testing.assert_array_equal(np.sort(ids), np.arange(1, NUM_EXAMPLES, 2))


@pytest.mark.parametrize("training", [False, True])
def test_imagenet_shapes_dtypes_and_batches(mock_tfds, training):
    dataset = imagenet(
        split="train" if training else "validation",
        batch_size=BATCH,
        image_size=32,
        training=training,
    )
    image_spec, label_spec = dataset.element_spec
    assert image_spec.shape.as_list()[1:] == [32, 32, 3]
    assert image_spec.dtype == tf.float32
    assert label_spec.dtype == tf.int32
    batches = _batches(dataset)
    assert len(batches) == NUM_EXAMPLES // BATCH
    for images, labels in batches:
        assert images.shape == (BATCH, 32, 32, 3)
        assert np.isfinite(images).all()
        assert ((0 <= labels) & (labels < 1000)).all()


def test_imagenet_eval_centre_crops_and_normalises(mock_tfds):
    skip = {"image": tfds.decode.SkipDecoding()}
    raw = _raw_examples("imagenet2012", "validation", decoders=skip)
    dataset = imagenet(
        split="validation", batch_size=NUM_EXAMPLES, image_size=32
    )
    images, labels = _batches(dataset)[0]
    decoded = tf.io.decode_jpeg(raw[0]["image"], channels=3)
    cropped = preprocessing.center_crop(decoded, 32).numpy()
    np.testing.assert_allclose(
        images[0] * IMAGENET_STD + IMAGENET_MEAN, cropped, atol=1e-3
    )
    np.testing.assert_array_equal(labels, [ex["label"] for ex in raw])


def test_imagenet_with_ids_and_input_context(mock_tfds):
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2
    )
    dataset = imagenet(
        batch_size=BATCH,
        image_size=32,
        training=True,
        with_ids=True,
        input_context=context,
    )
    ids, images = _ids_and_images(_batches(dataset))
    assert images.shape == (NUM_EXAMPLES // 2, 32, 32, 3)
    np.testing.assert_array_equal(np.sort(ids), np.arange(1, NUM_EXAMPLES, 2))


def test_cifar_not_prepared_raises_with_instructions(tmp_path, no_network):
    with pytest.raises(FileNotFoundError) as error:
        cifar("cifar10", data_dir=os.fspath(tmp_path))
    message = str(error.value)
    assert "cifar10" in message and str(tmp_path) in message
    assert "download=True" in message and "tfds build cifar10" in message


def test_imagenet_not_prepared_raises_with_instructions(tmp_path, no_network):
    with pytest.raises(FileNotFoundError) as error:
        imagenet(data_dir=os.fspath(tmp_path))
    message = str(error.value)
    assert "ILSVRC2012_img_train.tar" in message
    assert "ILSVRC2012_img_val.tar" in message
    assert "manual_dir=" in message
    assert "datasets/catalog/imagenet2012" in message


def test_imagenet_manual_dir_without_archives_raises(tmp_path, no_network):
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    (manual_dir / "ILSVRC2012_img_val.tar").touch()
    with pytest.raises(FileNotFoundError) as error:
        imagenet(data_dir=os.fspath(tmp_path), manual_dir=os.fspath(manual_dir))
    message = str(error.value)
    assert "ILSVRC2012_img_train.tar is missing" in message
    assert repr(os.fspath(manual_dir)) in message


def test_cifar_downloads_only_when_asked(tmp_path, monkeypatch):
    calls = []

    class Prepared(Exception):
        pass

    def fake_download_and_prepare(self, *args, **kwargs):
        calls.append(self.name)
        raise Prepared()

    monkeypatch.setattr(
        tfds.core.DatasetBuilder,
        "download_and_prepare",
        fake_download_and_prepare,
    )
    with pytest.raises(FileNotFoundError):
        cifar("cifar100", data_dir=os.fspath(tmp_path))
    assert not calls
    with pytest.raises(Prepared):
        cifar("cifar100", data_dir=os.fspath(tmp_path), download=True)
    assert calls == ["cifar100"]


def test_load_split_info_reads_prepared_metadata(tmp_path, no_network):
    builder = tfds.builder("cifar10", data_dir=os.fspath(tmp_path))
    builder.info.set_splits(
        tfds.core.SplitDict(
            [
                tfds.core.SplitInfo(
                    name="train", shard_lengths=[30, 20], num_bytes=0
                ),
                tfds.core.SplitInfo(
                    name="test", shard_lengths=[10], num_bytes=0
                ),
            ]
        )
    )
    os.makedirs(builder.data_path)
    builder.info.write_to_directory(builder.data_path)
    data_dir = os.fspath(tmp_path)
    info = load_split_info("cifar10", data_dir=data_dir)
    assert (info.num_examples, info.num_classes) == (50, 10)
    sliced = load_split_info("cifar10", "train[:90%]", data_dir)
    assert sliced.num_examples == 45
    assert load_split_info("cifar10", "test", data_dir).num_examples == 10


def test_load_split_info_not_prepared_raises(tmp_path, no_network):
    with pytest.raises(FileNotFoundError, match="manual_dir="):
        load_split_info("imagenet2012", data_dir=os.fspath(tmp_path))
    with pytest.raises(FileNotFoundError, match="tfds build cifar100"):
        load_split_info("cifar100", data_dir=os.fspath(tmp_path))


@pytest.mark.parametrize(
    "kwargs, received",
    [
        ({"name": "mnist"}, "name='mnist'"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"split": ""}, "split=''"),
        ({"shuffle_buffer": -5}, "shuffle_buffer=-5"),
        ({"seed": None}, "seed=None"),
    ],
)
def test_cifar_bad_arguments(kwargs, received):
    with pytest.raises(ValueError, match=received):
        cifar(**kwargs)


def test_imagenet_bad_image_size():
    with pytest.raises(ValueError, match="image_size=0"):
        imagenet(image_size=0)
