"""ALiBi, attention with linear biases (Press et al. 2022, "Train Short, Test Long",
arXiv:2108.12409).

Head h adds ``slope_h * (kv_pos - q_pos)`` to its scores: a penalty growing linearly with
distance, with a fixed (not learned) slope per head. The default form is meant for causal
attention (keys after the query must be masked); ``symmetric=True`` gives
``-slope_h * |q_pos - kv_pos|`` for bidirectional encoders.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..masks import ScoreMod
from .base import PositionalEncoding, register_position


def alibi_slopes(num_heads: int) -> list[float]:
    """The per-head slopes of the paper's reference code (``get_slopes``).

    For n a power of two they are the geometric sequence ``2^(-8/n), 2^(-16/n), ..., 2^-8``.
    Otherwise, with p the largest power of two below n, they are the p slopes for p heads
    followed by the first n - p of every other slope for 2p heads (``2^(-8(2j+1)/(2p))``).

    Args:
        num_heads: number of heads, >= 1.
    """
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}")
    p = 2 ** math.floor(math.log2(num_heads))
    slopes = [2.0 ** (-8.0 * (i + 1) / p) for i in range(p)]
    slopes += [2.0 ** (-8.0 * (2 * j + 1) / (2 * p)) for j in range(num_heads - p)]
    return slopes


@register_position("alibi")
class ALiBi(PositionalEncoding):
    """Linear distance bias with fixed per-head slopes.

    Args:
        num_heads: number of attention heads H.
        symmetric: use ``-slope * |q_pos - kv_pos|`` (bidirectional) instead of
            ``slope * (kv_pos - q_pos)`` (causal).
    """

    hooks = frozenset({"bias"})

    def __init__(self, num_heads: int, symmetric: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.symmetric = symmetric
        slopes = torch.tensor(alibi_slopes(num_heads), dtype=torch.float64)
        # Derived from num_heads, so not saved in state_dict.
        self.register_buffer("slopes", slopes.to(torch.get_default_dtype()), persistent=False)

    def _term(self, slope: Tensor, q_pos: Tensor, kv_pos: Tensor) -> Tensor:
        d = kv_pos - q_pos
        return -slope * d.abs() if self.symmetric else slope * d

    def score_mod(self, q_offset: int = 0) -> ScoreMod:
        def score_mod(score, b, h, q_idx, kv_idx):
            slope = self.slopes[h]  # (1, H, 1, 1), or 0-dim under vmap
            # In the slopes' dtype, then cast: the same numbers as bias() gives.
            return score + self._term(slope, q_idx + q_offset, kv_idx).to(score.dtype)

        return score_mod

    def bias(self, Lq: int, Lk: int, q_offset: int = 0, device=None) -> Tensor:
        device = self.slopes.device if device is None else device
        slope = self.slopes.to(device).view(1, -1, 1, 1)  # (1, H, 1, 1)
        q_pos = torch.arange(q_offset, q_offset + Lq, device=device).view(1, 1, Lq, 1)
        kv_pos = torch.arange(Lk, device=device).view(1, 1, 1, Lk)
        return self._term(slope, q_pos, kv_pos)  # (1, H, Lq, Lk)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, symmetric={self.symmetric}"
