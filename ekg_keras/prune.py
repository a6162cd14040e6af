"""`prune`: one call from a trained model to a smaller one."""

import inspect
import warnings

from ekg_keras import _logging as log
from ekg_keras import methods
from ekg_keras import validation
from ekg_keras._warnings import user_stacklevel
from ekg_keras.batchnorm import batchnorm_layers
from ekg_keras.batchnorm import recalibrate_batchnorm
from ekg_keras.flops import count_flops
from ekg_keras.latency import check_budget
from ekg_keras.layers import prunable_layers
from ekg_keras.scope import PruningScope
from ekg_keras.slim import slim as slim_model
from ekg_keras.training import finetuners
from ekg_keras.training.fitting import Fitter


def prune(
    model,
    flops=None,
    *,
    latency=None,
    latency_batch_size=1,
    runtime="tf",
    latency_cache=None,
    method=None,
    data=None,
    ignored_layers=None,
    round_to=1,
    min_channels=1,
    include_bn=False,
    include_fc=True,
    input_shape=None,
    slim=True,
    recalibrate=True,
    recalibrate_steps=None,
    finetune_epochs=0,
    finetuner=None,
    finetune_options=None,
    fitter=None,
    strategy=None,
    checkpoint_dir=None,
    tensorboard_dir=None,
    verbose=1,
    search_options=None,
    **method_options,
):
    """Prunes whole filters so that `model` keeps `flops` of its FLOPs
    (or, with `latency`, that fraction of its measured latency).

    `method` names a registered method (`ekg_keras.methods.names()`; see
    `ekg_keras.methods.describe()`): "oneshot" (the default without data:
    score every channel with `criterion`, allocate keep counts with
    `allocation`, mask the weakest), "ekg" (the default with data: the EKG
    search), "sfp" / "asfp" / "fpgm" (soft pruning while training for
    `epochs`), "l1" / "l2" (one-shot presets), and any method registered
    later. The method's own knobs are keyword arguments (`criterion="l1"`,
    `val_per_class=16`, `epochs=30`, ...). Then, optionally, fine-tuning
    (the method's own fine-tuner: EKG's memory-bank distillation after the
    EKG search, plain cross-entropy after one-shot pruning), batch-norm
    recalibration on `data`, and slimming. A target the unpruned model
    already meets (`flops=1.0`) returns `model` itself, with a message.

    Without `data` the result keeps the batch-normalization statistics of
    the unpruned network, which no longer fit what its layers see: its
    accuracy can be near chance (a ResNet-20 on the digits: 97.8% ->
    14.9% at `flops=0.45`) until they are re-estimated, and `prune` warns
    so. Pass `data=` (batch norm is recalibrated on it), or call
    `ekg_keras.recalibrate_batchnorm(model, x)` on the result (68.9%), or
    fine-tune it (`finetune_epochs=3` with `data`: 96.9%).

    Everything given is validated before any work (see
    `ekg_keras.validation`): data finite, one label per image, labels
    class ids in range, images of the model's input shape; numbers may be
    any real scalar (NumPy scalars and 0-d arrays included); a masked
    model (`slim=False` result) is slimmed and pruned again; arguments
    that would have no effect warn.

    Args:
        model: A trained functional or Sequential Keras model. It is not
            modified.
        flops: Fraction of the original FLOPs to keep, in (0, 1]; 0.45
            keeps 45 % (removes 55 %), like EKG's `search_target_rate`.
            Give either `flops` or `latency`.
        latency: Fraction of the original model's measured latency to
            keep, in (0, 1], on this device, at `latency_batch_size`, in
            `runtime`, by a latency model of per-layer timings (measured
            once per model and device and cached; see
            `ekg_keras.latency.LatencyCounter`). Every method that takes a
            budget budgets by it.
        latency_batch_size: Batch size at which latency is measured.
        runtime: Where latency is measured: "tf" (default: a compiled
            `model(x)`), "litert", "onnx" or "openvino" (the model as
            `ekg_keras.export` writes it; the package must be installed).
        latency_cache: The latency tables' cache file (default
            `ekg_keras.latency.default_cache_path()`).
        method: A registered method name; defaults to "oneshot" without
            `data` and "ekg" with it.
        data: Training data, `(inputs, labels)` batches (`tf.data.Dataset`
            or an `(x, y)` tuple): what data-driven methods and criteria
            learn from, what fine-tuning trains on and what batch
            normalization is recalibrated on.
        ignored_layers: Names of layers to keep whole (their input and
            output channels are not pruned).
        round_to: Keep channel counts multiples of this (e.g. 8 for fast
            kernels), except for groups kept whole.
        min_channels: Fewest channels a group may keep, or a float in
            (0, 1): that fraction of each group's width (rounded up).
        include_bn: Count batch normalization in FLOPs (EKG convention).
        include_fc: Count dense layers in FLOPs.
        input_shape: The input size FLOPs and latency are counted at,
            without the batch axis (e.g. `(224, 224, 3)`): needed for a
            model with dynamic sizes (KerasHub's default `(None, None,
            3)`). The pruned model keeps the dynamic input; methods that
            train on `data` see the model at this size.
        slim: Return the slim plain model (default). With False, return the
            masked model (prunable layers) for further training;
            `ekg_keras.slim` turns it into the slim model later.
        recalibrate: With `data`, re-estimate every batch normalization's
            moving statistics on the pruned network from `data` (see
            `ekg_keras.recalibrate_batchnorm`) before returning, so the
            model is usable in inference mode at once.
        recalibrate_steps: Batches of `data` to recalibrate on (default
            all).
        finetune_epochs: Fine-tune the pruned model this many epochs on
            `data` before slimming (0 skips it). With the "ekg" fine-tuner a
            `tf.data.Dataset` must carry sample ids (`({"image": x, "id":
            id}, y)`); `(x, y)` arrays get theirs.
        finetuner: A fine-tuner name (`ekg_keras.training.finetuners.
            names()`); default: the method's own.
        finetune_options: Options of the fine-tuning: the `Fitter`'s
            (`batch_size`, `learning_rate`, `weight_decay`) and the
            fine-tuner's (for "ekg": `num_teachers`, `bank_options`,
            `temperature`, `teacher_filter`, `augment`, `seed`).
        fitter: A `ekg_keras.training.Fitter` that runs every training
            phase (default: one on `data`).
        strategy: `tf.distribute` strategy (default: the one in scope).
        checkpoint_dir: Where a method that checkpoints (EKG) saves its
            state and resumes from.
        tensorboard_dir: Where a method writes TensorBoard scalars.
        verbose: 0 for silence, 1 for progress lines.
        search_options: Removed; pass the method's options as keyword
            arguments.
        **method_options: The method's options (see its `Options`).

    Returns:
        The pruned `keras.Model`.

    Raises:
        ValueError: For `flops` or `latency` outside (0, 1], both or
            neither given, an unknown `runtime`, a model without a functional
            graph, nothing prunable, an unknown method, option, criterion or
            allocation, a target below the smallest reachable fraction,
            data without labels, empty data, x and y of different lengths,
            labels out of range or images of another shape than the
            model's input (the model is never modified).
        TypeError: For data that is neither an `(x, y)` tuple nor a
            `tf.data.Dataset`, or does not hold numbers.
        ekg_keras.validation.NonFiniteDataError: (a `ValueError`) If an
            image or label holds NaN or infinity, naming the sample.
        ImportError: If `runtime`'s package is not installed.

    Warns:
        UserWarning: Without `data`, that batch-normalization statistics
            are stale; for latency settings under a FLOPs budget, and
            `recalibrate_steps`, `finetuner` or `finetune_options` that
            would have no effect.
    """
    finetune_epochs = _count(finetune_epochs, "finetune_epochs")
    if recalibrate_steps is not None:
        recalibrate_steps = _count(recalibrate_steps, "recalibrate_steps")
    scope = PruningScope(
        flops=flops,
        latency=latency,
        ignored_layers=ignored_layers or (),
        round_to=round_to,
        min_channels=min_channels,
        include_bn=include_bn,
        include_fc=include_fc,
        latency_batch_size=latency_batch_size,
        runtime=runtime,
        latency_cache=latency_cache,
        input_shape=input_shape,
    )
    if scope.budget is None:
        check_budget(flops, latency)  # Says that a budget is needed.
    if search_options is not None:
        raise ValueError(
            "`search_options` is gone: pass the method's options as keyword "
            "arguments, e.g. prune(model, flops, data=data, "
            f"{', '.join(f'{k}={v!r}' for k, v in search_options.items())})."
        )
    _warn_unused(
        data,
        recalibrate,
        recalibrate_steps,
        finetune_epochs,
        finetuner,
        finetune_options,
    )
    entry = methods.get(method or methods.default(with_data=data is not None))
    if scope.fraction >= 1.0:
        if verbose:
            log.info(
                f"ekg_keras.prune: {scope.budget}=1.0 is already met by the "
                "unpruned model; returning it unchanged."
            )
        return model
    # Validates the model, the data and the options before any work
    # (`ekg_keras.validation`, through the method protocol).
    pruning = entry.create(
        model,
        scope,
        data,
        strategy=strategy,
        checkpoint_dir=checkpoint_dir,
        tensorboard_dir=tensorboard_dir,
        verbose=verbose,
        **method_options,
    )
    data = pruning.data  # Checked as it is read.
    with validation.reported_input_errors():
        result = _run(
            pruning,
            data,
            fitter,
            slim=slim,
            recalibrate=recalibrate,
            recalibrate_steps=recalibrate_steps,
            finetune_epochs=finetune_epochs,
            finetuner=finetuner,
            finetune_options=finetune_options,
            verbose=verbose,
        )
    if verbose:
        log.info(_summary(pruning, result))
    if data is None and batchnorm_layers(result):
        warnings.warn(STALE_BATCHNORM, stacklevel=user_stacklevel())
    return result


