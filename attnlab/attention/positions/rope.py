"""Rotary position embedding, RoPE (Su et al. 2021, "RoFormer", arXiv:2104.09864).

Each pair of channels of q and k is rotated by ``pos * theta_i`` with
``theta_i = base^(-2i / rotary_dim)``, so that ``q_m · k_n`` depends on m - n only.

Two pairings are in use and give different (both valid) models, so weights from one do not
work with the other:

* ``interleaved=False``: pairs (i, i + rotary_dim/2), the "rotate_half" form of GPT-NeoX and
  Hugging Face Llama;
* ``interleaved=True``: pairs (2i, 2i+1), the original RoFormer and GPT-J form.

With ``rotary_dim < head_dim`` (partial rotary, as GPT-NeoX) only the first ``rotary_dim``
channels rotate; the rest pass through unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import PositionalEncoding, PositionTable, default_positions, register_position


@register_position("rope")
class RotaryPositions(PositionalEncoding):
    """Rotates queries and keys by their positions.

    Args:
        head_dim: per-head width D of q and k.
        base: frequency base (10000 in the paper).
        rotary_dim: how many leading channels rotate (even, <= head_dim); defaults to head_dim.
        interleaved: pair channels (2i, 2i+1) instead of (i, i + rotary_dim/2).
    """

    hooks = frozenset({"rotate"})

    def __init__(
        self, head_dim: int, base: float = 10000.0, rotary_dim: int | None = None,
        interleaved: bool = False,
    ):
        super().__init__()
        rotary_dim = head_dim if rotary_dim is None else rotary_dim
        if rotary_dim % 2 or not 0 < rotary_dim <= head_dim:
            raise ValueError(
                f"rotary_dim must be even and in (0, head_dim={head_dim}], got {rotary_dim}"
            )
        self.head_dim = head_dim
        self.rotary_dim = rotary_dim
        self.base = float(base)
        self.interleaved = interleaved
        self.table = PositionTable(self._build)

    def _build(self, pos: Tensor) -> Tensor:
        two_i = torch.arange(0, self.rotary_dim, 2, dtype=torch.float64, device=pos.device)
        inv_freq = self.base ** (-two_i / self.rotary_dim)  # (R/2,)
        angle = pos[:, None] * inv_freq  # (n, R/2)
        return torch.stack((angle.cos(), angle.sin()), dim=1)  # (n, 2, R/2)

    def cos_sin(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """cos and sin of the angles, ``positions.shape + (rotary_dim/2,)``, in ``dtype``."""
        cs = self.table(positions.long()).to(dtype)  # positions.shape + (2, R/2)
        return cs[..., 0, :], cs[..., 1, :]

    def rotate(self, q: Tensor, k: Tensor, q_pos: Tensor, k_pos: Tensor) -> tuple[Tensor, Tensor]:
        return self.rotate_one(q, q_pos), self.rotate_one(k, k_pos)

    def rotate_one(self, x: Tensor, positions: Tensor) -> Tensor:
        """Rotate one tensor (B, H, L, D) by positions (L,) or (B, L)."""
        if x.dim() != 4 or x.shape[-1] != self.head_dim:
            raise ValueError(f"rope: expected (B, H, L, {self.head_dim}), got {tuple(x.shape)}")
        pos = default_positions(positions, x.shape[2], x.device)  # (L,) or (B, L)
        if pos.dim() == 2 and pos.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"rope: positions {tuple(pos.shape)} do not match batch {x.shape[0]}")
        ctype = torch.float64 if x.dtype == torch.float64 else torch.float32
        cos, sin = self.cos_sin(pos, ctype)  # (L, R/2) or (B, L, R/2)
        if pos.dim() == 2:
            cos, sin = cos[:, None], sin[:, None]  # (B, 1, L, R/2)
        R = self.rotary_dim
        xr = x[..., :R].to(ctype)  # (B, H, L, R)
        if self.interleaved:
            x1, x2 = xr[..., 0::2], xr[..., 1::2]  # (B, H, L, R/2) each
            out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
        else:
            x1, x2 = xr[..., : R // 2], xr[..., R // 2 :]  # (B, H, L, R/2) each
            out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)  # (B, H, L, R)
        out = out.to(x.dtype)
        if R < self.head_dim:
            out = torch.cat((out, x[..., R:]), dim=-1)  # (B, H, L, D)
        return out

    def extra_repr(self) -> str:
        return (
            f"head_dim={self.head_dim}, rotary_dim={self.rotary_dim}, base={self.base}, "
            f"interleaved={self.interleaved}"
        )
