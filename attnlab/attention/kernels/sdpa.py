"""PyTorch's fused ``scaled_dot_product_attention``, for requests it can take.

It takes a boolean mask or a float bias, GQA (``enable_gqa``) and dropout, and the plain causal
mask_mod (``masks.causal()`` on a square grid, as ``is_causal=True``, which skips the upper
triangle); it cannot run other score_mod/mask_mods or return weights. attnlab's convention that a query with nothing to attend
to gives zeros is enforced here, independent of which SDPA backend runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..masks import mask_to_bias
from .base import AttentionRequest, FunctionKernel, register_kernel


def _why_not(req: AttentionRequest) -> str | None:
    if req.return_weights:
        return "sdpa cannot return attention weights (use kernel='chunked' or 'math')"
    if req.score_mod is not None or (req.mask_mod is not None and not _is_causal(req)):
        return "sdpa cannot run score_mod/mask_mod (use kernel='chunked', 'flex' or 'math')"
    return None


def _is_causal(req: AttentionRequest) -> bool:
    """Whether the request is exactly SDPA's ``is_causal=True``: masks.causal(0), square, alone."""
    B, H, Hkv, Lq, Lk, D = req.shape
    return (getattr(req.mask_mod, "causal_offset", None) == 0 and Lq == Lk
            and req.mask is None and req.bias is None)


def _sdpa(req: AttentionRequest):
    q, k, v = req.q, req.k, req.v
    attn_mask = None
    dead = None  # (.., Lq, 1) rows with nothing to attend to
    if req.bias is not None:
        bias = req.bias if req.mask is None else req.bias + mask_to_bias(req.mask, req.bias.dtype)
        dead = torch.isneginf(bias).all(-1, keepdim=True)
        attn_mask = bias.masked_fill(dead, 0.0) if dead.any() else bias
    elif req.mask is not None:
        dead = ~req.mask.any(-1, keepdim=True)
        attn_mask = req.mask | dead if dead.any() else req.mask
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        attn_mask = attn_mask.to(q.dtype)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, dropout_p=req.dropout_p, scale=req.scale,
        is_causal=req.mask_mod is not None, enable_gqa=k.shape[1] != q.shape[1],
    )
    if dead is not None and dead.any():
        out = out.masked_fill(dead, 0.0)
    return out, None


SDPA = register_kernel(FunctionKernel("sdpa", _sdpa, _why_not))
