"""T5 relative position bias (Raffel et al. 2020, "Exploring the Limits of Transfer
Learning", §2.1; Shaw et al. 2018 for the idea).

The distance ``kv_pos - q_pos`` falls into one of ``num_buckets`` buckets: exact buckets for
small distances, logarithmically wider ones up to ``max_distance``, beyond which all distances
share the last bucket. Each (bucket, head) has a learned scalar added to the score.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..masks import ScoreMod
from .base import PositionalEncoding, register_position


def relative_position_bucket(
    relative_position: Tensor, bidirectional: bool = True, num_buckets: int = 32,
    max_distance: int = 128,
) -> Tensor:
    """Bucket of each relative position ``kv_pos - q_pos``, as Hugging Face T5 computes it.

    Args:
        relative_position: integer tensor of any shape (0-dim works, for FlexAttention's vmap).
        bidirectional: separate buckets for keys before and after the query; when False,
            keys after the query all share bucket 0.
        num_buckets: number of buckets.
        max_distance: distances from here on share the last bucket (of each direction).

    Returns:
        long tensor of the same shape, values in ``[0, num_buckets)``.
    """
    rel = relative_position.long()
    if bidirectional:
        num_buckets //= 2
        offset = (rel > 0).long() * num_buckets  # keys after the query: upper half
        dist = rel.abs()
    else:
        offset = torch.zeros_like(rel)
        dist = (-rel).clamp(min=0)  # keys after the query count as distance 0
    max_exact = num_buckets // 2
    is_small = dist < max_exact
    # float32, as T5 does: this is what decides the bucket boundaries. The clamp keeps log(0)
    # out of the discarded branch; it changes no value that is used.
    ratio = dist.clamp(min=max_exact).float() / max_exact
    large = max_exact + (
        torch.log(ratio) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).long()
    large = large.clamp(max=num_buckets - 1)
    return offset + torch.where(is_small, dist, large)


@register_position("relative")
class RelativePositionBias(PositionalEncoding):
    """A learned scalar per (distance bucket, head), added to the attention scores.

    Args:
        num_heads: number of attention heads H.
        num_buckets: number of distance buckets.
        max_distance: distances from here on share the last bucket.
        bidirectional: separate buckets for keys after the query (encoders); False for
            causal decoders.
    """

    hooks = frozenset({"bias"})

    def __init__(
        self, num_heads: int, num_buckets: int = 32, max_distance: int = 128,
        bidirectional: bool = True,
    ):
        super().__init__()
        if num_buckets < (4 if bidirectional else 2):
            raise ValueError(f"num_buckets too small: {num_buckets}")
        self.num_heads = num_heads
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.table = nn.Embedding(num_buckets, num_heads)

    def bucket(self, relative_position: Tensor) -> Tensor:
        """Bucket index of each ``kv_pos - q_pos``."""
        return relative_position_bucket(
            relative_position, self.bidirectional, self.num_buckets, self.max_distance
        )

    def score_mod(self, q_offset: int = 0) -> ScoreMod:
        def score_mod(score, b, h, q_idx, kv_idx):
            bucket = self.bucket(kv_idx - (q_idx + q_offset))  # (1, 1, Lq, Lk), or 0-dim
            # Indexing the weight here (not a precomputed bias) lets gradients reach the table.
            return score + self.table.weight[bucket, h].to(score.dtype)  # (., H, Lq, Lk)

        return score_mod

    def bias(self, Lq: int, Lk: int, q_offset: int = 0, device=None) -> Tensor:
        device = self.table.weight.device if device is None else device
        q_pos = torch.arange(q_offset, q_offset + Lq, device=device)  # (Lq,)
        kv_pos = torch.arange(Lk, device=device)  # (Lk,)
        bucket = self.bucket(kv_pos[None, :] - q_pos[:, None])  # (Lq, Lk)
        values = self.table(bucket.to(self.table.weight.device)).to(device)  # (Lq, Lk, H)
        return values.permute(2, 0, 1).unsqueeze(0)  # (1, H, Lq, Lk)

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, num_buckets={self.num_buckets}, "
            f"max_distance={self.max_distance}, bidirectional={self.bidirectional}"
        )
