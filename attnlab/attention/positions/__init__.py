"""Positional encodings, registered by name.

    pe = create_position("rope", head_dim=64)
    q, k = pe.rotate(q, k, q_pos, k_pos)            # "rotate" hook
    res = attend(q, k, v, score_mod=alibi.score_mod())  # "bias" hook, lazily
    x = sinusoidal.embed(x)                         # "embed" hook

Each encoding says which hooks it has in ``pe.hooks``. Importing this package registers all.
"""

from .base import (
    PositionalEncoding, PositionTable, create_position, position_class, position_names,
    register_position,
)
from .sinusoidal import SinusoidalPositions
from .learned import LearnedPositions
from .rope import RotaryPositions
from .alibi import ALiBi, alibi_slopes
from .relative import RelativePositionBias, relative_position_bucket

__all__ = [
    "PositionalEncoding", "PositionTable", "register_position", "create_position",
    "position_names", "position_class", "SinusoidalPositions", "LearnedPositions", "RotaryPositions", "ALiBi",
    "alibi_slopes", "RelativePositionBias", "relative_position_bucket",
]
