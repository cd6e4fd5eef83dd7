"""PyTorch FlexAttention (``torch.nn.attention.flex_attention``) where it runs.

attnlab's mask tensors, biases, score_mods and mask_mods translate one to one: a mask tensor or
a bias becomes an indexed lookup inside the mask_mod / score_mod, and the mask_mod becomes a
``BlockMask`` so FlexAttention skips the blocks it rules out. FlexAttention is meant to be
compiled; uncompiled it materialises the scores (PyTorch warns). Set :data:`COMPILE` to False
to run it eagerly (the tests do, to try many shapes without a compile each).

Limits, stated by :func:`_why_not`: no weights, no dropout, and on CPU no backward pass
(PyTorch 2.13 implements none).
"""

from __future__ import annotations

import functools
import warnings

import torch

from ..masks import and_masks
from .base import AttentionRequest, FunctionKernel, register_kernel

COMPILE = True  # compile flex_attention (the fast path); False runs it eagerly


def _flex_module():
    try:
        from torch.nn.attention import flex_attention as fa
    except ImportError:  # pragma: no cover - older PyTorch
        return None
    return fa


def _why_not(req: AttentionRequest) -> str | None:
    if _flex_module() is None:
        return "this PyTorch has no torch.nn.attention.flex_attention"
    if req.return_weights:
        return "flex cannot return attention weights (use kernel='chunked' or 'math')"
    if req.dropout_p > 0:
        return "flex has no dropout (use kernel='chunked', 'sdpa' or 'math')"
    if req.q.device.type == "cpu" and req.needs_grad:
        return "FlexAttention has no backward pass on CPU in this PyTorch (use kernel='chunked')"
    return None


@functools.lru_cache(maxsize=None)
def _compiled():
    return torch.compile(_flex_module().flex_attention, dynamic=False)


def _flex(req: AttentionRequest):
    fa = _flex_module()
    B, H, Hkv, Lq, Lk, _ = req.shape
    mask_mod = req.mask_mod
    if req.mask is not None:
        full_mask = req.mask.expand(B, H, Lq, Lk)  # a view: stride 0 on broadcast dims

        def tensor_mask(b, h, q_idx, kv_idx):
            return full_mask[b, h, q_idx, kv_idx]

        mask_mod = tensor_mask if mask_mod is None else and_masks(mask_mod, tensor_mask)
    score_mod = req.score_mod
    if req.bias is not None:
        full_bias = req.bias.expand(B, H, Lq, Lk)
        user_mod = score_mod

        def score_mod(score, b, h, q_idx, kv_idx):
            score = score + full_bias[b, h, q_idx, kv_idx]
            return score if user_mod is None else user_mod(score, b, h, q_idx, kv_idx)

    block_mask = None
    if mask_mod is not None:
        block_mask = fa.create_block_mask(mask_mod, B, H, Lq, Lk, device=req.q.device)
    fn = _compiled() if COMPILE else fa.flex_attention
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        out = fn(req.q, req.k, req.v, score_mod=score_mod, block_mask=block_mask, scale=req.scale,
                 enable_gqa=Hkv != H)
    return out, None


FLEX = register_kernel(FunctionKernel("flex", _flex, _why_not))
