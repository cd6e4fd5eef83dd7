"""Sinusoidal absolute positions (Vaswani et al. 2017, "Attention Is All You Need", §3.5).

    PE(pos, 2i)   = sin(pos / base^(2i / d_model))
    PE(pos, 2i+1) = cos(pos / base^(2i / d_model))

Defined for every position: the table is computed in float64 and grows on demand.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import PositionalEncoding, PositionTable, default_positions, register_position


@register_position("sinusoidal")
class SinusoidalPositions(PositionalEncoding):
    """Fixed sinusoidal position vectors added to the token embeddings.

    Args:
        d_model: embedding width (an odd width drops the last cosine).
        base: wavelength base (10000 in the paper).
    """

    hooks = frozenset({"embed"})

    def __init__(self, d_model: int, base: float = 10000.0):
        super().__init__()
        if d_model < 1:
            raise ValueError(f"d_model must be >= 1, got {d_model}")
        self.d_model = d_model
        self.base = float(base)
        self.table = PositionTable(self._build)

    def _build(self, pos: Tensor) -> Tensor:
        two_i = torch.arange(0, self.d_model, 2, dtype=torch.float64, device=pos.device)
        angle = pos[:, None] / self.base ** (two_i / self.d_model)  # (n, ceil(d/2))
        pe = torch.stack((angle.sin(), angle.cos()), dim=-1).flatten(-2)  # (n, 2*ceil(d/2))
        return pe[:, : self.d_model]  # (n, d_model)

    def encodings(self, positions: Tensor) -> Tensor:
        """The float64 position vectors: ``positions.shape + (d_model,)``."""
        return self.table(positions)

    def embed(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must be (B, L, {self.d_model}), got {tuple(x.shape)}")
        pos = default_positions(positions, x.shape[1], x.device)  # (L,) or (B, L)
        return x + self.table(pos).to(x.dtype)  # (B, L, d_model)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, base={self.base}"
