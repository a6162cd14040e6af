"""Tests for the `keras.applications` builders and the model registry."""

import keras
import numpy as np
import pytest

from ekg_keras import models

SMALL = (32, 32, 3)

# Registry name, builder, wrapped `keras.applications` function.
APPLICATIONS = [
    ("resnet50", models.resnet50, "ResNet50"),
    ("mobilenet_v2", models.mobilenet_v2, "MobileNetV2"),
    ("vgg16", models.vgg16, "VGG16"),
    ("densenet121", models.densenet121, "DenseNet121"),
    ("efficientnet_b0", models.efficientnet_b0, "EfficientNetB0"),
]
APPLICATION_IDS = [name for name, _, _ in APPLICATIONS]


def _is_functional(model):
    tensors = [*model.inputs, *model.outputs]
    return isinstance(model, keras.Model) and all(
        isinstance(t, keras.KerasTensor) for t in tensors
    )


@pytest.mark.parametrize(
    "builder", [b for _, b, _ in APPLICATIONS], ids=APPLICATION_IDS
)
def test_builds_at_32x32_without_weights(builder):
    model = builder(weights=None, input_shape=SMALL, num_classes=10)
    assert _is_functional(model)
    assert model.input.shape == (None, *SMALL)
    assert model.output.shape == (None, 10)
    # keras.applications' default classifier ends with a softmax.
    assert model.layers[-1].activation is keras.activations.softmax
    x = np.random.uniform(0, 255, size=(2, *SMALL)).astype("float32")
    y = keras.ops.convert_to_numpy(model(x, training=False))
    assert y.shape == (2, 10)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-5)


class _FakeApplication:
    """Stands in for a `keras.applications` function and records its call."""

    def __init__(self):
        self.kwargs = None

    def __call__(self, **kwargs):
        self.kwargs = kwargs
        return "model"


@pytest.mark.parametrize(
    "name, application",
    [(n, a) for n, _, a in APPLICATIONS],
    ids=APPLICATION_IDS,
)
def test_get_passes_arguments_through(name, application, monkeypatch):
    fake = _FakeApplication()
    monkeypatch.setattr(keras.applications, application, fake)
    model = models.get(
        name,
        weights="imagenet",
        input_shape=[224, 224, 3],
        num_classes=1000,
        classifier_activation=None,
        pooling="avg",
    )
    assert model == "model"
    expected = {
        "weights": "imagenet",
        "input_shape": (224, 224, 3),
        "classes": 1000,
        "include_top": True,
        "classifier_activation": None,
        "pooling": "avg",
    }
    if name == "mobilenet_v2":
        expected["alpha"] = 1.0
    assert fake.kwargs == expected


def test_defaults_are_random_weights_and_imagenet_shape(monkeypatch):
    fake = _FakeApplication()
    monkeypatch.setattr(keras.applications, "ResNet50", fake)
    models.resnet50()
    assert fake.kwargs["weights"] is None
    assert fake.kwargs["input_shape"] == (224, 224, 3)
    assert fake.kwargs["classes"] == 1000
    assert fake.kwargs["classifier_activation"] == "softmax"


def test_classifier_activation_none_gives_logits():
    model = models.mobilenet_v2(
        input_shape=SMALL,
        num_classes=10,
        alpha=0.35,
        classifier_activation=None,
    )
    assert model.layers[-1].activation is keras.activations.linear
    assert model.output.shape == (None, 10)


def test_headless_model_with_dynamic_input():
    model = models.mobilenet_v2(
        input_shape=(None, None, 3),
        alpha=0.35,
        include_top=False,
        pooling="avg",
    )
    assert _is_functional(model)
    assert model.output.shape == (None, 1280)


def test_input_smaller_than_32_is_rejected():
    with pytest.raises(ValueError, match="at least 32x32"):
        models.mobilenet_v2(input_shape=(31, 31, 3), num_classes=10)


@pytest.mark.parametrize("num_classes", [0, -1, 2.5, True])
def test_invalid_num_classes(num_classes):
    with pytest.raises(ValueError, match="`num_classes` should be"):
        models.vgg16(input_shape=SMALL, num_classes=num_classes)


def test_names():
    assert models.names() == [
        "resnet20",
        "resnet32",
        "resnet56",
        "resnet110",
        "resnet50",
        "mobilenet_v2",
        "vgg16",
        "densenet121",
        "efficientnet_b0",
    ]
    models.names().clear()
    assert len(models.names()) == 9


def test_get_cifar_resnet():
    model = models.get("resnet20", num_classes=3, shortcut="zero_pad")
    assert _is_functional(model)
    assert model.name == "resnet20"
    assert model.output.shape == (None, 3)
    assert not any(
        isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (1, 1)
        for layer in model.layers
    )


@pytest.mark.parametrize("name", ["resnet18", "ResNet20", None])
def test_get_unknown_name(name):
    with pytest.raises(ValueError) as info:
        models.get(name)
    message = str(info.value)
    assert message.startswith("`name` should be one of ")
    for valid in models.names():
        assert repr(valid) in message
    assert message.endswith(f"Received: name={name!r}")
