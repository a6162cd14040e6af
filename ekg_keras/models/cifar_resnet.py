"""The CIFAR ResNets (ResNet-20/32/56/110) of He et al. as functional models.

The layout follows the EKG reference code (sseung0703/EKG, `nets/ResNet.py`)
and the SFP/FPGM papers: a 3x3 stem, three stages of `n` basic blocks with
widths 16/32/64 and strides 1/2/2, global average pooling and a dense layer
that outputs logits.

Reference:
    He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
"""

import numbers

import keras
from keras import layers

SHORTCUTS = ("projection", "zero_pad")

_STAGE_STRIDES = (1, 2, 2)
_STAGE_WIDTH_MULTIPLIERS = (1, 2, 4)
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


def resnet_cifar(
    depth,
    num_classes=10,
    input_shape=(32, 32, 3),
    shortcut="projection",
    width=16,
    zero_init_residual=False,
    name=None,
):
    """Builds a CIFAR ResNet of depth `6n + 2` as a functional model.

    The stem is Conv2D(3x3) -> BN -> ReLU; each of the three stages holds
    `n = (depth - 2) / 6` basic blocks (Conv2D(3x3) -> BN -> ReLU ->
    Conv2D(3x3) -> BN, plus shortcut, Add, ReLU); the head is global average
    pooling followed by a dense layer. Convolutions have no bias, their
    kernels use `VarianceScaling(scale=2.0, mode="fan_out")`, the dense
    kernel `RandomNormal(stddev=0.01)`, and batch normalisation uses
    momentum 0.9 and epsilon 1e-5, as in the EKG reference code.

    The model outputs logits (no softmax): train it with e.g.
    `keras.losses.SparseCategoricalCrossentropy(from_logits=True)`.

    Args:
        depth: Number of weighted layers, `6n + 2` for `n >= 1`
            (20, 32, 56, 110, ...).
        num_classes: Number of output logits.
        input_shape: Shape of one input image, `(height, width, channels)`.
        shortcut: How a block's shortcut matches a change of shape (stride 2
            or more channels). `"projection"` (option B of He et al., used by
            the EKG code): Conv2D(1x1, stride s) -> BN. `"zero_pad"` (option
            A, used by SFP and FPGM): subsample by `s` and zero-pad the
            channels, without parameters or multiply-accumulates. Blocks
            that keep the shape always use the identity.
        width: Number of filters of the stem and the first stage; the
            second and third stages have `2 * width` and `4 * width`.
        zero_init_residual: If True, the gamma of the last batch
            normalisation of every block starts at zero, so that each block
            starts as its shortcut. The EKG code does this; the default
            (False) follows He et al.
        name: Name of the model; `"resnet{depth}"` when None.

    Returns:
        A functional `keras.Model` mapping images to `num_classes` logits.

    Raises:
        ValueError: If an argument is out of range, or if `shortcut` is
            `"zero_pad"` and the input height or width is not static.

    Reference:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    """
    blocks_per_stage = _check_depth(depth)
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("width", width)
    _check_shortcut(shortcut)
    input_shape = _check_input_shape(input_shape, shortcut)

    inputs = keras.Input(shape=input_shape, name="input")
    x = _conv(width, 3, 1, "stem_conv")(inputs)
    x = _batch_norm("stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    stages = zip(_STAGE_WIDTH_MULTIPLIERS, _STAGE_STRIDES)
    for stage, (multiplier, stage_stride) in enumerate(stages, start=1):
        for block in range(blocks_per_stage):
            x = basic_block(
                x,
                filters=width * multiplier,
                strides=stage_stride if block == 0 else 1,
                shortcut=shortcut,
                zero_init_residual=zero_init_residual,
                name=f"stage{stage}_block{block}",
            )
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        name="fc",
    )(x)
    return keras.Model(inputs, outputs, name=name or f"resnet{depth}")


def resnet20(**kwargs):
    """Builds a CIFAR ResNet-20 (3 basic blocks per stage).

    Args:
        **kwargs: Any argument of `resnet_cifar` except `depth`.

    Returns:
        A functional `keras.Model` that outputs logits.

    Reference:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    """
    return resnet_cifar(20, **kwargs)


def resnet32(**kwargs):
    """Builds a CIFAR ResNet-32 (5 basic blocks per stage).

    Args:
        **kwargs: Any argument of `resnet_cifar` except `depth`.

    Returns:
        A functional `keras.Model` that outputs logits.

    Reference:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    """
    return resnet_cifar(32, **kwargs)


def resnet56(**kwargs):
    """Builds a CIFAR ResNet-56 (9 basic blocks per stage).

    Args:
        **kwargs: Any argument of `resnet_cifar` except `depth`.

    Returns:
        A functional `keras.Model` that outputs logits.

    Reference:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    """
    return resnet_cifar(56, **kwargs)


def resnet110(**kwargs):
    """Builds a CIFAR ResNet-110 (18 basic blocks per stage).

    Args:
        **kwargs: Any argument of `resnet_cifar` except `depth`.

    Returns:
        A functional `keras.Model` that outputs logits.

    Reference:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    """
    return resnet_cifar(110, **kwargs)


