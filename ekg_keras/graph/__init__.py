"""Channel graph: which channels of a model must be pruned together."""

from ekg_keras.graph.channel_graph import ChannelGraph
from ekg_keras.graph.channel_graph import ChannelGroup
from ekg_keras.graph.channel_graph import ChannelMap
from ekg_keras.graph.channel_graph import LayerChannels
from ekg_keras.graph.handlers import IncompatibleChannels
from ekg_keras.graph.handlers import LayerHandler
from ekg_keras.graph.handlers import PassThrough
from ekg_keras.graph.handlers import SpatialPassThrough
from ekg_keras.graph.registry import get_handler
from ekg_keras.graph.registry import register_handler
from ekg_keras.graph.registry import register_passthrough
from ekg_keras.graph.tracer import trace
