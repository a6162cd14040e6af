"""LFPC's trajectory: sub-networks from the unpruned one to the result."""

import numpy as np

from ekg_keras.batchnorm import batchnorm_settings
from ekg_keras.evaluation import SubnetworkEvaluator
from ekg_keras.methods.trajectory import Trajectory


def path_counts(levels, full, final, steps):
    """Keep counts interpolated from `full` to `final` in `steps` steps.

    Each group's count moves linearly and is rounded up to an allowed
    level; repeated configurations are dropped.

    Returns:
        A list of int arrays (per group id), the first `full`, the last
        `final`.
    """
    full = np.asarray(full, np.float64)
    final = np.asarray(final, np.float64)
    path = []
    for step in range(steps + 1):
        wanted = full + (final - full) * step / steps
        counts = levels.at_least(np.ceil(wanted - 1e-9))
        if not path or not np.array_equal(path[-1], counts):
            path.append(counts)
    return path


def criteria_trajectory(
    sampler, setup, structure, inputs, labels, steps, batch_size, strategy
):
    """The path from the unpruned network to `structure`, each sub-network
    pruned by the learned criteria and scored on validation samples.

    LFPC does not pass through sub-networks one by one as EKG does; this
    path is what it offers EKG's distillation fine-tuning instead ([impl]):
    `steps` configurations whose widths move linearly from full to the
    result, channels chosen by each group's learned criterion, each with
    its mean cross-entropy on `inputs` (batch statistics, the moving
    averages untouched). The model's masks are `structure.keep` afterwards.

    Args:
        sampler: The trained `CriteriaSampler`.
        setup: The method's `PruningSetup`.
        structure: The `LearnedStructure`.
        inputs, labels: Validation samples (arrays).
        steps: Steps from the unpruned network to the result.
        batch_size: Evaluation batch size.
        strategy: `tf.distribute` strategy.

    Returns:
        A `Trajectory`.
    """
    criteria = [sampler.criteria.index(name) for name in structure.criteria]
    path = path_counts(
        setup.levels, setup.graph.sizes, structure.keep_counts, steps
    )
    keeps = [sampler.keep_masks(counts, criteria) for counts in path]
    with batchnorm_settings(setup.model, momentum=1.0):
        evaluator = SubnetworkEvaluator(
            setup.model,
            setup.graph,
            inputs,
            labels,
            batch_size=batch_size,
            strategy=strategy,
            cache=False,
        )
        evaluator.set_keep(structure.keep)
        logits = evaluator.evaluate(keeps)
    setup.apply(structure.keep)
    losses = [_cross_entropy(labels, z) for z in logits]
    fractions = [setup.fraction(counts) for counts in path]
    return Trajectory(keeps, np.array(losses), np.array(fractions))


def _cross_entropy(labels, logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probabilities = shifted - np.log(
        np.exp(shifted).sum(axis=-1, keepdims=True)
    )
    return float(-np.mean(log_probabilities[np.arange(len(labels)), labels]))
