"""Building blocks on top of the attention core: norms, feed-forward networks, embeddings, the
transformer block, CBAM spatial attention and RNN attention.

Blocks take their parts as arguments (a norm name or factory, an activation name or callable,
a positional encoding); norms and activations are small registries.
"""

from .norm import LayerNorm, RMSNorm, create_norm, norm_names, register_norm
from .feedforward import FeedForward, activation_names, get_activation, register_activation
from .embeddings import Embeddings, PatchEmbedding
from .blocks import BlockOutput, TransformerBlock
from .spatial import CBAM, CBAMOutput, ChannelAttention, SpatialAttention
from .rnn_attention import BahdanauAttention, LuongAttention, RNNAttentionOutput

__all__ = [
    "LayerNorm", "RMSNorm", "create_norm", "norm_names", "register_norm",
    "FeedForward", "activation_names", "get_activation", "register_activation",
    "Embeddings", "PatchEmbedding", "TransformerBlock", "BlockOutput",
    "CBAM", "CBAMOutput", "ChannelAttention", "SpatialAttention",
    "BahdanauAttention", "LuongAttention", "RNNAttentionOutput",
]
