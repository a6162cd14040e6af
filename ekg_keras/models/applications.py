"""Thin builders over `keras.applications` with the library's argument names.

Every builder returns the functional model of `keras.applications`, with
`num_classes` for Keras' `classes` and `weights=None` (random
initialisation) by default, so nothing is downloaded unless asked for:
`weights="imagenet"` or the path of a weights file is passed through.

All five accept inputs down to 32x32 (Keras raises a `ValueError` for
31x31 or less), so tests can use `input_shape=(32, 32, 3)`. With
`weights="imagenet"` and `include_top=True`, Keras requires
`input_shape=(224, 224, 3)` and `num_classes=1000`.

As in `keras.applications`, the classifier ends with a softmax by default;
pass `classifier_activation=None` to get logits. EfficientNetB0 rescales
and normalises its input inside the model (it expects pixels in [0, 255]);
the other models expect their `keras.applications.*.preprocess_input`.
"""

import numbers

import keras


def resnet50(
    weights=None,
    input_shape=(224, 224, 3),
    num_classes=1000,
    include_top=True,
    classifier_activation="softmax",
    **kwargs,
):
    """Builds ResNet-50 (bottleneck blocks) from `keras.applications`.

    Args:
        weights: None (random initialisation), `"imagenet"`, or the path of
            a weights file.
        input_shape: Shape of one input image; at least 32x32.
        num_classes: Number of classes of the top layer.
        include_top: Whether to end with the pooling and dense classifier.
        classifier_activation: Activation of the top layer, or None for
            logits. Ignored without the top.
        **kwargs: Passed to `keras.applications.ResNet50`, e.g.
            `input_tensor`, `pooling`, `name`.

    Returns:
        A functional `keras.Model`.

    Raises:
        ValueError: If `num_classes` is not a positive integer, or
            `keras.applications` rejects the arguments (e.g. an input
            smaller than 32x32).

    Reference:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    """
    return _build(
        keras.applications.ResNet50,
        weights=weights,
        input_shape=input_shape,
        num_classes=num_classes,
        include_top=include_top,
        classifier_activation=classifier_activation,
        **kwargs,
    )


def mobilenet_v2(
    weights=None,
    input_shape=(224, 224, 3),
    num_classes=1000,
    alpha=1.0,
    include_top=True,
    classifier_activation="softmax",
    **kwargs,
):
    """Builds MobileNetV2 from `keras.applications`.

    Args:
        weights: None (random initialisation), `"imagenet"`, or the path of
            a weights file.
        input_shape: Shape of one input image; at least 32x32 (ImageNet
            weights exist for 96, 128, 160, 192 and 224).
        num_classes: Number of classes of the top layer.
        alpha: Width multiplier of every layer; ImageNet weights exist for
            0.35, 0.5, 0.75, 1.0, 1.3 and 1.4.
        include_top: Whether to end with the pooling and dense classifier.
        classifier_activation: Activation of the top layer, or None for
            logits. Ignored without the top.
        **kwargs: Passed to `keras.applications.MobileNetV2`, e.g.
            `input_tensor`, `pooling`, `name`.

    Returns:
        A functional `keras.Model`.

    Raises:
        ValueError: If `num_classes` is not a positive integer, or
            `keras.applications` rejects the arguments.

    Reference:
        Sandler et al., "MobileNetV2: Inverted Residuals and Linear
        Bottlenecks", CVPR 2018.
    """
    return _build(
        keras.applications.MobileNetV2,
        weights=weights,
        input_shape=input_shape,
        num_classes=num_classes,
        include_top=include_top,
        classifier_activation=classifier_activation,
        alpha=alpha,
        **kwargs,
    )


