"""Small models and id-carrying data shared by the training tests."""

import keras
import numpy as np
import tensorflow as tf

import ekg_keras
from ekg_keras.methods.ekg.memory_bank import build_memory_bank


def small_model(batchnorm=True):
    """Two 8-channel convs (the first with batch norm), 4 classes."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="a")(inputs)
    if batchnorm:
        x = keras.layers.BatchNormalization(name="a_bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x))


def with_ids(x, y, batch, shuffle=False):
    """`({"image": x, "id": id}, y)` batches."""
    data = tf.data.Dataset.from_tensor_slices(
        ({"image": x, "id": np.arange(len(x), dtype="int64")}, y)
    )
    if shuffle:
        data = data.shuffle(len(x), seed=3)
    return data.batch(batch)


def small_data(n=48):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 8, 8, 3)).astype("float32")
    return x, (np.arange(n) % 4).astype("int32")


def searched_bank():
    """A finished search of `small_model` and its 3-teacher bank."""
    x, y = small_data()
    keras.utils.set_random_seed(2)
    search = ekg_keras.EKGSearch(
        small_model(),
        0.4,
        (x, y),
        val_per_class=6,
        subset_per_class=4,
        batch_size=24,
        verbose=0,
    )
    search.run()
    bank, teachers = build_memory_bank(
        search, with_ids(x, y, 16), num_teachers=3, verbose=0
    )
    return search, bank, teachers, x, y
