"""attnlab's attention core: kernels, masks, scores, positions and the multi-head module.

The kernel API::

    from attnlab.attention import attend, AttentionResult
    res = attend(q, k, v, mask=None, bias=None, score_mod=None, mask_mod=None,
                 scale=None, dropout_p=0.0, kernel="auto", return_weights=False)
"""

from . import masks
from .api import AttentionInputError, AttentionResult, attend, pick_kernel
from .kernels import chunked_attention, get_kernel, kernel_names, math_attention, register_kernel
from .masks import and_masks, or_masks

__all__ = [
    "attend", "AttentionResult", "AttentionInputError", "pick_kernel", "kernel_names",
    "get_kernel", "register_kernel", "math_attention", "chunked_attention",
    "masks", "and_masks", "or_masks",
]
