"""Learned absolute positions: one trained vector per position, up to ``max_len``
(as in BERT and GPT-2)."""

from __future__ import annotations

from torch import Tensor, nn

from .base import PositionalEncoding, default_positions, register_position


@register_position("learned")
class LearnedPositions(PositionalEncoding):
    """A table of ``max_len`` learned position vectors added to the token embeddings.

    Args:
        max_len: number of positions with a vector; a position >= max_len is an error.
        d_model: embedding width.
        init_std: standard deviation of the normal initialisation (0.02, as GPT-2).
    """

    hooks = frozenset({"embed"})

    def __init__(self, max_len: int, d_model: int, init_std: float = 0.02):
        super().__init__()
        self.max_len = max_len
        self.d_model = d_model
        self.table = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.table.weight, std=init_std)

    def embed(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must be (B, L, {self.d_model}), got {tuple(x.shape)}")
        pos = default_positions(positions, x.shape[1], x.device)  # (L,) or (B, L)
        if pos.numel():
            lo, hi = int(pos.min()), int(pos.max())
            if hi >= self.max_len:
                raise ValueError(
                    f"learned positions: position {hi} is beyond max_len={self.max_len} "
                    f"(positions must be < {self.max_len})"
                )
            if lo < 0:
                raise ValueError(f"learned positions: positions must be >= 0, got {lo}")
        return x + self.table(pos).to(x.dtype)  # (B, L, d_model)

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, d_model={self.d_model}"
