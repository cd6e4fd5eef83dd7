"""Attention over the states of a recurrent encoder, as in early neural machine translation.

* Bahdanau (additive; Bahdanau, Cho & Bengio 2015): ``e_ij = vᵀ tanh(W s_i + U h_j)``.
* Luong (multiplicative; Luong, Pham & Manning 2015): ``dot`` ``e_ij = s_iᵀ h_j`` and
  ``general`` ``e_ij = s_iᵀ W h_j``.

Both take a decoder state (or several) and the encoder states, and return the context vector
with the weights:

    attn = BahdanauAttention(query_dim=256, key_dim=512)
    res = attn(s, h, mask=lengths_mask)    # s (B, 256), h (B, Lk, 512), mask (B, Lk) True = real
    res.context   # (B, 512)
    res.weights   # (B, Lk), sums to 1 over real states, 0 on padding

The softmax and masking run in attnlab's kernels (``math_attention`` for the additive scores,
``attend`` for the dot products), so padding follows the one mask convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..attention import attend, math_attention


@dataclass
class RNNAttentionOutput:
    """What the RNN attention layers return.

    Attributes:
        context: (B, Dv) or (B, Lq, Dv) weighted sum of the values.
        weights: (B, Lk) or (B, Lq, Lk) attention weights.
    """

    context: Tensor
    weights: Tensor


class BahdanauAttention(nn.Module):
    """Additive attention: ``vᵀ tanh(W q + U k)``.

    Args:
        query_dim: width of the decoder state.
        key_dim: width of the encoder states.
        attn_dim: hidden width A; defaults to ``key_dim``.
    """

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int | None = None):
        super().__init__()
        A = key_dim if attn_dim is None else attn_dim
        self.query_proj = nn.Linear(query_dim, A, bias=False)  # W
        self.key_proj = nn.Linear(key_dim, A, bias=True)  # U (the bias is the paper's b)
        self.v = nn.Linear(A, 1, bias=False)

    def forward(self, query: Tensor, keys: Tensor, values: Tensor | None = None,
                mask: Tensor | None = None) -> RNNAttentionOutput:
        """Attend from ``query`` over ``keys``.

        Args:
            query: (B, Dq) one decoder state, or (B, Lq, Dq) several.
            keys: (B, Lk, Dk) encoder states.
            values: (B, Lk, Dv); defaults to ``keys``.
            mask: (B, Lk) bool, True = real state (may attend).
        """
        q, single = _as_steps(query)  # (B, Lq, Dq)
        values = keys if values is None else values
        hidden = torch.tanh(self.query_proj(q).unsqueeze(2) + self.key_proj(keys).unsqueeze(1))  # (B, Lq, Lk, A)
        scores = self.v(hidden).squeeze(-1).unsqueeze(1)  # (B, 1, Lq, Lk)
        out, weights = math_attention(
            q.unsqueeze(1), keys.unsqueeze(1), values.unsqueeze(1), scores=scores, mask=_key_mask(mask, keys),
        )  # (B, 1, Lq, Dv), (B, 1, Lq, Lk)
        return _result(out, weights, single)


class LuongAttention(nn.Module):
    """Multiplicative attention: ``dot`` (``qᵀ k``, needs equal widths) or ``general`` (``qᵀ W k``).

    Args:
        query_dim: width of the decoder state.
        key_dim: width of the encoder states; defaults to ``query_dim``.
        score: "general" or "dot".
    """

    def __init__(self, query_dim: int, key_dim: int | None = None, score: str = "general"):
        super().__init__()
        key_dim = query_dim if key_dim is None else key_dim
        if score not in ("general", "dot"):
            raise ValueError(f"LuongAttention: unknown score {score!r}; known: dot, general")
        if score == "dot" and key_dim != query_dim:
            raise ValueError(f"LuongAttention: score='dot' needs query_dim == key_dim, got {query_dim} and {key_dim}")
        self.score = score
        # s W h = (Wᵀ s)·h: project the query into key space, then a plain dot product.
        self.query_proj = nn.Linear(query_dim, key_dim, bias=False) if score == "general" else None

    def forward(self, query: Tensor, keys: Tensor, values: Tensor | None = None,
                mask: Tensor | None = None) -> RNNAttentionOutput:
        """Attend from ``query`` over ``keys`` (arguments as :meth:`BahdanauAttention.forward`)."""
        q, single = _as_steps(query)  # (B, Lq, Dq)
        values = keys if values is None else values
        if self.query_proj is not None:
            q = self.query_proj(q)  # (B, Lq, Dk)
        res = attend(
            q.unsqueeze(1), keys.unsqueeze(1), values.unsqueeze(1), scale=1.0, mask=_key_mask(mask, keys),
            return_weights=True,
        )  # out (B, 1, Lq, Dv), weights (B, 1, Lq, Lk)
        return _result(res.out, res.weights, single)


def _as_steps(query: Tensor) -> tuple[Tensor, bool]:
    if query.dim() == 2:
        return query.unsqueeze(1), True  # (B, 1, Dq)
    if query.dim() == 3:
        return query, False
    raise ValueError(f"query must be (B, Dq) or (B, Lq, Dq), got {tuple(query.shape)}")


def _key_mask(mask: Tensor | None, keys: Tensor) -> Tensor | None:
    if keys.dim() != 3:
        raise ValueError(f"keys must be (B, Lk, Dk), got {tuple(keys.shape)}")
    if mask is None:
        return None
    if mask.dtype != torch.bool or tuple(mask.shape) != tuple(keys.shape[:2]):
        raise ValueError(
            f"mask must be a bool (B, Lk) = {tuple(keys.shape[:2])} tensor, True = real state; "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )
    return mask[:, None, None, :]  # (B, 1, 1, Lk)


def _result(out: Tensor, weights: Tensor, single: bool) -> RNNAttentionOutput:
    out, weights = out.squeeze(1), weights.squeeze(1)  # (B, Lq, Dv), (B, Lq, Lk)
    if single:
        out, weights = out.squeeze(1), weights.squeeze(1)  # (B, Dv), (B, Lk)
    return RNNAttentionOutput(context=out, weights=weights)


__all__ = ["BahdanauAttention", "LuongAttention", "RNNAttentionOutput"]
