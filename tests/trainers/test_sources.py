"""trainers/sources.py: the data sets behind the trainers."""

import numpy as np
import pytest
import tensorflow as tf

from trainers import sources


@pytest.fixture(scope="module")
def digits8():
    return sources.digits(image_size=8)


def ids_of(dataset):
    return np.concatenate([f["id"].numpy() for f, _ in dataset])


def test_digits_source(digits8):
    assert digits8.name == "digits" and digits8.num_classes == 10
    assert digits8.input_shape == (8, 8, 3)
    assert (digits8.num_train, digits8.num_eval) == (1347, 450)
    assert digits8.views_augment is None
    images, labels = next(iter(digits8.dataset("eval", 450)))
    assert images.shape == (450, 8, 8, 3) and labels.dtype == tf.int32


def test_training_shuffles_and_drops_the_remainder(digits8):
    ordered = ids_of(digits8.dataset("train", 100, with_ids=True))
    np.testing.assert_array_equal(ordered, np.arange(1347))
    shuffled = ids_of(
        digits8.dataset("train", 100, training=True, with_ids=True)
    )
    assert len(shuffled) == 1300 and len(set(shuffled)) == 1300
    assert not np.array_equal(shuffled, ordered[:1300])


def ids_per_pipeline(source, split):
    """The sample ids each of two input pipelines reads, batch 64."""
    shards = []
    for index in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2,
            input_pipeline_id=index,
            num_replicas_in_sync=2,
        )
        dataset = source.dataset(
            split, 64, with_ids=True, input_context=context
        )
        features, _ = next(iter(dataset))
        assert features["image"].shape[0] == 32  # The per-replica batch.
        shards.append(set(ids_of(dataset)))
    return shards


def test_input_pipelines_of_two_workers_share_nothing(digits8):
    shards = ids_per_pipeline(digits8, "train")
    assert not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(range(1347))


def test_unknown_split(digits8):
    with pytest.raises(ValueError, match="'train' or 'eval'"):
        digits8.dataset("test", 8)


def test_synthetic_data_has_the_shape_classes_and_sizes_of_the_real():
    imagenet = sources.synthetic("imagenet2012", image_size=16)
    assert imagenet.name == "synthetic-imagenet2012"
    assert imagenet.input_shape == (16, 16, 3)
    assert imagenet.num_classes == 1000 and imagenet.views_augment == "flip"
    assert (imagenet.num_train, imagenet.num_eval) == (1_281_167, 50_000)
    cifar = sources.synthetic("cifar100", image_size=16)
    assert cifar.input_shape == (32, 32, 3) and cifar.num_classes == 100
    batches = list(cifar.dataset("eval", 3000, with_ids=True))
    assert [len(labels) for _, labels in batches] == [3000] * 3 + [1000]
    ids = np.concatenate([f["id"].numpy() for f, _ in batches])
    np.testing.assert_array_equal(ids, np.arange(10_000))
    images, labels = batches[0][0]["image"].numpy(), batches[0][1].numpy()
    assert images.dtype == np.float32 and 0.9 < images.std() < 1.1
    assert labels.dtype == np.int32 and set(labels) == set(range(100))


def test_synthetic_training_batches_are_whole_and_shard_by_pipeline():
    digits = sources.synthetic("digits", image_size=8)
    train = digits.dataset("train", 100, training=True)
    assert train.element_spec[0].shape == (100, 8, 8, 3)
    assert sum(1 for _ in train) == 13  # 1347 // 100, remainder dropped.
    shards = ids_per_pipeline(digits, "eval")
    assert not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(range(450))


def test_synthetic_data_of_an_unknown_data_set():
    with pytest.raises(sources.DataError, match="imitates one of"):
        sources.synthetic("mnist")
