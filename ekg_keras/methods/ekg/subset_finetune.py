"""The EKG search's warm-up: one epoch of fine-tuning on D_subset."""

import keras

from ekg_keras._backend import tf


def finetune_one_epoch(
    model,
    x,
    y,
    batch_size=256,
    learning_rate=1e-3,
    weight_decay=5e-4,
    strategy=None,
    logits=True,
):
    """One epoch of plain cross-entropy on D_subset (EKG Alg. 1, line 1).

    As the EKG reference code does it: SGD with Nesterov momentum 0.9 and
    coupled L2 weight decay (`g + wd * w` on every trainable variable),
    batches of `batch_size` with the remainder dropped, in training mode so
    batch-normalization statistics follow. Updates `model` in place.

    Returns:
        The number of steps taken.
    """
    strategy = strategy or tf.distribute.get_strategy()
    steps = len(y) // batch_size
    if steps == 0:
        return 0
    variables = model.trainable_variables
    with strategy.scope():
        optimizer = keras.optimizers.SGD(
            learning_rate, momentum=0.9, nesterov=True
        )
        # Built here, not lazily inside the replicated step, where a
        # MirroredStrategy cannot create the slot variables.
        optimizer.build(variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(
        from_logits=logits, reduction="sum"
    )

    def replica_step(inputs, labels):
        with tf.GradientTape() as tape:
            predictions = model(inputs, training=True)
            loss = loss_fn(labels, predictions) / batch_size
        gradients = tape.gradient(loss, variables)
        gradients = [
            g + weight_decay * v / strategy.num_replicas_in_sync
            for g, v in zip(gradients, variables)
        ]
        optimizer.apply_gradients(zip(gradients, variables))

    step = tf.function(lambda a, b: strategy.run(replica_step, args=(a, b)))
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(
        batch_size, drop_remainder=True
    )
    for inputs, labels in strategy.experimental_distribute_dataset(dataset):
        step(inputs, labels)
    return steps
