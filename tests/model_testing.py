"""Helpers shared by tests that build, randomise and compare models."""

import keras
import numpy as np
import tensorflow as tf
from pruning_testing import kept_fraction  # noqa: F401 (re-exported)
from pruning_testing import prune_masked_and_slim  # noqa: F401


def randomize_batchnorm(model, seed=0):
    """Gives every BatchNormalization non-trivial statistics and affine
    weights, so that inference outputs depend on them."""
    rng = np.random.default_rng(seed)
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            values = []
            for weight in layer.weights:
                shape = weight.shape
                if weight.name == "moving_variance":
                    values.append(rng.uniform(0.5, 1.5, shape))
                elif weight.name == "gamma":
                    values.append(rng.uniform(0.5, 1.5, shape))
                elif weight.name == "mask":
                    values.append(np.ones(shape))
                else:
                    values.append(rng.normal(0.0, 0.3, shape))
            layer.set_weights([v.astype("float32") for v in values])
    return model


def all_layers(model):
    """Layers of `model`, nested models included (depth first)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def images(batch=4, size=32, channels=3, seed=0):
    """A batch of random images."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, size, size, channels)).astype("float32")


def max_relative_difference(a, b):
    """max |a - b| / max |b|."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def layer_classes(model):
    """The set of `module.ClassName` of every layer, nested included."""
    return {
        f"{type(layer).__module__}.{type(layer).__name__}"
        for layer in all_layers(model)
    }


def accuracy(model, x, y, training=False, batch_size=64):
    """Top-1 accuracy of `model` on arrays, in batches.

    `training=True` normalizes with batch statistics (and, as Keras does,
    moves the moving averages; callers that care restore the weights).
    """
    logits = np.concatenate(
        [
            np.asarray(model(x[i : i + batch_size], training=training))
            for i in range(0, len(x), batch_size)
        ]
    )
    return float(np.mean(logits.argmax(-1) == y))


def assert_same_outputs(a, b, x, tolerance=1e-4):
    """Asserts max |a(x) - b(x)| / max |b(x)| < tolerance, outputs not all 0."""
    ya, yb = np.asarray(a(x)), np.asarray(b(x))
    assert ya.shape == yb.shape
    assert np.abs(yb).max() > 0
    assert max_relative_difference(ya, yb) < tolerance


def group_of(channel_graph, layer_name):
    """The group opened by a producer layer (its first output channel)."""
    record = channel_graph.channels(layer_name)
    return channel_graph.groups[record.outputs[0].group[0]]


def _conv_bn_relu(x, filters, name, **kwargs):
    x = keras.layers.Conv2D(filters, 3, padding="same", name=name, **kwargs)(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU()(x)


def unet(input_shape=(32, 32, 3), classes=2, width=16):
    """A small U-Net: two down steps, two up steps (a transposed
    convolution and a bilinear upsampling), skip concatenations, zero
    padding and cropping; random batch-norm statistics."""
    inputs = keras.Input(input_shape)
    e1 = _conv_bn_relu(_conv_bn_relu(inputs, width, "e1a"), width, "e1b")
    e2 = keras.layers.MaxPooling2D()(e1)
    e2 = _conv_bn_relu(_conv_bn_relu(e2, 2 * width, "e2a"), 2 * width, "e2b")
    b = keras.layers.MaxPooling2D()(e2)
    b = _conv_bn_relu(b, 4 * width, "bottom")
    u2 = keras.layers.Conv2DTranspose(2 * width, 2, strides=2, name="up2")(b)
    d2 = keras.layers.Concatenate()([u2, e2])
    d2 = _conv_bn_relu(d2, 2 * width, "d2")
    u1 = keras.layers.UpSampling2D(interpolation="bilinear")(d2)
    u1 = keras.layers.ZeroPadding2D(1)(u1)
    u1 = keras.layers.Conv2D(width, 3, name="up1")(u1)
    d1 = keras.layers.Concatenate()([u1, e1])
    d1 = _conv_bn_relu(d1, width, "d1")
    d1 = keras.layers.Cropping2D(2)(keras.layers.ZeroPadding2D(2)(d1))
    outputs = keras.layers.Conv2D(classes, 1, name="logits")(d1)
    return randomize_batchnorm(keras.Model(inputs, outputs, name="unet"))


def cnn_1d(length=64, channels=2, classes=4):
    """A 1-D CNN: Conv1D, separable and depthwise 1-D convolutions,
    pooling, zero padding, cropping, upsampling and a transposed Conv1D."""
    inputs = keras.Input((length, channels))
    x = keras.layers.Conv1D(32, 5, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("swish")(x)
    x = keras.layers.MaxPooling1D(2)(x)
    x = keras.layers.SeparableConv1D(48, 3, padding="same", name="c2")(x)
    x = keras.layers.DepthwiseConv1D(3, padding="same", name="dw")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.ZeroPadding1D(1)(x)
    x = keras.layers.Conv1D(64, 3, name="c3")(x)
    x = keras.layers.Cropping1D(1)(x)
    x = keras.layers.UpSampling1D(2)(x)
    x = keras.layers.Conv1DTranspose(32, 3, strides=2, name="up")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(classes, name="head")(x)
    return randomize_batchnorm(keras.Model(inputs, outputs, name="cnn_1d"))


def hard_swish_net(input_shape=(32, 32, 3), classes=10):
    """A MobileNetV3-like network written with `keras.ops`: hard-swish as
    `x * relu6(x + 3) / 6`, squeeze-excite with a hard sigmoid, residual
    `+`, global pooling as `keras.ops.mean`."""
    from keras import ops

    def hard_swish(x):
        return x * ops.relu6(x + 3.0) / 6.0

    def conv_bn(x, filters, kernel, name, **kwargs):
        x = keras.layers.Conv2D(
            filters, kernel, padding="same", name=name, **kwargs
        )(x)
        return keras.layers.BatchNormalization(name=f"{name}_bn")(x)

    inputs = keras.Input(input_shape)
    x = hard_swish(conv_bn(inputs, 16, 3, "stem", strides=2))
    for i, (expand, out) in enumerate(((64, 24), (72, 24), (96, 40))):
        y = hard_swish(conv_bn(x, expand, 1, f"b{i}_expand"))
        y = keras.layers.DepthwiseConv2D(3, padding="same", name=f"b{i}_dw")(y)
        y = hard_swish(keras.layers.BatchNormalization()(y))
        se = ops.mean(y, axis=(1, 2), keepdims=True)
        se = keras.layers.Conv2D(16, 1, activation="relu", name=f"b{i}_se1")(se)
        se = keras.layers.Conv2D(expand, 1, name=f"b{i}_se2")(se)
        y = y * (ops.relu6(se + 3.0) / 6.0)
        y = conv_bn(y, out, 1, f"b{i}_project")
        x = x + y if x.shape[-1] == out else y
    x = hard_swish(conv_bn(x, 128, 1, "top"))
    outputs = keras.layers.Dense(classes, name="head")(ops.mean(x, axis=(1, 2)))
    return randomize_batchnorm(
        keras.Model(inputs, outputs, name="hard_swish_net")
    )


def two_conv_net(size=8, classes=4):
    """Conv(8)-BN-ReLU, Conv(16)-BN-ReLU, pooling and a Dense head on
    `size` x `size` x 3 inputs: the smallest model every method prunes."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="a")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="b")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes, name="fc")(x))


