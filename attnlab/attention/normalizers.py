"""Normalisers: turn masked scores into attention weights along the last dim, registered by name.

A normaliser is a callable ``weights = norm(scores)``; masked positions arrive as -inf. Every
normaliser here keeps two promises:

* a masked (-inf) position gets weight exactly 0;
* a row that is entirely -inf gives all zeros, with no NaN in forward or backward.

They plug into the reference kernel::

    out, w = math_attention(q, k, v, mask=m, normalizer=create_normalizer("topk", k=4))

All are ``nn.Module`` s without parameters, so a stochastic one (gumbel) follows its parent's
``train()`` / ``eval()``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from ..registry import Registry
from .kernels.math import safe_softmax

NORMALIZERS: Registry[Callable[..., Callable[[Tensor], Tensor]]] = Registry("normalizer", known="known normalizers")


def register_normalizer(name: str):
    """Decorator: register a normaliser factory (a class or a function returning a callable).

    Args:
        name: the name :func:`create_normalizer` looks up.

    Raises:
        ValueError: another factory is already registered under ``name``.
    """
    return NORMALIZERS.register(name)


def create_normalizer(name: str, **kwargs) -> Callable[[Tensor], Tensor]:
    """Build the normaliser registered under ``name``.

    Args:
        name: a registered name (see :func:`normalizer_names`).
        **kwargs: passed to its constructor (``k`` for topk; ``tau``, ``hard`` for gumbel).
    """
    return NORMALIZERS.get(name)(**kwargs)


def normalizer_names() -> list[str]:
    """Names of all registered normalisers."""
    return NORMALIZERS.names()


def _alive(scores: Tensor) -> Tensor:
    """(..., 1) bool: rows with at least one finite (attendable) score."""
    return ~torch.isneginf(scores).all(-1, keepdim=True)


def _one_hot_argmax(scores: Tensor) -> Tensor:
    """One-hot of each row's argmax (first on ties); all zeros on dead rows."""
    idx = scores.argmax(-1, keepdim=True)  # (..., 1)
    hot = torch.zeros_like(scores).scatter_(-1, idx, 1.0)
    return hot * _alive(scores)


def _straight_through(hard: Tensor, soft: Tensor) -> Tensor:
    """Forward value ``hard``, gradient of ``soft``.

    Written ``hard + (soft - soft.detach())`` rather than ``hard - soft.detach() + soft``: the
    same gradient, but the forward is exactly ``hard`` (no 1 - p + p rounding).
    """
    return hard + (soft - soft.detach())


@register_normalizer("softmax")
class Softmax(nn.Module):
    """Softmax along the last dim; dead rows give zeros (:func:`safe_softmax`)."""

    def forward(self, scores: Tensor) -> Tensor:
        return safe_softmax(scores, dim=-1)


@register_normalizer("topk")
class TopK(nn.Module):
    """Top-k attention: softmax over each row's ``k`` highest scores, 0 elsewhere.

    Exactly ``min(k, Lk)`` positions are kept per row (ties broken by :func:`torch.topk`); a row
    with fewer than ``k`` finite scores keeps only those, since a kept -inf still weighs 0.

    Args:
        k: how many scores to keep per row (>= 1).
    """

    def __init__(self, k: int):
        super().__init__()
        if int(k) < 1:
            raise ValueError(f"topk: k must be >= 1, got {k}")
        self.k = int(k)

    def forward(self, scores: Tensor) -> Tensor:
        k = min(self.k, scores.shape[-1])
        vals, idx = scores.topk(k, dim=-1)  # (..., k)
        kept = torch.full_like(scores, float("-inf")).scatter(-1, idx, vals)  # (..., Lk)
        return safe_softmax(kept, dim=-1)

    def extra_repr(self) -> str:
        return f"k={self.k}"


@register_normalizer("hardmax")
class Hardmax(nn.Module):
    """One-hot argmax in the forward pass, softmax's gradient in the backward (straight-through).

    Ties go to the first maximal position.
    """

    def forward(self, scores: Tensor) -> Tensor:
        return _straight_through(_one_hot_argmax(scores), safe_softmax(scores, dim=-1))


