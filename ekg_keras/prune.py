"""`prune`: one call from a trained model to a smaller one."""

import numpy as np

from ekg_keras import _logging as log
from ekg_keras import allocation as allocation_lib
from ekg_keras import criteria as criteria_lib
from ekg_keras.allocation import KeepLevels
from ekg_keras.allocation.ekg_search import EKGSearch
from ekg_keras.batchnorm import recalibrate_batchnorm
from ekg_keras.flops import FlopsCounter
from ekg_keras.flops import check_flops_fraction
from ekg_keras.graph import trace
from ekg_keras.layers import prunable_layers
from ekg_keras.layers import wrap
from ekg_keras.slim import slim as slim_model
from ekg_keras.taylor import taylor_scores
from ekg_keras.training.ekg_finetune import finetune_searched
from ekg_keras.training.memory_bank import images_and_ids

METHODS = ("oneshot", "ekg")


def prune(
    model,
    flops,
    *,
    method=None,
    criterion="l2",
    allocation="uniform",
    data=None,
    ignored_layers=None,
    round_to=1,
    min_channels=1,
    include_bn=False,
    include_fc=True,
    loss=None,
    slim=True,
    recalibrate=True,
    recalibrate_steps=None,
    search_options=None,
    finetune_epochs=0,
    finetune_options=None,
    verbose=1,
):
    """Prunes whole filters so that `model` keeps `flops` of its FLOPs.

    One-shot pruning (`method="oneshot"`): trace the channel groups, score
    every channel with `criterion`, choose per-group keep counts with
    `allocation` so that the pruned model keeps at most `flops` of the
    original multiply-accumulates (as close below as single channels
    allow), mask the lowest-scored channels and, by default, slim.

    EKG search (`method="ekg"`, the default when `data` is given): the
    channels are chosen by `ekg_keras.EKGSearch`, a greedy data-driven
    search guided by ensemble knowledge; `criterion` and `allocation` do
    not apply. A target the unpruned model already meets (`flops=1.0`)
    returns `model` itself, with a message.

    Args:
        model: A trained functional or Sequential Keras model. It is not
            modified.
        flops: Fraction of the original FLOPs to keep, in (0, 1]; 0.45
            keeps 45 % (removes 55 %), like EKG's `search_target_rate`.
        method: `"oneshot"`, or `"ekg"` for the data-driven EKG search.
            Defaults to `"oneshot"` without `data` and `"ekg"` with it.
        criterion: A name from `ekg_keras.criteria.names()` ("l1", "l2",
            "fpgm", "bn_scale", "taylor", "random") or a callable taking a
            `GroupWeights` and returning one score per channel.
        allocation: `"uniform"` (the same keep fraction in every group) or
            `"global"` (channels ranked across groups), or a callable.
        data: `(inputs, labels)` batches (`tf.data.Dataset` or an `(x, y)`
            tuple): the EKG search's training data, or the data of
            data-driven criteria such as "taylor".
        ignored_layers: Names of layers to keep whole (their input and
            output channels are not pruned).
        round_to: Keep channel counts multiples of this (e.g. 8 for fast
            kernels), except for groups kept whole.
        min_channels: Fewest channels a group may keep, or a float in
            (0, 1): that fraction of each group's width (rounded up).
        include_bn: Count batch normalization in FLOPs (EKG convention).
        include_fc: Count dense layers in FLOPs.
        loss: Loss for data-driven criteria; defaults to sparse categorical
            cross-entropy (from logits unless the model ends in softmax).
        slim: Return the slim plain model (default). With False, return the
            masked model (prunable layers in hard mode) for fine-tuning;
            `ekg_keras.slim` turns it into the slim model later.
        recalibrate: With `data`, re-estimate every batch normalization's
            moving statistics on the pruned network from `data` (see
            `ekg_keras.recalibrate_batchnorm`) before returning, so the
            model is usable in inference mode at once: the statistics
            learned on the full network no longer fit. Without `data` the
            statistics stay as they were.
        recalibrate_steps: Batches of `data` to recalibrate on (default
            all).
        search_options: For `method="ekg"`, keyword arguments of
            `ekg_keras.EKGSearch` (e.g. `finetune`, `val_per_class`,
            `variant`, `checkpoint_dir`).
        finetune_epochs: For `method="ekg"`, fine-tune the searched model
            this many epochs on `data` with EKG's memory bank of teacher
            logits and two-view distillation
            (`ekg_keras.training.finetune_searched`) before slimming; 0
            skips it. A `tf.data.Dataset` must then carry sample ids
            (`({"image": x, "id": id}, y)`); `(x, y)` arrays get theirs.
        finetune_options: Keyword arguments of `finetune_searched`
            (`batch_size`, `learning_rate`, `num_teachers`, `bank_options`,
            `temperature`, ...).
        verbose: 0 for silence, 1 for a one-line summary.

    Returns:
        The pruned `keras.Model`.

    Raises:
        ValueError: For `flops` outside (0, 1], a model without a functional
            graph, nothing prunable, an unknown criterion or allocation, or
            a target below the smallest reachable fraction; with
            `method="ekg"` also for data without labels, empty data or
            labels out of range (the model is never modified).
    """
    check_flops_fraction(flops)
    method = _resolve_method(method, data)
    if finetune_epochs and method != "ekg":
        raise ValueError(
            "`finetune_epochs` fine-tunes with the EKG search's teachers and "
            f"applies to method='ekg'. Received: method={method!r}"
        )
    if method == "ekg":
        masked = _ekg(
            model,
            flops,
            data,
            criterion,
            allocation,
            ignored_layers,
            round_to,
            min_channels,
            include_bn,
            include_fc,
            search_options,
            finetune_epochs,
            finetune_options,
            verbose,
        )
        if masked is model:
            return model
        return _finish(
            masked, None, data, recalibrate, recalibrate_steps, slim, verbose
        )
    criterion_fn = criteria_lib.get(criterion)
    allocate = allocation_lib.get(allocation)
    if criteria_lib.requires_data(criterion_fn) and data is None:
        raise ValueError(
            f"criterion={criterion!r} scores channels from data: pass "
            "`data=` with (inputs, labels) batches."
        )
    trace(model)  # Validates the model and warns about unknown layers.
    masked = wrap(model, mode="hard")
    graph = trace(masked, warn=False)
    graph.freeze_layers(ignored_layers or ())
    if not graph.prunable_groups:
        raise ValueError(
            f"Model '{model.name}' has nothing prunable: every channel group "
            "reaches a model output, an input, an ignored layer or a layer "
            "the channel graph does not know.\n" + graph.summary()
        )
    counter = FlopsCounter(graph, include_bn=include_bn, include_fc=include_fc)
    levels = KeepLevels(
        graph.sizes, [g.prunable for g in graph.groups], min_channels, round_to
    )
    full = counter.macs(counter.full)
    target = flops * full
    _check_reachable(counter, levels, flops, full)
    taylor = None
    if criteria_lib.requires_data(criterion_fn):
        taylor = taylor_scores(masked, graph, data, loss=loss)
    scores = [
        criteria_lib.score(criterion_fn, graph, group, taylor)
        if group.prunable
        else None
        for group in graph.groups
    ]
    keep_counts = allocate(counter, target, scores, levels)
    keep = keep_top(scores, keep_counts, graph.sizes)
    apply_keep(masked, graph, keep)
    if verbose:
        achieved = counter.macs(keep_counts)
        log.info(
            f"ekg_keras.prune: kept {achieved / full:.1%} of FLOPs "
            f"({full / 1e6:.2f}M -> {achieved / 1e6:.2f}M MACs), params "
            f"{counter.params(counter.full) / 1e6:.3f}M -> "
            f"{counter.params(keep_counts) / 1e6:.3f}M "
            f"[{criterion if isinstance(criterion, str) else 'custom'}, "
            f"{allocation if isinstance(allocation, str) else 'custom'}]"
        )
    return _finish(
        masked, graph, data, recalibrate, recalibrate_steps, slim, verbose
    )


