"""Small KerasHub vision models with random weights, one per family.

Each builder takes an `image_shape` (fixed, or KerasHub's dynamic default
`(None, None, 3)`) and returns the family's classifier or segmenter task,
built from its backbone class with a configuration small enough to build
and prune on a CPU in seconds. Shared by tests/test_prune_kerashub.py and
benchmarks/kerashub.py.
"""

import keras
import keras_hub

SIZE = 64  # The fixed image side the tests and the benchmark count at.


def _classifier(task_class, backbone, classes=10):
    return task_class(backbone=backbone, num_classes=classes)


def resnet_v1(image_shape):
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        image_shape=image_shape,
    )
    return _classifier(keras_hub.models.ResNetImageClassifier, backbone)


def resnet_v2(image_shape):
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="bottleneck_block",
        use_pre_activation=True,
        image_shape=image_shape,
    )
    return _classifier(keras_hub.models.ResNetImageClassifier, backbone)


def resnet_vd(image_shape):
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[8, 8, 16],
        input_conv_kernel_sizes=[3, 3, 3],
        stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="bottleneck_block_vd",
        image_shape=image_shape,
    )
    return _classifier(keras_hub.models.ResNetImageClassifier, backbone)


def cspnet(image_shape):
    backbone = keras_hub.models.CSPNetBackbone(
        stem_filters=16,
        stem_kernel_size=3,
        stem_strides=2,
        stackwise_depth=[1, 1],
        stackwise_strides=[1, 2],
        stackwise_num_filters=[16, 32],
        block_type="dark_block",
        stage_type="csp",
        expand_ratio=[2.0],
        bottle_ratio=[0.5],
        block_ratio=[1.0],
        down_growth=True,
        image_shape=image_shape,
    )
    return _classifier(keras_hub.models.CSPNetImageClassifier, backbone)


def densenet(image_shape):
    backbone = keras_hub.models.DenseNetBackbone(
        stackwise_num_repeats=[2, 2],
        growth_rate=8,
        image_shape=image_shape,
    )
    return _classifier(keras_hub.models.DenseNetImageClassifier, backbone)


def _efficientnet(
    image_shape, block_types, se_ratios=(0.0, 0.25, 0.25), **kwargs
):
    stacks = len(block_types)
    backbone = keras_hub.models.EfficientNetBackbone(
        stackwise_width_coefficients=[1.0] * stacks,
        stackwise_depth_coefficients=[1.0] * stacks,
        stackwise_kernel_sizes=[3] * stacks,
        stackwise_num_repeats=[1] * stacks,
        stackwise_input_filters=[16, 16, 24][:stacks],
        stackwise_output_filters=[16, 24, 32][:stacks],
        stackwise_expansion_ratios=[1, 4, 4][:stacks],
        stackwise_squeeze_and_excite_ratios=list(se_ratios)[:stacks],
        stackwise_strides=[1, 2, 2][:stacks],
        stackwise_block_types=block_types,
        input_shape=image_shape,
        num_features=64,
        **kwargs,
    )
    return _classifier(keras_hub.models.EfficientNetImageClassifier, backbone)


def efficientnet_v1(image_shape):
    return _efficientnet(image_shape, ["v1", "v1", "v1"])


def efficientnet_v2(image_shape):
    return _efficientnet(image_shape, ["fused", "fused", "unfused"])


def efficientnet_lite(image_shape):
    return _efficientnet(
        image_shape,
        ["v1", "v1", "v1"],
        activation="relu6",
        se_ratios=(0.0, 0.0, 0.0),
    )


def mobilenet_v3(image_shape):
    backbone = keras_hub.models.MobileNetBackbone(
        stackwise_expansion=[[40, 56], [64, 72]],
        stackwise_num_blocks=[2, 2],
        stackwise_num_filters=[[16, 16], [24, 24]],
        stackwise_kernel_size=[[3, 3], [5, 5]],
        stackwise_num_strides=[[2, 1], [2, 1]],
        stackwise_se_ratio=[[None, None], [0.25, 0.25]],
        stackwise_activation=[["relu", "relu"], ["hard_swish", "hard_swish"]],
        stackwise_padding=[[1, 1], [2, 2]],
        output_num_filters=64,
        depthwise_filters=8,
        depthwise_stride=2,
        depthwise_residual=False,
        squeeze_and_excite=0.5,
        last_layer_filter=64,
        image_shape=image_shape,
    )
    return _classifier(keras_hub.models.MobileNetImageClassifier, backbone)