def random_classification(n=64, size=8, classes=4):
    """`n` random `size` x `size` x 3 images with labels cycling over
    `classes` (fixed seed)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, size, size, 3)).astype("float32")
    return x, (np.arange(n) % classes).astype("int32")


def reference_importance(
    masked, graph, batches, labels, targets=None, objective=None
):
    """Taylor importance as `SubnetworkEvaluator.importance` computed it
    before issue 21, in eager mode: per batch and terminal masked layer
    the mask gradient times the mask, summed per group channel in NumPy,
    absolute value per layer and batch, summed.

    Args:
        masked: The hard-masked model (training-mode forward).
        graph: Its `ChannelGraph`.
        batches: List of input arrays, one per batch.
        labels: All labels, batches one after another.
        targets: (N, classes) targets of `objective` (zeros if None).
        objective: `(labels, targets, logits) -> per-sample loss`;
            cross-entropy if None.
    """
    from ekg_keras.layers import is_prunable

    gates = [
        r
        for r in graph.maskable_layers()
        if r.terminal and is_prunable(r.layer)
    ]
    if objective is None:

        def objective(y, t, z):
            del t
            return keras.losses.sparse_categorical_crossentropy(
                y, z, from_logits=True
            )

    scores = [np.zeros(g.size) for g in graph.groups]
    start = 0
    for x in batches:
        end = start + len(x)
        y = np.asarray(labels[start:end])
        t = (
            np.zeros((len(x), masked.outputs[0].shape[-1]), "float32")
            if targets is None
            else np.asarray(targets[start:end], "float32")
        )
        start = end
        variables = [r.layer.filter_mask.value for r in gates]
        with tf.GradientTape() as tape:
            tape.watch(variables)
            logits = masked(x, training=True)
            loss = tf.reduce_mean(objective(y, t, logits))
        for record, gradient in zip(gates, tape.gradient(loss, variables)):
            gradient = gradient.numpy() * record.layer.filter_mask.numpy()
            out = record.outputs[0]
            for group_id in np.unique(out.group[out.group >= 0]):
                rows = out.group == group_id
                per_channel = np.zeros(graph.groups[group_id].size)
                np.add.at(per_channel, out.index[rows], gradient[rows])
                scores[group_id] += np.abs(per_channel)
    return scores


def vit(image=16, patch=4, width=32, heads=4, depth=2, classes=5):
    """A small ViT: patch embedding, `depth` pre-norm blocks (attention and
    a `Dense -> gelu -> Dense` MLP, each with a residual `Add`), average
    pooling over the tokens and a classifier."""
    inputs = keras.Input((image, image, 3), name="image")
    x = keras.layers.Conv2D(width, patch, strides=patch, name="patch")(inputs)
    tokens = (image // patch) ** 2
    x = keras.layers.Reshape((tokens, width), name="tokens")(x)
    for i in range(depth):
        y = keras.layers.LayerNormalization(name=f"ln{i}_attention")(x)
        y = keras.layers.MultiHeadAttention(
            heads, width // heads, name=f"attention{i}"
        )(y, y)
        x = keras.layers.Add(name=f"residual{i}_attention")([x, y])
        y = keras.layers.LayerNormalization(name=f"ln{i}_mlp")(x)
        y = keras.layers.Dense(4 * width, name=f"mlp{i}_in")(y)
        y = keras.layers.Activation("gelu", name=f"mlp{i}_gelu")(y)
        y = keras.layers.Dense(width, name=f"mlp{i}_out")(y)
        x = keras.layers.Add(name=f"residual{i}_mlp")([x, y])
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = keras.layers.Dense(classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name="vit")


def mix_ffn_net(side=4, width=16, classes=3):
    """SegFormer's Mix-FFN on (batch, side*side, width) tokens: `Dense ->
    Reshape to an image -> DepthwiseConv2D -> Reshape back -> gelu ->
    Dense`, with a residual `Add`."""
    inputs = keras.Input((side * side, width), name="tokens")
    x = keras.layers.Dense(4 * width, name="mlp_in")(inputs)
    x = keras.layers.Reshape((side, side, 4 * width), name="to_image")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="mix")(x)
    x = keras.layers.Reshape((side * side, 4 * width), name="to_tokens")(x)
    x = keras.layers.Activation("gelu", name="gelu")(x)
    x = keras.layers.Dense(width, name="mlp_out")(x)
    x = keras.layers.Add(name="residual")([inputs, x])
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = keras.layers.Dense(classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name="mix_ffn")


def tf_graph_macs(model, input_shape):
    """MACs of one sample, counted independently of `ekg_keras` from the
    TensorFlow graph of `model`: every MatMul, BatchMatMulV2, Einsum and
    Conv2D, from its static shapes.

    Returns:
        Dict mapping op type to its MACs.
    """
    function = tf.function(model).get_concrete_function(
        tf.TensorSpec((1,) + tuple(input_shape), tf.float32)
    )
    totals = {}
    for op in function.graph.get_operations():
        if op.type not in ("MatMul", "BatchMatMulV2", "Einsum", "Conv2D"):
            continue
        out = op.outputs[0].shape.as_list()
        if op.type == "Einsum":
            equation = op.get_attr("equation").decode()
            sizes = {}
            for letters, tensor in zip(
                equation.split("->")[0].split(","), op.inputs
            ):
                sizes.update(zip(letters, tensor.shape.as_list()))
            macs = int(np.prod(list(sizes.values())))
        elif op.type == "Conv2D":
            kernel = op.inputs[1].shape.as_list()
            macs = int(np.prod(out)) * int(np.prod(kernel[:-1]))
        else:
            a = op.inputs[0].shape.as_list()
            transposed = op.get_attr(
                "transpose_a" if op.type == "MatMul" else "adj_x"
            )
            inner = a[-2] if transposed else a[-1]
            macs = int(np.prod(out)) * inner
        totals[op.type] = totals.get(op.type, 0) + macs
    return totals