def vgg16(
    weights=None,
    input_shape=(224, 224, 3),
    num_classes=1000,
    include_top=True,
    classifier_activation="softmax",
    **kwargs,
):
    """Builds VGG-16 (with its two 4096-unit dense layers) from Keras.

    Args:
        weights: None (random initialisation), `"imagenet"`, or the path of
            a weights file.
        input_shape: Shape of one input image; at least 32x32.
        num_classes: Number of classes of the top layer.
        include_top: Whether to end with the flatten and dense classifier.
        classifier_activation: Activation of the top layer, or None for
            logits. Ignored without the top.
        **kwargs: Passed to `keras.applications.VGG16`, e.g.
            `input_tensor`, `pooling`, `name`.

    Returns:
        A functional `keras.Model`.

    Raises:
        ValueError: If `num_classes` is not a positive integer, or
            `keras.applications` rejects the arguments.

    Reference:
        Simonyan and Zisserman, "Very Deep Convolutional Networks for
        Large-Scale Image Recognition", ICLR 2015.
    """
    return _build(
        keras.applications.VGG16,
        weights=weights,
        input_shape=input_shape,
        num_classes=num_classes,
        include_top=include_top,
        classifier_activation=classifier_activation,
        **kwargs,
    )


def densenet121(
    weights=None,
    input_shape=(224, 224, 3),
    num_classes=1000,
    include_top=True,
    classifier_activation="softmax",
    **kwargs,
):
    """Builds DenseNet-121 from `keras.applications`.

    Args:
        weights: None (random initialisation), `"imagenet"`, or the path of
            a weights file.
        input_shape: Shape of one input image; at least 32x32.
        num_classes: Number of classes of the top layer.
        include_top: Whether to end with the pooling and dense classifier.
        classifier_activation: Activation of the top layer, or None for
            logits. Ignored without the top.
        **kwargs: Passed to `keras.applications.DenseNet121`, e.g.
            `input_tensor`, `pooling`, `name`.

    Returns:
        A functional `keras.Model`.

    Raises:
        ValueError: If `num_classes` is not a positive integer, or
            `keras.applications` rejects the arguments.

    Reference:
        Huang et al., "Densely Connected Convolutional Networks", CVPR 2017.
    """
    return _build(
        keras.applications.DenseNet121,
        weights=weights,
        input_shape=input_shape,
        num_classes=num_classes,
        include_top=include_top,
        classifier_activation=classifier_activation,
        **kwargs,
    )


def efficientnet_b0(
    weights=None,
    input_shape=(224, 224, 3),
    num_classes=1000,
    include_top=True,
    classifier_activation="softmax",
    **kwargs,
):
    """Builds EfficientNet-B0 from `keras.applications`.

    The model rescales and normalises its input itself: feed it pixels in
    [0, 255].

    Args:
        weights: None (random initialisation), `"imagenet"`, or the path of
            a weights file.
        input_shape: Shape of one input image; at least 32x32.
        num_classes: Number of classes of the top layer.
        include_top: Whether to end with the pooling and dense classifier.
        classifier_activation: Activation of the top layer, or None for
            logits. Ignored without the top.
        **kwargs: Passed to `keras.applications.EfficientNetB0`, e.g.
            `input_tensor`, `pooling`, `name`.

    Returns:
        A functional `keras.Model`.

    Raises:
        ValueError: If `num_classes` is not a positive integer, or
            `keras.applications` rejects the arguments.

    Reference:
        Tan and Le, "EfficientNet: Rethinking Model Scaling for
        Convolutional Neural Networks", ICML 2019.
    """
    return _build(
        keras.applications.EfficientNetB0,
        weights=weights,
        input_shape=input_shape,
        num_classes=num_classes,
        include_top=include_top,
        classifier_activation=classifier_activation,
        **kwargs,
    )


def _build(application, *, input_shape, num_classes, **kwargs):
    """Checks the shared arguments and calls a `keras.applications` model."""
    valid = isinstance(num_classes, numbers.Integral) and not isinstance(
        num_classes, bool
    )
    if not valid or num_classes < 1:
        raise ValueError(
            "`num_classes` should be a positive integer. "
            f"Received: num_classes={num_classes!r}"
        )
    # Keras compares `input_shape` with a tuple when loading ImageNet
    # weights, so a list would be rejected.
    if input_shape is not None:
        input_shape = tuple(input_shape)
    return application(
        input_shape=input_shape, classes=int(num_classes), **kwargs
    )
