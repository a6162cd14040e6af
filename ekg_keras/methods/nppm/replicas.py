"""An optimizer step taken only when a condition holds, inside a compiled
train step, under any `tf.distribute` strategy."""

from ekg_keras._backend import tf


def apply_if(condition, optimizer, gradients, variables):
    """`optimizer.apply(gradients, variables)` if `condition`, else nothing.

    An optimizer step synchronises replicas (a merge call), which
    tf.distribute does not allow inside control flow of a replica step; so
    the condition is evaluated in the cross-replica context, where the step
    is run for each replica (the pattern of Keras' `LossScaleOptimizer`).
    Every replica must compute the same `condition`. Skipped steps leave
    the optimizer untouched (its iteration count included), so its moments
    and bias corrections start with the first real step.

    Args:
        condition: Scalar boolean tensor.
        optimizer: A built Keras optimizer.
        gradients: Gradients, as `optimizer.apply` takes them (summed over
            replicas by the optimizer).
        variables: The variables they belong to.
    """

    def cross_replica(strategy, condition, gradients):
        decide = strategy.experimental_local_results(condition)[0]

        def step():
            strategy.extended.call_for_each_replica(
                lambda values: optimizer.apply(values, variables),
                args=(gradients,),
            )
            return tf.constant(True)

        tf.cond(decide, step, lambda: tf.constant(False))

    tf.distribute.get_replica_context().merge_call(
        cross_replica, args=(condition, list(gradients))
    )


def replicated_state(layer, name, shape, dtype="float32", initializer="zeros"):
    """A non-trainable weight of `layer` that a train step updates with the
    same value on every replica (the first replica's value is kept)."""
    return layer.add_weight(
        name=name,
        shape=shape,
        dtype=dtype,
        initializer=initializer,
        trainable=False,
        aggregation="only_first_replica",
    )