#: What `prune` warns about a result pruned without data.
STALE_BATCHNORM = (
    "ekg_keras.prune ran without `data`: the pruned model's batch-"
    "normalization statistics are those of the unpruned network, so its "
    "accuracy may be near chance until they are re-estimated. Pass "
    "`data=(x, y)` (recalibrates them), or call "
    "`ekg_keras.recalibrate_batchnorm(model, x)`, or fine-tune it."
)


def _run(
    pruning,
    data,
    fitter,
    *,
    slim,
    recalibrate,
    recalibrate_steps,
    finetune_epochs,
    finetuner,
    finetune_options,
    verbose,
):
    """Runs the method, then fine-tuning, recalibration and slimming."""
    fitter_options, tuner_options = _split_finetune_options(finetune_options)
    if finetune_epochs:
        finetuner = finetuners.resolve(pruning, finetuner)
        fitter = fitter or Fitter(
            data, strategy=pruning.strategy, verbose=verbose, **fitter_options
        )
        # Fail before the search, not after it.
        finetuners.get(finetuner).check_data(data)
    masked = pruning.run(fitter)
    if finetune_epochs:
        finetuners.finetune(
            pruning,
            finetune_epochs,
            fitter,
            finetuner,
            settings={"verbose": verbose},
            **tuner_options,
        )
    if recalibrate and data is not None:
        batches = recalibrate_batchnorm(masked, data, steps=recalibrate_steps)
        if verbose and batches:
            log.info(
                f"ekg_keras.prune: recalibrated batch normalization on "
                f"{batches} batches of `data`"
            )
    result = slim_model(masked, pruning.graph) if slim else masked
    return pruning.setup.restore_inputs(result)


