"""Key/value caches for incremental decoding.

A :class:`KVCache` holds the keys and values one attention layer has seen so far, shaped
(B, Hkv, L, D), so that each decoding step projects only its new tokens::

    cache = KVCache()
    for tok in tokens:                          # self-attention, token by token
        res = mha(tok, causal=True, cache=cache)

Keys are stored as attention sees them: after RoPE rotation. Buffers are preallocated and grow
by doubling, so appending ``n`` tokens one at a time costs O(n) copies, not O(n²) ``torch.cat``.

A *static* cache is for cross-attention: the encoder's keys and values are computed once (on the
first call, or given to :meth:`KVCache.static`) and reused at every step without re-projection.

Caches are meant for inference (under ``torch.no_grad()``): buffers are written in place, so
autograd cannot go back through more than one step.
"""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    """Keys and values of one attention layer, appended step by step.

    Args:
        capacity: initial buffer length (in tokens); buffers double when it is exceeded.
        static: a cross-attention cache: filled once, then read-only.
    """

    def __init__(self, capacity: int = 64, *, static: bool = False):
        if capacity < 1:
            raise ValueError(f"KVCache: capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.is_static = bool(static)
        self._k: Tensor | None = None  # (B, Hkv, capacity, D)
        self._v: Tensor | None = None  # (B, Hkv, capacity, Dv)
        self.length = 0

    @classmethod
    def static(cls, k: Tensor, v: Tensor) -> "KVCache":
        """A filled static cache of already-projected keys and values.

        Args:
            k: (B, Hkv, L, D) keys, as the attention module would project them.
            v: (B, Hkv, L, Dv) values.
        """
        cache = cls(capacity=max(1, k.shape[2]), static=True)
        cache.update(k, v)
        return cache

    # ------------------------------------------------------------------ reading

    @property
    def filled(self) -> bool:
        """Whether the cache holds anything (a static cache is filled once, then only read)."""
        return self.length > 0

    @property
    def k(self) -> Tensor | None:
        """(B, Hkv, length, D) cached keys, or None before the first update."""
        return None if self._k is None else self._k[:, :, : self.length]

    @property
    def v(self) -> Tensor | None:
        """(B, Hkv, length, Dv) cached values, or None before the first update."""
        return None if self._v is None else self._v[:, :, : self.length]

    # ------------------------------------------------------------------ writing

    def update(self, k_new: Tensor, v_new: Tensor) -> tuple[Tensor, Tensor]:
        """Append new keys and values; return all of them.

        Args:
            k_new: (B, Hkv, n, D) keys of the new tokens.
            v_new: (B, Hkv, n, Dv) values of the new tokens.

        Returns:
            ``(k_all, v_all)``: (B, Hkv, length, D) and (B, Hkv, length, Dv), views of the buffers.
        """
        if k_new.dim() != 4 or v_new.dim() != 4 or k_new.shape[:3] != v_new.shape[:3]:
            raise ValueError(
                f"KVCache.update: need k (B, Hkv, n, D) and v (B, Hkv, n, Dv) with matching "
                f"B, Hkv, n; got k {tuple(k_new.shape)}, v {tuple(v_new.shape)}"
            )
        if self.is_static and self.filled:
            raise ValueError("KVCache.update: this static cache is already filled (reset() it first)")
        if self.is_static:  # keep the tensors as they are: no copy, no spare room
            self._k, self._v, self.length = k_new, v_new, k_new.shape[2]
            return self.k, self.v
        if self._k is not None and self.length > 0:
            self._check_like(k_new, v_new)
        n = k_new.shape[2]
        self._reserve(self.length + n, k_new, v_new)
        self._k[:, :, self.length : self.length + n] = k_new  # (B, Hkv, n, D)
        self._v[:, :, self.length : self.length + n] = v_new  # (B, Hkv, n, Dv)
        self.length += n
        return self.k, self.v

    def reorder(self, indices: Tensor) -> None:
        """Reorder (or select) batch rows in place, as beam search does after each step.

        Args:
            indices: (B_new,) long tensor; new row i is old row ``indices[i]``.
        """
        if self._k is None:
            return
        indices = torch.as_tensor(indices, device=self._k.device, dtype=torch.long)
        self._k = self._k.index_select(0, indices)  # (B_new, Hkv, capacity, D)
        self._v = self._v.index_select(0, indices)  # (B_new, Hkv, capacity, Dv)

    def reset(self) -> None:
        """Forget the contents (dynamic caches keep their buffers for reuse)."""
        self.length = 0
        if self.is_static:
            self._k = self._v = None

    # ------------------------------------------------------------------ internals

    def _reserve(self, needed: int, k_new: Tensor, v_new: Tensor) -> None:
        """Make the buffers hold at least ``needed`` tokens, doubling the capacity as needed."""
        stale = self._k is not None and self.length == 0 and (  # reused after reset() for new shapes
            self._k.shape[:2] != k_new.shape[:2] or self._k.shape[3] != k_new.shape[3]
            or self._v.shape[3] != v_new.shape[3]
            or self._k.dtype != k_new.dtype or self._k.device != k_new.device
        )
        if stale:
            self._k = self._v = None
        have = 0 if self._k is None else self._k.shape[2]
        if needed <= have:
            return
        cap = max(needed, self.capacity if have == 0 else 2 * have)
        B, Hkv, _, D = k_new.shape
        k = k_new.new_empty(B, Hkv, cap, D)  # (B, Hkv, cap, D)
        v = v_new.new_empty(B, Hkv, cap, v_new.shape[3])  # (B, Hkv, cap, Dv)
        if self._k is not None and self.length > 0:
            k[:, :, : self.length] = self._k[:, :, : self.length]
            v[:, :, : self.length] = self._v[:, :, : self.length]
        self._k, self._v = k, v

    def _check_like(self, k_new: Tensor, v_new: Tensor) -> None:
        k, v = self._k, self._v
        if (k_new.shape[:2] != k.shape[:2] or k_new.shape[3] != k.shape[3]
                or v_new.shape[3] != v.shape[3]):
            raise ValueError(
                f"KVCache.update: new k {tuple(k_new.shape)} / v {tuple(v_new.shape)} do not match "
                f"the cached k {tuple(self.k.shape)} / v {tuple(self.v.shape)} in B, Hkv or head dim"
            )
        if k_new.dtype != k.dtype or k_new.device != k.device:
            raise ValueError(
                f"KVCache.update: new keys are {k_new.dtype} on {k_new.device}, "
                f"the cache holds {k.dtype} on {k.device}"
            )

    def __repr__(self) -> str:
        kind = "static" if self.is_static else "dynamic"
        shape = None if self.k is None else tuple(self.k.shape)
        return f"KVCache({kind}, length={self.length}, k={shape})"


class LayerCaches(list):
    """One :class:`KVCache` per layer, with batch-wide ``reorder`` and ``reset``.

    Args:
        num_layers: how many caches.
        capacity: initial capacity of each cache.
        static: make static (cross-attention) caches.
    """

    def __init__(self, num_layers: int, capacity: int = 64, *, static: bool = False):
        super().__init__(KVCache(capacity, static=static) for _ in range(num_layers))

    @property
    def length(self) -> int:
        """Tokens cached so far (that of the first layer; all layers advance together)."""
        return self[0].length if self else 0

    def reorder(self, indices: Tensor) -> None:
        """Reorder the batch rows of every cache (see :meth:`KVCache.reorder`)."""
        for cache in self:
            cache.reorder(indices)

    def reset(self) -> None:
        """Reset every cache."""
        for cache in self:
            cache.reset()


__all__ = ["KVCache", "LayerCaches"]
