"""Which (query block, key span) pairs the chunked kernel must compute.

The (Lq, Lk) grid is cut into query blocks of ``block_q`` rows and key blocks of ``block_k``
columns. Each key block of a query block is *empty* (the mask rules out every position: skip
it), *full* (every position allowed: no mask to apply) or *partial*.

Adjacent non-empty key blocks merge into one :class:`Span` (up to ``max_span`` columns), and the
span remembers which of its column ranges are partial: a causal query block is then one matmul
and one softmax over all the keys it sees, with the mask evaluated on the diagonal block only.

The built-in mask_mods know their block structure (``mask_mod.block_kinds``): planning them
costs O(blocks). Any other mask is evaluated exactly, once per query block, on that block's
(block_q, Lk) slice of the grid: O(Lq·Lk) boolean work, against the O(Lq·Lk·D) arithmetic it
lets us skip. Mask tensors and mask_mods combine conservatively (partial where either is).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..masks import MaskMod, index_grid


@dataclass(frozen=True)
class Span:
    """Key columns ``[ks, ke)`` of one query block; ``partial``: the column ranges inside it
    where the mask must be applied (the rest of the span is fully allowed)."""

    ks: int
    ke: int
    partial: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class QueryBlock:
    """Query rows ``[qs, qe)`` and the key spans they attend to (in key order)."""

    qs: int
    qe: int
    spans: tuple[Span, ...]


def block_keep(
    mask: Tensor | None, mask_mod: MaskMod | None, B: int, H: int, qs: int, qe: int,
    ks: int, ke: int, device,
) -> Tensor | None:
    """The boolean keep-mask of grid block [qs:qe, ks:ke], broadcastable to (B, H, qe-qs, ke-ks).

    Args:
        mask: 4-D bool mask broadcastable to (B, H, Lq, Lk), or None.
        mask_mod: ``(b, h, q_idx, kv_idx) -> bool``, or None.
        B, H: batch size and number of query heads.
        qs, qe, ks, ke: the block's query rows and key columns.
        device: device of the index tensors.
    """
    keep = None
    if mask is not None:
        qsl = slice(qs, qe) if mask.shape[2] > 1 else slice(None)  # size 1: broadcast
        ksl = slice(ks, ke) if mask.shape[3] > 1 else slice(None)
        keep = mask[:, :, qsl, ksl]
    if mask_mod is not None:
        mm = mask_mod(*index_grid(B, H, qe - qs, ke - ks, device, q_start=qs, kv_start=ks))
        keep = mm if keep is None else keep & mm
    return keep


def plan_blocks(
    mask: Tensor | None, mask_mod: MaskMod | None, B: int, H: int, Lq: int, Lk: int,
    block_q: int, block_k: int, max_span: int, device,
) -> list[QueryBlock]:
    """Cut the grid into query blocks and the key spans each must compute.

    Args:
        mask, mask_mod: as in :func:`block_keep`.
        B, H, Lq, Lk: the grid.
        block_q: query rows per block.
        block_k: key columns per block (the granularity at which work is skipped).
        max_span: most key columns in one span (bounds the memory of a score block).
        device: device of the index tensors.
    """
    nk = -(-Lk // block_k)
    ks = torch.arange(nk) * block_k  # (nk,) key block starts
    ke = (ks + block_k).clamp(max=Lk)
    plan = []
    for qs in range(0, Lq, block_q):
        qe = min(qs + block_q, Lq)
        kinds = torch.ones(nk, dtype=torch.long)  # 0 empty, 1 full, 2 partial
        if mask is not None:
            kinds = _and_kinds(kinds, _evaluated_kinds(block_keep(mask, None, B, H, qs, qe, 0, Lk, device), nk, block_k, Lk))
        if mask_mod is not None:
            if hasattr(mask_mod, "block_kinds"):  # structure known analytically: no evaluation
                mod_kinds = mask_mod.block_kinds(qs, qe, ks, ke)
            else:
                keep = block_keep(None, mask_mod, B, H, qs, qe, 0, Lk, device)
                mod_kinds = _evaluated_kinds(keep, nk, block_k, Lk)
            kinds = _and_kinds(kinds, mod_kinds)
        plan.append(QueryBlock(qs, qe, tuple(_merge(kinds.tolist(), block_k, Lk, max_span))))
    return plan


def _and_kinds(a: Tensor, b: Tensor) -> Tensor:
    """Kinds of the conjunction of two masks (partial where unsure, which is always safe)."""
    return torch.where((a == 0) | (b == 0), 0, torch.where((a == 1) & (b == 1), 1, 2))


def _evaluated_kinds(keep: Tensor, nk: int, block_k: int, Lk: int) -> Tensor:
    """Kinds of the key blocks from an evaluated keep-mask of shape (.., Lk or 1)."""
    cols = keep.reshape(-1, keep.shape[-1])  # any/all over b, h, q
    col_any, col_all = cols.any(0).cpu(), cols.all(0).cpu()
    if col_any.numel() == 1:
        return torch.full((nk,), 1 if bool(col_all) else (2 if bool(col_any) else 0))
    pad = nk * block_k - Lk
    blk_any = torch.nn.functional.pad(col_any, (0, pad), value=False).view(nk, block_k).any(1)
    blk_all = torch.nn.functional.pad(col_all, (0, pad), value=True).view(nk, block_k).all(1)
    return torch.where(~blk_any, 0, torch.where(blk_all, 1, 2))


def _merge(kinds: list[int], block_k: int, Lk: int, max_span: int) -> list[Span]:
    """Merge runs of non-empty blocks into spans of at most ``max_span`` columns."""
    per_span = max(1, max_span // block_k)
    spans: list[Span] = []
    start = None
    for i, kd in enumerate(kinds + [0]):
        if start is not None and (kd == 0 or i - start >= per_span):
            spans.append(_span(kinds, start, i, block_k, Lk))
            start = None
        if kd and start is None:
            start = i
    return spans


def _span(kinds: list[int], start: int, stop: int, block_k: int, Lk: int) -> Span:
    """The span of key blocks ``[start, stop)``, with its partial blocks merged into ranges."""
    ranges: list[tuple[int, int]] = []
    for i in range(start, stop):
        if kinds[i] == 2:
            a, b = i * block_k, min((i + 1) * block_k, Lk)
            if ranges and ranges[-1][1] == a:
                ranges[-1] = (ranges[-1][0], b)
            else:
                ranges.append((a, b))
    return Span(start * block_k, min(stop * block_k, Lk), tuple(ranges))
