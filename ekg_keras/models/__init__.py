"""Model zoo: the CIFAR ResNets and thin `keras.applications` builders.

Every builder returns a functional `keras.Model`. `get` maps a name (e.g.
from a `--model` flag) to its builder:

    model = ekg_keras.models.get("resnet56", num_classes=100)
"""

from ekg_keras.models.applications import densenet121
from ekg_keras.models.applications import efficientnet_b0
from ekg_keras.models.applications import mobilenet_v2
from ekg_keras.models.applications import resnet50
from ekg_keras.models.applications import vgg16
from ekg_keras.models.cifar_resnet import resnet20
from ekg_keras.models.cifar_resnet import resnet32
from ekg_keras.models.cifar_resnet import resnet56
from ekg_keras.models.cifar_resnet import resnet110
from ekg_keras.models.cifar_resnet import resnet_cifar

_BUILDERS = {
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "resnet50": resnet50,
    "mobilenet_v2": mobilenet_v2,
    "vgg16": vgg16,
    "densenet121": densenet121,
    "efficientnet_b0": efficientnet_b0,
}


CIFAR_RESNETS = ("resnet20", "resnet32", "resnet56", "resnet110")


def names():
    """Lists the model names that `get` accepts.

    Returns:
        A new list of names, the CIFAR ResNets first.
    """
    return list(_BUILDERS)


def get(name, **kwargs):
    """Builds the model registered under `name`.

    Args:
        name: One of `names()`, e.g. `"resnet56"` or `"mobilenet_v2"`.
        **kwargs: Passed to the builder, e.g. `num_classes`,
            `input_shape`, `weights` (ImageNet models only) or `shortcut`
            (CIFAR ResNets only).

    Returns:
        A functional `keras.Model`.

    Raises:
        ValueError: If `name` is not a registered model name.
    """
    if not isinstance(name, str) or name not in _BUILDERS:
        raise ValueError(
            f"`name` should be one of {', '.join(map(repr, _BUILDERS))}. "
            f"Received: name={name!r}"
        )
    return _BUILDERS[name](**kwargs)


def is_application(name):
    """Whether `name` is a `keras.applications` model (ImageNet-style:
    softmax top and `weights` by default) rather than a CIFAR ResNet."""
    return name in _BUILDERS and name not in CIFAR_RESNETS


__all__ = [
    "densenet121",
    "efficientnet_b0",
    "get",
    "is_application",
    "mobilenet_v2",
    "names",
    "resnet20",
    "resnet32",
    "resnet50",
    "resnet56",
    "resnet110",
    "resnet_cifar",
    "vgg16",
]
