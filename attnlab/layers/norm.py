"""Normalisation layers, registered by name: ``layernorm`` (Ba et al. 2016) and ``rmsnorm``
(Zhang & Sennrich 2019).

    norm = create_norm("rmsnorm", 512, eps=1e-6)
    y = norm(x)                                   # (..., 512) -> (..., 512)

A block takes ``norm=`` as a name or as a factory ``(dim, eps) -> nn.Module``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Registry

NormFactory = Callable[[int, float], nn.Module]
NORMS: Registry[NormFactory] = Registry("norm")


def register_norm(name: str):
    """Decorator: register a factory ``(dim, eps) -> nn.Module`` (a class works) under ``name``.

    Raises:
        ValueError: another factory is already registered under ``name``.
    """
    return NORMS.register(name)


def create_norm(norm: str | NormFactory, dim: int, eps: float = 1e-5) -> nn.Module:
    """Build a normalisation layer over the last dimension.

    Args:
        norm: a registered name (see :func:`norm_names`) or a factory ``(dim, eps) -> Module``.
        dim: size of the normalised (last) dimension.
        eps: added to the variance (or mean square) for stability.
    """
    if callable(norm):
        return norm(dim, eps)
    return NORMS.get(norm)(dim, eps)


def norm_names() -> list[str]:
    """Names of the registered normalisation layers, sorted."""
    return NORMS.names()


@register_norm("layernorm")
class LayerNorm(nn.Module):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the last dimension (biased variance).

    Args:
        dim: size of the last dimension.
        eps: added to the variance.
        bias: learn an additive bias.
    """

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.dim, self.eps = dim, float(eps)
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)  # (..., dim)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, bias={self.bias is not None}"


@register_norm("rmsnorm")
class RMSNorm(nn.Module):
    """``x / sqrt(mean(x²) + eps) * weight`` over the last dimension, no centring, no bias.

    Computed in float32 for half-precision inputs, as in Llama.

    Args:
        dim: size of the last dimension.
        eps: added to the mean square.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.dim, self.eps = dim, float(eps)
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        rms = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)  # (..., 1)
        return (x32 * rms).to(x.dtype) * self.weight  # (..., dim)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


__all__ = ["LayerNorm", "RMSNorm", "create_norm", "register_norm", "norm_names"]