def hgnetv2(image_shape):
    backbone = keras_hub.models.HGNetV2Backbone(
        depths=[1, 1],
        embedding_size=16,
        hidden_sizes=[32, 64],
        stem_channels=[3, 8, 16],
        hidden_act="relu",
        use_learnable_affine_block=False,
        stackwise_stage_filters=[(16, 8, 32, 1, 2, 3), (32, 16, 64, 1, 2, 3)],
        apply_downsample=[False, True],
        use_lightweight_conv_block=[False, True],
        image_shape=image_shape,
    )
    return keras_hub.models.HGNetV2ImageClassifier(
        backbone=backbone, preprocessor=None, num_classes=10
    )


def vgg(image_shape):
    backbone = keras_hub.models.VGGBackbone(
        stackwise_num_repeats=[1, 2],
        stackwise_num_filters=[16, 32],
        image_shape=image_shape,
    )
    return keras_hub.models.VGGImageClassifier(
        backbone=backbone, num_classes=10, pooling_hidden_dim=32
    )


def xception(image_shape):
    backbone = keras_hub.models.XceptionBackbone(
        stackwise_conv_filters=[[8, 16], [32, 32], [32, 64]],
        stackwise_pooling=[False, True, False],
        image_shape=image_shape,
    )
    return _classifier(keras_hub.models.XceptionImageClassifier, backbone)


def _mit_backbone(image_shape):
    return keras_hub.models.MiTBackbone(
        layerwise_depths=[1, 1],
        num_layers=2,
        layerwise_num_heads=[1, 2],
        layerwise_sr_ratios=[2, 1],
        max_drop_path_rate=0.0,
        layerwise_patch_sizes=[7, 3],
        layerwise_strides=[4, 2],
        image_shape=image_shape,
        hidden_dims=[16, 32],
    )


def mit(image_shape):
    return _classifier(
        keras_hub.models.MiTImageClassifier, _mit_backbone(image_shape)
    )


def deeplab_v3(image_shape):
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 32, 32],
        stackwise_num_blocks=[1, 1, 1],
        stackwise_num_strides=[1, 2, 2],
        block_type="basic_block",
        image_shape=image_shape,
    )
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder,
        low_level_feature_key="P2",
        spatial_pyramid_pooling_key="P4",
        upsampling_size=4,
        dilation_rates=[2, 4],
        projection_filters=16,
        image_shape=image_shape,
    )
    return keras_hub.models.DeepLabV3ImageSegmenter(
        backbone=backbone, num_classes=3
    )


def vit(image_shape):
    backbone = keras_hub.models.ViTBackbone(
        image_shape=image_shape,
        patch_size=8,
        num_layers=3,
        num_heads=4,
        hidden_dim=32,
        mlp_dim=128,
    )
    return _classifier(keras_hub.models.ViTImageClassifier, backbone)


BUILDERS = {
    builder.__name__: builder
    for builder in (
        resnet_v1,
        resnet_v2,
        resnet_vd,
        cspnet,
        densenet,
        efficientnet_v1,
        efficientnet_v2,
        efficientnet_lite,
        mobilenet_v3,
        hgnetv2,
        vgg,
        xception,
        mit,
        deeplab_v3,
        vit,
    )
}

# Families KerasHub builds at a fixed image size only (ViT: learned
# position embeddings; MiT: the backbone computes its reshapes from the
# image size when it is built).
FIXED_SIZE_ONLY = {"vit", "mit"}


def build(family, dynamic=False):
    """The family's task model at `SIZE`x`SIZE`, or with KerasHub's dynamic
    `(None, None, 3)` input."""
    keras.utils.set_random_seed(0)
    shape = (None, None, 3) if dynamic else (SIZE, SIZE, 3)
    return BUILDERS[family](shape)