def _count(value, name):
    """`value` as a non-negative int (NumPy integers and 0-d arrays too)."""
    number = validation.real_number(value)
    if isinstance(number, float) and number.is_integer():
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise ValueError(
            f"`{name}` should be a non-negative integer. Received: "
            f"{name}={value!r}"
        )
    return number


def _warn_unused(
    data,
    recalibrate,
    recalibrate_steps,
    finetune_epochs,
    finetuner,
    finetune_options,
):
    """Warns about `prune` arguments that would have no effect."""
    if recalibrate_steps is not None and (data is None or not recalibrate):
        validation.warn_unused(
            "recalibrate_steps",
            recalibrate_steps,
            "batch normalization is recalibrated only with `data` and "
            "recalibrate=True",
        )
    if not finetune_epochs:
        for name, value in (
            ("finetuner", finetuner),
            ("finetune_options", finetune_options),
        ):
            if value:
                validation.warn_unused(
                    name, value, "fine-tuning runs only with finetune_epochs>0"
                )


def _summary(pruning, result):
    """One line about the returned model, measured from it."""
    scope = pruning.scope
    counter = pruning.setup.flops_counter
    before_macs = counter.macs(counter.full)
    before_params = counter.params(counter.full)
    report = count_flops(
        result,
        include_bn=scope.include_bn,
        include_fc=scope.include_fc,
        input_shape=scope.input_shape,
    )
    kind = "slim" if not prunable_layers(result) else "masked"
    return (
        f"ekg_keras.prune: returned a {kind} model with "
        f"{report.macs / before_macs:.1%} of the FLOPs ("
        f"{before_macs / 1e6:.2f}M -> {report.macs / 1e6:.2f}M MACs) and "
        f"{report.params / before_params:.1%} of the parameters ("
        f"{before_params / 1e6:.3f}M -> {report.params / 1e6:.3f}M)"
    )


def _split_finetune_options(options):
    """Splits fine-tuning options into the `Fitter`'s and the fine-tuner's."""
    options = dict(options or {})
    accepted = set(inspect.signature(Fitter).parameters) - {"data"}
    fitter = {k: options.pop(k) for k in list(options) if k in accepted}
    return fitter, options
