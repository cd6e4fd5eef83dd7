"""The positional-encoding contract and its registry.

A positional encoding plugs into attention through one or more of three hooks:

* ``embed``: add a vector to each token embedding before attention (sinusoidal, learned);
* ``rotate``: rotate queries and keys by their positions (RoPE);
* ``bias``: add a term to the attention scores, given either as a ``score_mod`` (FlexAttention's
  signature, evaluated lazily by the kernel) or materialised by ``bias()`` (ALiBi, relative).

``hooks`` says which of them an encoding implements; the others raise NotImplementedError.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from ...registry import Registry
from ..masks import ScoreMod

HOOKS = frozenset({"embed", "rotate", "bias"})


class PositionalEncoding(nn.Module):
    """Base class of positional encodings. Subclasses set ``hooks`` and implement those methods."""

    hooks: frozenset[str] = frozenset()
    name: str = ""

    def embed(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        """Add position vectors to token embeddings.

        Args:
            x: (B, L, d_model) token embeddings.
            positions: (L,) or (B, L) absolute positions; defaults to ``arange(L)``.

        Returns:
            (B, L, d_model) ``x + pe``.
        """
        raise self._missing("embed")

    def rotate(self, q: Tensor, k: Tensor, q_pos: Tensor, k_pos: Tensor) -> tuple[Tensor, Tensor]:
        """Rotate queries and keys by their absolute positions.

        Args:
            q: (B, H, Lq, D) queries.
            k: (B, Hkv, Lk, D) keys (Hkv may be smaller than H: grouped-query attention).
            q_pos: (Lq,) or (B, Lq) query positions.
            k_pos: (Lk,) or (B, Lk) key positions.

        Returns:
            The rotated ``(q, k)``, same shapes and dtypes.
        """
        raise self._missing("rotate")

    def score_mod(self, q_offset: int = 0) -> ScoreMod:
        """A ``score_mod(score, b, h, q_idx, kv_idx) -> score + bias`` for :func:`attend`.

        The query's absolute position is ``q_idx + q_offset``, the key's is ``kv_idx``. Index
        tensors are broadcastable (``b (B,1,1,1)``, ``h (1,H,1,1)``, ``q_idx (1,1,Lq,1)``,
        ``kv_idx (1,1,1,Lk)``) or 0-dim under FlexAttention's vmap.

        Args:
            q_offset: position of query 0 (``Lk - Lq`` in cached decoding).
        """
        raise self._missing("bias")

    def bias(self, Lq: int, Lk: int, q_offset: int = 0, device=None) -> Tensor:
        """The bias that :meth:`score_mod` adds, materialised: shape (1, H, Lq, Lk).

        Args:
            Lq, Lk: numbers of queries and keys.
            q_offset: position of query 0, as for :meth:`score_mod`.
            device: where to build it; defaults to the module's device.
        """
        raise self._missing("bias")

    def _missing(self, hook: str) -> NotImplementedError:
        have = ", ".join(sorted(self.hooks)) or "none"
        return NotImplementedError(
            f"positional encoding {type(self).__name__} has no {hook!r} hook (its hooks: {have})"
        )


# ----------------------------------------------------------------------------- helpers


def default_positions(positions: Tensor | None, L: int, device) -> Tensor:
    """``positions`` as a long tensor, or ``arange(L)`` when None; checks the last dim is L."""
    if positions is None:
        return torch.arange(L, device=device)
    positions = torch.as_tensor(positions, device=device)
    if positions.dim() not in (1, 2) or positions.shape[-1] != L:
        raise ValueError(
            f"positions must have shape (L,) or (B, L) with L = {L}, got {tuple(positions.shape)}"
        )
    if positions.is_floating_point():
        raise ValueError(f"positions must be integers, got {positions.dtype}")
    return positions.long()


class PositionTable:
    """Rows ``build(pos)`` for positions 0..n-1, computed in float64 on first need and kept.

    The table grows (by doubling) when a larger position arrives, so there is no maximum
    length. It is a plain attribute, not a buffer: it is derived data, stays float64 whatever
    the module's dtype, and moves to the device of the positions it is asked for.
    """

    def __init__(self, build: Callable[[Tensor], Tensor], min_rows: int = 64):
        self.build = build
        self.min_rows = min_rows
        self.rows: Tensor | None = None

    def __call__(self, positions: Tensor) -> Tensor:
        """Rows for ``positions`` (non-negative ints, any shape): ``positions.shape + row``."""
        if positions.numel() == 0:
            return self._ensure(1, positions.device)[positions]
        lo, hi = int(positions.min()), int(positions.max())
        if lo < 0:
            raise ValueError(f"positions must be >= 0, got {lo}")
        return self._ensure(hi + 1, positions.device)[positions]

    def _ensure(self, n: int, device) -> Tensor:
        rows = self.rows
        if rows is None or rows.device != torch.device(device) or rows.shape[0] < n:
            size = max(n, self.min_rows, 2 * rows.shape[0] if rows is not None else 0)
            self.rows = self.build(torch.arange(size, dtype=torch.float64, device=device))
        return self.rows


# ----------------------------------------------------------------------------- registry

POSITIONS: Registry[type[PositionalEncoding]] = Registry("positional encoding")


def register_position(name: str):
    """Class decorator: register a :class:`PositionalEncoding` subclass under ``name``.

    Raises:
        TypeError: not a PositionalEncoding subclass.
        ValueError: bad ``hooks``, or another class is already registered under ``name``.
    """

    def deco(cls: type[PositionalEncoding]) -> type[PositionalEncoding]:
        if not (isinstance(cls, type) and issubclass(cls, PositionalEncoding)):
            raise TypeError(f"register_position({name!r}) needs a PositionalEncoding subclass")
        if not cls.hooks or not cls.hooks <= HOOKS:
            raise ValueError(f"{cls.__name__}.hooks must be a non-empty subset of {sorted(HOOKS)}")
        POSITIONS.register(name, cls)
        cls.name = name
        return cls

    return deco


def position_class(name: str) -> type[PositionalEncoding]:
    """The class registered under ``name``; ConfigError (a ValueError) naming the known encodings otherwise."""
    return POSITIONS.get(name)


def create_position(name: str, **kwargs) -> PositionalEncoding:
    """Build the positional encoding registered under ``name`` with ``kwargs``.

    Args:
        name: a registered name (see :func:`position_names`).
        **kwargs: the encoding's constructor arguments.
    """
    return position_class(name)(**kwargs)


def position_names() -> list[str]:
    """Names of the registered positional encodings, sorted."""
    return POSITIONS.names()