def _finish(masked, graph, data, recalibrate, steps, slim, verbose):
    """Recalibrates batch normalization on `data` (if any) and slims."""
    if recalibrate and data is not None:
        batches = recalibrate_batchnorm(masked, data, steps=steps)
        if verbose and batches:
            log.info(
                f"ekg_keras.prune: recalibrated batch normalization on "
                f"{batches} batches of `data`"
            )
    return slim_model(masked, graph) if slim else masked


def keep_top(scores, keep_counts, sizes):
    """Boolean keep masks keeping the `keep_counts[g]` best-scored channels.

    Groups without scores (fixed groups) keep everything.
    """
    keep = []
    for values, count, size in zip(scores, keep_counts, sizes):
        mask = np.ones(size, dtype=bool)
        if values is not None and count < size:
            order = np.argsort(-np.asarray(values), kind="stable")
            mask[:] = False
            mask[order[:count]] = True
        keep.append(mask)
    return keep


def apply_keep(model, graph, keep):
    """Writes group keep masks into the masks of the model's layers."""
    graph.check_keep(keep)
    masks = graph.layer_masks(keep)
    for layer in prunable_layers(model):
        if id(layer) in masks:
            layer.filter_mask.assign(masks[id(layer)])


def _resolve_method(method, data):
    if method is None:
        method = "oneshot" if data is None else "ekg"
    if method not in METHODS:
        raise ValueError(
            f"`method` should be one of {METHODS}. Received: method={method!r}"
        )
    if method == "ekg" and data is None:
        raise ValueError(
            "method='ekg' searches on data: pass `data=` with labelled "
            "(inputs, labels) batches."
        )
    return method


