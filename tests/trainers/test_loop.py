"""trainers/loop.py: the custom distributed loop and the evaluator."""

import keras
import numpy as np
import tensorflow as tf
from trainer_testing import conv_bn_model

from trainers import loop


def bn_model():
    keras.utils.set_random_seed(1)
    return conv_bn_model(6, 4, 3, metrics=["accuracy"])


def arrays():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 6, 6, 3)).astype("float32")
    return x, rng.integers(0, 3, 48).astype("int32")


def run(strategy, epochs=2, steps=3, batch=16):
    x, y = arrays()
    with strategy.scope():
        model = bn_model()

    def dataset(context):
        per_replica = context.get_per_replica_batch_size(batch)
        return (
            tf.data.Dataset.from_tensor_slices((x, y))
            .batch(per_replica, drop_remainder=True)
            .repeat()
        )

    spec = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).element_spec
    start = loop.train(
        model,
        strategy,
        strategy.distribute_datasets_from_function(dataset),
        epochs=epochs,
        steps_per_epoch=steps,
        element_spec=spec,
        verbose=0,
    )
    assert start == 0
    return model


def test_two_replicas_with_synchronized_batchnorm_match_one_device(mirrored):
    one = run(tf.distribute.get_strategy())
    two = run(mirrored)
    assert int(one.optimizer.iterations.numpy()) == 6
    for a, b in zip(one.weights, two.weights, strict=True):
        np.testing.assert_allclose(
            a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path
        )
    # It trained: the moving statistics left their initial values.
    assert np.abs(one.get_layer("bn").moving_mean.numpy()).max() > 1e-3


def test_evaluator_counts_top1_and_top5():
    x, y = arrays()
    model = bn_model()
    logits = model.predict(x, verbose=0)
    ranks = np.argsort(-logits, axis=-1)
    evaluator = loop.Evaluator(model, num_classes=3)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(20)
    results = evaluator(dataset)  # Batches of 20, 20 and 8: one trace.
    assert results["top1"] == np.mean(ranks[:, 0] == y)
    assert results["top5"] == 1.0  # k = min(5, 3 classes)
    assert evaluator(dataset) == results
