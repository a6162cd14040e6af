"""The trainers' presets: named sets of flag defaults (`--preset`).

A preset gives every flag it names a default; a flag given on the command
line always wins. Its name also picks the method's option set (each method
declares "cpu" and "paper" in its options module as `OPTION_SETS`, read
through `ekg_keras.methods.MethodEntry.options_for`), so no trainer names a
method here.

* "cpu": sized to finish in minutes on a CPU with the embedded digits: a
  ResNet-20, a few epochs of pre-training and fine-tuning, and the
  method's small search.
* "paper": the papers' CIFAR or ImageNet schedules and the methods' paper
  defaults (hours on a GPU).
"""

#: The preset names, in the order `--help` lists them.
NAMES = ("cpu", "paper")

_CIFAR_PAPER = {
    "model": "resnet56",
    "flops": 0.45,
    # The EKG reference code's train_cifar.py: 100 epochs of fine-tuning at
    # lr 1e-2, x0.2 at 30/60/80%, weight decay 5e-4; 200 of pre-training.
    "epochs": 100,
    "pretrain_epochs": 200,
    "batch_size": 128,
    "learning_rate": 1e-2,
    "decay_points": ["0.3", "0.6", "0.8"],
    "decay_rate": 0.2,
    "weight_decay": 5e-4,
    "pretrain_learning_rate": 0.1,
    "pretrain_decay_points": ["0.3", "0.6", "0.8"],
    "pretrain_decay_rate": 0.2,
}

#: trainers/cifar.py's presets (its default: "cpu").
CIFAR = {
    "cpu": {
        **_CIFAR_PAPER,
        "model": "resnet20",
        "epochs": 5,
        "pretrain_epochs": 15,
    },
    "paper": _CIFAR_PAPER,
}

_IMAGENET_PAPER = {
    "model": "resnet50",
    # EKG's headline: 45% of ResNet-50's FLOPs removed.
    "flops": 0.55,
    "epochs": 100,
    "pretrain_epochs": 90,
    "batch_size": 256,
    "learning_rate": 1e-2,
    "decay_points": ["0.3", "0.6", "0.9"],
    "decay_rate": 0.1,
    "weight_decay": 1e-4,
    "pretrain_learning_rate": 0.1,
    "pretrain_decay_points": ["0.333", "0.667", "0.889"],
    "pretrain_decay_rate": 0.1,
    "pretrain_weight_decay": 1e-4,
}

#: trainers/imagenet.py's presets (its default: "paper"; "cpu" is a smoke
#: run of the whole pipeline, far from a useful ImageNet model).
IMAGENET = {
    "cpu": {
        **_IMAGENET_PAPER,
        "model": "resnet20",
        "image_size": 64,
        "epochs": 1,
        "pretrain_epochs": 1,
        "batch_size": 64,
        "steps_per_epoch": 50,
    },
    "paper": _IMAGENET_PAPER,
}


def describe(presets):
    """One help text naming what each preset sets.

    Args:
        presets: A trainer's presets (e.g. `CIFAR`).

    Returns:
        "cpu: --model=resnet20 ... (otherwise as paper) and the methods'
        'cpu' option sets; paper: --model=resnet56 ..." as one string.
    """
    paper = presets["paper"]
    parts = []
    for name in NAMES:
        values = presets[name]
        if name != "paper":
            values = {k: v for k, v in values.items() if paper.get(k) != v}
        text = " ".join(f"--{k}={_text(v)}" for k, v in values.items())
        if name != "paper":
            text += " (otherwise as paper)"
        parts.append(f"{name}: {text} and the methods' {name!r} option sets")
    return "; ".join(parts)


def apply(flag_values, presets):
    """Gives the flags of `flag_values.preset` the preset's values, except
    those given on the command line.

    Args:
        flag_values: Parsed `FlagValues` with a `preset` flag.
        presets: The trainer's presets (e.g. `CIFAR`).
    """
    for key, value in presets[flag_values.preset].items():
        if key in flag_values and not flag_values[key].present:
            flag_values[key].value = value


def _text(value):
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)