def _ekg(
    model,
    flops,
    data,
    criterion,
    allocation,
    ignored_layers,
    round_to,
    min_channels,
    include_bn,
    include_fc,
    search_options,
    finetune_epochs,
    finetune_options,
    verbose,
):
    """Runs the EKG search (and optionally EKG fine-tuning); returns the
    masked model, or `model` itself when nothing is to be pruned."""
    if criterion != "l2" or allocation != "uniform" or round_to != 1:
        raise ValueError(
            "`criterion`, `allocation` and `round_to` apply to "
            "method='oneshot'; the EKG search chooses channels itself. "
            f"Received: criterion={criterion!r}, allocation={allocation!r}, "
            f"round_to={round_to!r}"
        )
    if flops >= 1.0:
        if verbose:
            log.info(
                "ekg_keras.prune: flops=1.0 is already met by the "
                "unpruned model; returning it unchanged."
            )
        return model
    if finetune_epochs and not isinstance(data, (tuple, list)):
        images_and_ids(data)  # Fail before the search, not after it.
    options = dict(search_options or {})
    options.setdefault("verbose", verbose)
    search = EKGSearch(
        model,
        flops,
        data,
        ignored_layers=ignored_layers,
        min_channels=min_channels,
        include_bn=include_bn,
        include_fc=include_fc,
        **options,
    )
    masked = search.run()
    if verbose:
        last = search.history[-1]
        log.info(
            f"ekg_keras.prune: EKG search kept {last.flops_fraction:.1%} of "
            f"FLOPs in {last.step} steps (validation accuracy "
            f"{search.history[0].accuracy:.2%} -> {last.accuracy:.2%}, "
            "batch statistics)"
        )
    if finetune_epochs:
        finetune_searched(
            search,
            data,
            finetune_epochs,
            verbose=verbose,
            **(finetune_options or {}),
        )
    return masked


def _check_reachable(counter, levels, flops, full):
    smallest = counter.macs(levels.lowest) / full
    if flops < smallest:
        raise ValueError(
            f"flops={flops} is below the smallest reachable fraction "
            f"{smallest:.4f}: with every prunable group at its minimum "
            "width, the unprunable rest of the network keeps that much. "
            f"Received: flops={flops}"
        )
