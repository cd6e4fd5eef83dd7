"""The reference kernel: materialised scores, every feature, weights on request.

Every other kernel is tested against this one. It is plain PyTorch, so autograd (and
``gradcheck``) see straight through it, attention weights included.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..masks import index_grid, mask_to_bias
from .base import AttentionRequest, FunctionKernel, register_kernel


def safe_softmax(scores: Tensor, dim: int = -1) -> Tensor:
    """Softmax that returns all zeros (not NaN) for a row whose scores are all -inf.

    Args:
        scores: any floating tensor; -inf marks positions that may not be attended.
        dim: the dimension to normalise over.
    """
    m = scores.amax(dim, keepdim=True)
    m = m.masked_fill(torch.isneginf(m), 0.0)  # dead rows: any finite shift will do
    e = torch.exp(scores - m)
    denom = e.sum(dim, keepdim=True)
    return e / denom.masked_fill(denom == 0, 1.0)


def repeat_kv(x: Tensor, groups: int) -> Tensor:
    """(B, Hkv, L, D) -> (B, Hkv * groups, L, D); head h of the result is KV head h // groups."""
    if groups == 1:
        return x
    return x.repeat_interleave(groups, dim=1)


def math_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: Tensor | None = None,
    bias: Tensor | None = None,
    score_mod=None,
    mask_mod=None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    normalizer: Callable[[Tensor], Tensor] | None = None,
    scores: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Reference attention. Returns (out (B, H, Lq, Dv), weights (B, H, Lq, Lk)).

    Order of operations (the same in every kernel): ``s = q·kᵀ · scale``, ``s += bias``,
    ``s = score_mod(s, b, h, q_idx, kv_idx)``, masked positions become -inf, ``w = softmax(s)``,
    ``out = dropout(w) · v``. The returned weights are before dropout.

    Args:
        q, k, v: (B, H, Lq, D), (B, Hkv, Lk, D), (B, Hkv, Lk, Dv).
        mask: bool, True = may attend, broadcastable to (B, H, Lq, Lk).
        bias: additive, broadcastable to (B, H, Lq, Lk).
        score_mod: ``(score, b, h, q_idx, kv_idx) -> score``.
        mask_mod: ``(b, h, q_idx, kv_idx) -> bool``.
        scale: score scale; defaults to ``1 / sqrt(D)``.
        dropout_p: dropout on the weights.
        normalizer: turns masked scores into weights; defaults to :func:`safe_softmax`.
            Hard and sparse normalisers (``attnlab.attention.normalizers``) plug in here.
        scores: precomputed raw scores (B, H, Lq, Lk), for score functions that are not a dot
            product (additive, ...). Then ``q``/``k`` only give shapes and ``scale`` is unused.
    """
    B, H, Lq, D = q.shape
    Lk = k.shape[-2]
    groups = H // k.shape[1]
    if scores is None:
        scale = D**-0.5 if scale is None else scale
        s = torch.matmul(q, repeat_kv(k, groups).transpose(-2, -1)) * scale  # (B, H, Lq, Lk)
    else:
        s = scores
    if bias is not None:
        s = s + bias
    if score_mod is not None:
        s = score_mod(s, *index_grid(B, H, Lq, Lk, q.device))
    keep = mask
    if mask_mod is not None:
        mm = mask_mod(*index_grid(B, H, Lq, Lk, q.device))
        keep = mm if keep is None else keep & mm
    if keep is not None:
        s = s + mask_to_bias(keep, s.dtype)
    weights = (normalizer or safe_softmax)(s)
    w = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    out = torch.matmul(w, repeat_kv(v, groups))  # (B, H, Lq, Dv)
    return out, weights


def _math(req: AttentionRequest):
    out, weights = math_attention(
        req.q, req.k, req.v, mask=req.mask, bias=req.bias, score_mod=req.score_mod,
        mask_mod=req.mask_mod, scale=req.scale, dropout_p=req.dropout_p,
    )
    return out, (weights if req.return_weights else None)


MATH = register_kernel(FunctionKernel("math", _math, lambda req: None))
