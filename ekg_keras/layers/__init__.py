"""Prunable Keras layers: built-in layers with a filter mask weight."""

from ekg_keras.layers.attention import PrunableMultiHeadAttention
from ekg_keras.layers.batch_normalization import PrunableBatchNormalization
from ekg_keras.layers.conv import PrunableConv1D
from ekg_keras.layers.conv import PrunableConv2D
from ekg_keras.layers.conv import PrunableConv3D
from ekg_keras.layers.conv import PrunableDepthwiseConv1D
from ekg_keras.layers.conv import PrunableDepthwiseConv2D
from ekg_keras.layers.conv import PrunableSeparableConv1D
from ekg_keras.layers.conv import PrunableSeparableConv2D
from ekg_keras.layers.conv_transpose import PrunableConv1DTranspose
from ekg_keras.layers.conv_transpose import PrunableConv2DTranspose
from ekg_keras.layers.conv_transpose import PrunableConv3DTranspose
from ekg_keras.layers.dense import PrunableDense
from ekg_keras.layers.layer_normalization import PrunableLayerNormalization
from ekg_keras.layers.prunable import MODES
from ekg_keras.layers.prunable import PrunableMixin
from ekg_keras.layers.wrapping import PRUNABLE_CLASSES
from ekg_keras.layers.wrapping import is_prunable
from ekg_keras.layers.wrapping import prunable_layers
from ekg_keras.layers.wrapping import strip
from ekg_keras.layers.wrapping import wrap