def basic_block(
    x,
    filters,
    strides=1,
    shortcut="projection",
    zero_init_residual=False,
    name="block",
):
    """Applies one basic residual block to the tensor `x`.

    Conv2D(3x3, stride `strides`) -> BN -> ReLU -> Conv2D(3x3) -> BN, added
    to the shortcut and followed by a ReLU.

    Args:
        x: A 4D channels-last Keras tensor.
        filters: Number of output channels.
        strides: Stride of the first convolution and of the shortcut.
        shortcut: `"projection"` or `"zero_pad"`; see `resnet_cifar`. Used
            only when the block changes the shape of `x`.
        zero_init_residual: If True, the gamma of the second batch
            normalisation starts at zero.
        name: Prefix of the names of the block's layers.

    Returns:
        The output Keras tensor.

    Raises:
        ValueError: If `shortcut` is unknown.

    Reference:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    """
    _check_shortcut(shortcut)
    residual = _conv(filters, 3, strides, f"{name}_conv1")(x)
    residual = _batch_norm(f"{name}_bn1")(residual)
    residual = layers.ReLU(name=f"{name}_relu1")(residual)
    residual = _conv(filters, 3, 1, f"{name}_conv2")(residual)
    gamma = "zeros" if zero_init_residual else "ones"
    residual = _batch_norm(f"{name}_bn2", gamma)(residual)

    if strides == 1 and x.shape[-1] == filters:
        skip = x
    elif shortcut == "projection":
        skip = _conv(filters, 1, strides, f"{name}_shortcut_conv")(x)
        skip = _batch_norm(f"{name}_shortcut_bn")(skip)
    else:
        skip = zero_pad_shortcut(x, filters, strides, f"{name}_shortcut")
    x = layers.Add(name=f"{name}_add")([residual, skip])
    return layers.ReLU(name=f"{name}_out")(x)


def zero_pad_shortcut(x, channels, strides=2, name="shortcut"):
    """The parameter-free "option A" shortcut of He et al.

    Keeps every `strides`-th row and column of `x` (starting at the first)
    and zero-pads the channel axis to `channels`, with the extra zeros split
    evenly before and after the input channels. For 16 -> 32 channels this
    is PyTorch's `F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8))`, as in the
    SFP and FPGM code. Only built-in Keras layers are used (MaxPooling2D
    with a 1x1 window, Reshape, ZeroPadding3D), so the model stays
    serializable and does no multiply-accumulates here.

    Args:
        x: A 4D channels-last Keras tensor with static height, width and
            channels.
        channels: Number of output channels, at least those of `x`.
        strides: Spatial subsampling factor.
        name: Prefix of the names of the layers.

    Returns:
        The shortcut Keras tensor.

    Raises:
        ValueError: If `channels` is smaller than the channels of `x` or the
            shape of `x` is not static.

    Reference:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    """
    in_channels = x.shape[-1]
    if channels < in_channels:
        raise ValueError(
            f"`channels` should be at least the {in_channels} input "
            f"channels. Received: channels={channels}"
        )
    if strides != 1:
        x = layers.MaxPooling2D(
            pool_size=1, strides=strides, name=f"{name}_pool"
        )(x)
    extra = channels - in_channels
    if extra == 0:
        return x
    height, width = x.shape[1:3]
    if height is None or width is None:
        raise ValueError(
            "`x` should have a static height and width. "
            f"Received: x.shape={x.shape}"
        )
    # ZeroPadding3D pads the three middle axes of a 5D tensor, so the
    # channels become the third of them for the duration of the padding.
    expand = layers.Reshape(
        (height, width, in_channels, 1), name=f"{name}_expand"
    )
    x = expand(x)
    before = extra // 2
    x = layers.ZeroPadding3D(
        ((0, 0), (0, 0), (before, extra - before)), name=f"{name}_pad"
    )(x)
    return layers.Reshape((height, width, channels), name=f"{name}_merge")(x)


def _conv(filters, kernel_size, strides, name):
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=keras.initializers.VarianceScaling(
            scale=2.0, mode="fan_out"
        ),
        name=name,
    )


def _batch_norm(name, gamma_initializer="ones"):
    return layers.BatchNormalization(
        momentum=_BN_MOMENTUM,
        epsilon=_BN_EPSILON,
        gamma_initializer=gamma_initializer,
        name=name,
    )


def _check_depth(depth):
    """Returns the number of blocks per stage, `(depth - 2) / 6`."""
    valid = (
        isinstance(depth, numbers.Integral)
        and not isinstance(depth, bool)
        and depth >= 8
        and (depth - 2) % 6 == 0
    )
    if not valid:
        raise ValueError(
            "`depth` should be 6n+2 (20, 32, 56, 110, ...). "
            f"Received: depth={depth!r}"
        )
    return int(depth - 2) // 6


def _check_positive_int(arg, value):
    valid = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not valid or value < 1:
        raise ValueError(
            f"`{arg}` should be a positive integer. Received: {arg}={value!r}"
        )


def _check_shortcut(shortcut):
    if shortcut not in SHORTCUTS:
        raise ValueError(
            f"`shortcut` should be one of {', '.join(map(repr, SHORTCUTS))}. "
            f"Received: shortcut={shortcut!r}"
        )


def _check_input_shape(input_shape, shortcut):
    """Returns `input_shape` as a tuple after checking it."""
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise ValueError(
            "`input_shape` should be (height, width, channels). "
            f"Received: input_shape={input_shape!r}"
        )
    shape = tuple(input_shape)
    if shortcut == "zero_pad" and None in shape[:2]:
        raise ValueError(
            "`input_shape` should have a static height and width when "
            f"shortcut='zero_pad'. Received: input_shape={input_shape!r}"
        )
    return shape
