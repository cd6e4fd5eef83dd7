"""Score functions: how a query and a key become one attention score, registered by name.

Two families:

* **dot-product scores** (``dot_product = True``): the score is ``q'·k'ᵀ·scale`` for some
  transformed ``q'``, ``k'``. :meth:`Score.prepare` returns ``(q', k', scale)``, so the caller can
  run ``attend(q', k', v, scale=scale, ...)`` on any kernel, fused ones included.
* **other scores** (``dot_product = False``, e.g. additive): only :meth:`Score.forward` exists; it
  gives raw scores (B, H, Lq, Lk) to pass as ``math_attention(..., scores=...)``.

    score = create_score("cosine", head_dim=64, num_heads=8, init_scale=10.0)
    if score.dot_product:
        q2, k2, s = score.prepare(q, k)
        res = attend(q2, k2, v, scale=s)
    else:
        out, w = math_attention(q, k, v, scores=score(q, k))

Shapes everywhere: q (B, H, Lq, D); k (B, Hkv, Lk, D) with H a multiple of Hkv.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..registry import Registry
from .kernels.math import repeat_kv

SCORES: Registry[type["Score"]] = Registry("score", known="known scores")


def register_score(name: str) -> Callable[[type["Score"]], type["Score"]]:
    """Class decorator: register a :class:`Score` subclass under ``name``.

    Args:
        name: the name :func:`create_score` looks up.

    Raises:
        ValueError: another class is already registered under ``name``.
    """

    def deco(cls: type[Score]) -> type[Score]:
        SCORES.register(name, cls)
        cls.name = name
        return cls

    return deco


def create_score(name: str, *, head_dim: int, num_heads: int, **kwargs) -> "Score":
    """Build the score function registered under ``name``.

    Args:
        name: a registered name (see :func:`score_names`).
        head_dim: D, the per-head query/key size.
        num_heads: H, the number of query heads (per-head parameters are sized by it).
        **kwargs: passed to the score's constructor (e.g. ``init_scale`` for cosine).
    """
    return SCORES.get(name)(head_dim=head_dim, num_heads=num_heads, **kwargs)


def score_names() -> list[str]:
    """Names of all registered score functions."""
    return SCORES.names()


class Score(nn.Module):
    """Base class: ``forward(q, k) -> scores (B, H, Lq, Lk)``.

    Attributes:
        dot_product: True when :meth:`prepare` can express the score as ``q'·k'ᵀ·scale``.
        name: the registered name (set by :func:`register_score`).
    """

    dot_product: bool = True
    name: str = ""

    def __init__(self, head_dim: int, num_heads: int):
        super().__init__()
        self.head_dim = head_dim
        self.num_heads = num_heads

    def prepare(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor, float]:
        """Return ``(q', k', scale)`` with ``scores = q'·k'ᵀ·scale`` (dot-product scores only).

        Args:
            q: (B, H, Lq, D) queries.
            k: (B, Hkv, Lk, D) keys.
        """
        raise NotImplementedError(
            f"score {self.name!r} is not a dot product: call it for raw scores and pass them "
            "as math_attention(..., scores=...)"
        )

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        """Raw scores (B, H, Lq, Lk); the default works for every dot-product score.

        Args:
            q: (B, H, Lq, D) queries.
            k: (B, Hkv, Lk, D) keys; H must be a multiple of Hkv.
        """
        q2, k2, scale = self.prepare(q, k)
        k2 = repeat_kv(k2, _groups(q, k))  # (B, H, Lk, D)
        return torch.matmul(q2, k2.transpose(-2, -1)) * scale  # (B, H, Lq, Lk)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, num_heads={self.num_heads}"


def _groups(q: Tensor, k: Tensor) -> int:
    H, Hkv = q.shape[1], k.shape[1]
    if Hkv == 0 or H % Hkv != 0:
        raise ValueError(
            f"q has {H} heads, not a multiple of k's {Hkv} heads: q {tuple(q.shape)}, k {tuple(k.shape)}"
        )
    return H // Hkv


def _check_heads(score: Score, q: Tensor) -> None:
    if q.shape[1] != score.num_heads:
        raise ValueError(
            f"score {score.name!r} was built for num_heads={score.num_heads}, got q of shape {tuple(q.shape)}"
        )


# ----------------------------------------------------------------------------- dot-product family


@register_score("scaled_dot")
class ScaledDot(Score):
    """Scaled dot product (Vaswani et al. 2017): ``q·kᵀ / sqrt(D)``."""

    def prepare(self, q, k):
        return q, k, q.shape[-1] ** -0.5


@register_score("dot")
class Dot(Score):
    """Plain dot product (Luong et al. 2015, "dot"): ``q·kᵀ``."""

    def prepare(self, q, k):
        return q, k, 1.0


@register_score("cosine")
class Cosine(Score):
    """Cosine similarity times a learnable temperature: ``t · (q/|q|)·(k/|k|)ᵀ``.

    As in CLIP (Radford et al. 2021), the temperature is learnt as a log ``logit_scale`` and
    ``t = exp(logit_scale)`` is clamped at ``max_scale``. ``prepare`` folds ``t`` into ``q'`` and
    returns scale 1.0, so the temperature keeps its gradient on every kernel.

    Args:
        head_dim, num_heads: sizes (no per-head parameters here).
        init_scale: initial temperature ``t`` (``logit_scale = log(init_scale)``).
        max_scale: upper clamp of ``t``.
    """

    def __init__(self, head_dim: int, num_heads: int, init_scale: float = 10.0, max_scale: float = 100.0):
        super().__init__(head_dim, num_heads)
        if not 0 < init_scale <= max_scale:
            raise ValueError(f"cosine: need 0 < init_scale <= max_scale, got {init_scale}, {max_scale}")
        self.max_scale = float(max_scale)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    @property
    def scale(self) -> Tensor:
        """The current temperature ``exp(logit_scale)``, clamped at ``max_scale`` (0-dim tensor)."""
        return self.logit_scale.exp().clamp(max=self.max_scale)

    def prepare(self, q, k):
        t = self.scale.to(q.dtype)
        return F.normalize(q, dim=-1) * t, F.normalize(k, dim=-1), 1.0  # (B, H, Lq, D), (B, Hkv, Lk, D)


@register_score("general")
class General(Score):
    """Bilinear score (Luong et al. 2015, "general"): ``q W kᵀ`` with one (D, D) matrix per head.

    Args:
        head_dim, num_heads: sizes; ``W`` has shape (H, D, D).
        init: "identity" (starts as the plain dot product) or "xavier".
    """

    def __init__(self, head_dim: int, num_heads: int, init: str = "identity"):
        super().__init__(head_dim, num_heads)
        W = torch.empty(num_heads, head_dim, head_dim)
        if init == "identity":
            W.copy_(torch.eye(head_dim).expand_as(W))
        elif init == "xavier":
            for h in range(num_heads):
                nn.init.xavier_uniform_(W[h])
        else:
            raise ValueError(f"general: unknown init {init!r}; known: identity, xavier")
        self.W = nn.Parameter(W)  # (H, D, D)

    def prepare(self, q, k):
        _check_heads(self, q)
        qW = torch.einsum("bhld,hde->bhle", q, self.W.to(q.dtype))  # (B, H, Lq, D)
        return qW, k, 1.0


# ----------------------------------------------------------------------------- additive


@register_score("additive")
class Additive(Score):
    """Additive (concat / MLP) score (Bahdanau et al. 2015): ``vᵀ tanh(W q + U k)``.

    The (B, H, Lq, Lk, A) tensor of hidden activations is the cost of this score, so the forward
    pass walks over query chunks sized to keep one chunk's activations under ``max_chunk_bytes``.
    With autograd on and more than one chunk, each chunk is checkpointed (recomputed in backward)
    so training memory stays bounded too.

    Args:
        head_dim, num_heads: sizes; parameters are per head: W (H, D, A), U (H, D, A), v (H, A).
        attn_dim: A, the hidden size; defaults to ``head_dim``.
        max_chunk_bytes: budget for one chunk's (B, H, chunk, Lk, A) activations.
        checkpoint_chunks: recompute chunks in backward instead of storing their activations.
    """

    dot_product = False

    def __init__(
        self,
        head_dim: int,
        num_heads: int,
        attn_dim: int | None = None,
        max_chunk_bytes: int = 64 * 2**20,
        checkpoint_chunks: bool = True,
    ):
        super().__init__(head_dim, num_heads)
        A = head_dim if attn_dim is None else attn_dim
        self.attn_dim = A
        self.max_chunk_bytes = int(max_chunk_bytes)
        self.checkpoint_chunks = checkpoint_chunks
        bound = head_dim**-0.5
        self.W = nn.Parameter(torch.empty(num_heads, head_dim, A).uniform_(-bound, bound))  # (H, D, A)
        self.U = nn.Parameter(torch.empty(num_heads, head_dim, A).uniform_(-bound, bound))  # (H, D, A)
        self.v = nn.Parameter(torch.empty(num_heads, A).uniform_(-A**-0.5, A**-0.5))  # (H, A)

    def chunk_size(self, q: Tensor, k: Tensor) -> int:
        """Queries per chunk so that one (B, H, chunk, Lk, A) tensor fits ``max_chunk_bytes``."""
        B, H, _, _ = q.shape
        row = B * H * k.shape[2] * self.attn_dim * q.element_size()
        return max(1, self.max_chunk_bytes // max(row, 1))

    def forward(self, q, k):
        _check_heads(self, q)
        k = repeat_kv(k, _groups(q, k))  # (B, H, Lk, D)
        Wq = torch.einsum("bhld,hda->bhla", q, self.W.to(q.dtype))  # (B, H, Lq, A)
        Uk = torch.einsum("bhld,hda->bhla", k, self.U.to(q.dtype))  # (B, H, Lk, A)
        v = self.v.to(q.dtype)
        Lq = q.shape[2]
        step = self.chunk_size(q, k)
        if step >= Lq:
            return _additive_block(Wq, Uk, v)
        recompute = self.checkpoint_chunks and torch.is_grad_enabled() and (
            Wq.requires_grad or Uk.requires_grad or v.requires_grad
        )
        parts = []
        for i in range(0, Lq, step):
            Wq_c = Wq[:, :, i : i + step]  # (B, H, c, A)
            if recompute:
                parts.append(checkpoint(_additive_block, Wq_c, Uk, v, use_reentrant=False))
            else:
                parts.append(_additive_block(Wq_c, Uk, v))
        return torch.cat(parts, dim=2)  # (B, H, Lq, Lk)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, attn_dim={self.attn_dim}"


def _additive_block(Wq: Tensor, Uk: Tensor, v: Tensor) -> Tensor:
    """``vᵀ tanh(Wq + Uk)`` for one block of c queries.

    Shapes: Wq (B, H, c, A), Uk (B, H, Lk, A), v (H, A) -> (B, H, c, Lk).
    """
    hidden = torch.tanh(Wq.unsqueeze(3) + Uk.unsqueeze(2))  # (B, H, c, Lk, A)
    return torch.einsum("bhqka,ha->bhqk", hidden, v)  # (B, H, c, Lk)


__all__ = [
    "Score", "register_score", "create_score", "score_names",
    "ScaledDot", "Dot", "Cosine", "General", "Additive",
]