@register_normalizer("gumbel")
class GumbelSoftmax(nn.Module):
    """Gumbel-softmax (Jang et al. 2017; Maddison et al. 2017): ``softmax((s + g) / tau)``.

    Noise ``g ~ Gumbel(0, 1)`` is drawn only when sampling, which by default means training mode
    (``forward(s, sample=None)`` follows ``self.training``). Without sampling the module is
    deterministic: ``softmax(s / tau)`` when ``hard=False`` (the temperature-scaled mean-field
    relaxation), the one-hot argmax of ``s`` when ``hard=True`` (the mode of the Gumbel-max
    distribution). With ``hard=True`` the gradient is the soft relaxation's (straight-through).
    Use ``torch.manual_seed`` (or pass ``generator``) for reproducible samples.

    Args:
        tau: temperature (> 0).
        hard: return one-hot rows.
    """

    def __init__(self, tau: float = 1.0, hard: bool = False):
        super().__init__()
        if not tau > 0:
            raise ValueError(f"gumbel: tau must be > 0, got {tau}")
        self.tau = float(tau)
        self.hard = bool(hard)

    def forward(
        self, scores: Tensor, sample: bool | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Weights (..., Lk) from masked scores, sampled or not.

        Args:
            scores: (..., Lk) masked scores.
            sample: draw Gumbel noise; defaults to ``self.training``.
            generator: random generator for the noise.
        """
        sample = self.training if sample is None else sample
        s = scores + _gumbel_noise(scores, generator) if sample else scores
        soft = safe_softmax(s / self.tau, dim=-1)
        if not self.hard:
            return soft
        return _straight_through(_one_hot_argmax(s), soft)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, hard={self.hard}"


def _gumbel_noise(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard Gumbel noise ``-log(-log u)`` shaped like ``like``, u clamped away from 0 and 1."""
    fi = torch.finfo(like.dtype)
    u = torch.rand(like.shape, dtype=like.dtype, device=like.device, generator=generator)
    u = u.clamp(min=fi.tiny, max=1.0 - fi.eps)
    return -torch.log(-torch.log(u))


@register_normalizer("sparsemax")
class Sparsemax(nn.Module):
    """Sparsemax (Martins & Astudillo 2016): Euclidean projection of the scores onto the simplex.

    ``p_i = max(s_i - tau, 0)`` with ``tau`` chosen so that ``sum p = 1``; many weights are exactly
    0. The gradient is autograd's through the sort-based threshold, which is the paper's
    ``diag(S) - S Sᵀ / |S|`` Jacobian on the support ``S``.
    """

    def forward(self, scores: Tensor) -> Tensor:
        neg = torch.isneginf(scores)
        alive = ~neg.all(-1, keepdim=True)  # (..., 1)
        m = scores.amax(-1, keepdim=True).masked_fill(~alive, 0.0)  # (..., 1)
        # After the shift the row max is 0 and tau >= -1, so -2 is safely outside the support;
        # masking before the sort keeps -inf (and its NaN gradients) out of the arithmetic.
        z = torch.where(neg, torch.full_like(scores, -2.0), scores - m)  # (..., Lk)
        zs, _ = z.sort(-1, descending=True)  # (..., Lk)
        ks = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)  # (Lk,)
        cums = zs.cumsum(-1)  # (..., Lk)
        support = (1 + ks * zs) > cums  # (..., Lk), True on a prefix
        k = support.sum(-1, keepdim=True).clamp(min=1)  # (..., 1)
        tau = (cums.gather(-1, k - 1) - 1) / k.to(z.dtype)  # (..., 1)
        p = torch.clamp(z - tau, min=0.0)  # (..., Lk)
        return torch.where(alive & ~neg, p, torch.zeros_like(p))


__all__ = [
    "register_normalizer", "create_normalizer", "normalizer_names",
    "Softmax", "TopK", "Hardmax", "GumbelSoftmax", "Sparsemax",
]
