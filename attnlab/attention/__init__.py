"""attnlab's attention core: kernels, masks, scores, positions and the multi-head module.

The kernel API::

    from attnlab.attention import attend, AttentionResult
    res = attend(q, k, v, mask=None, bias=None, score_mod=None, mask_mod=None,
                 scale=None, dropout_p=0.0, kernel="auto", return_weights=False)
    res.out      # (B, H, Lq, Dv)
    res.weights  # (B, H, Lq, Lk) or None
    res.kernel   # which kernel ran

Masks are boolean, True = may attend. Kernels ("math", "sdpa", "chunked", "flex"), scores,
normalisers and positional encodings are registries: a new variant is one small file.
"""

from . import masks
from .api import AttentionInputError, AttentionResult, attend, pick_kernel
from .cache import KVCache, LayerCaches
from .kernels import chunked_attention, get_kernel, kernel_names, math_attention, register_kernel
from .masks import and_masks, or_masks
from .multihead import AttentionOutput, MultiHeadAttention
from .normalizers import create_normalizer, normalizer_names, register_normalizer
from .positions import PositionalEncoding, create_position, position_names, register_position
from .scores import Score, create_score, register_score, score_names

__all__ = [
    "attend", "AttentionResult", "AttentionInputError", "pick_kernel", "kernel_names",
    "get_kernel", "register_kernel", "math_attention", "chunked_attention",
    "masks", "and_masks", "or_masks",
    "MultiHeadAttention", "AttentionOutput", "KVCache", "LayerCaches",
    "Score", "create_score", "register_score", "score_names",
    "create_normalizer", "register_normalizer", "normalizer_names",
    "PositionalEncoding", "create_position", "register_position", "position_names",
]
