"""Masks: one convention, boolean with True = "may attend", broadcastable to (B, H, Lq, Lk).

Two forms exist side by side:

* **mask tensors**: boolean tensors broadcastable to (B, H, Lq, Lk);
* **mask_mods**: functions ``mask_mod(b, h, q_idx, kv_idx) -> bool tensor`` with FlexAttention's
  signature. They are written with tensor ops, so they vectorise: attnlab calls them with
  broadcastable index tensors ``b (B,1,1,1)``, ``h (1,H,1,1)``, ``q_idx (1,1,Lq,1)`` and
  ``kv_idx (1,1,1,Lk)``, and the chunked kernel calls them block by block so that blocks a
  mask rules out entirely are never computed.

The built-in mask_mods also carry ``block_kinds(qs, qe, ks, ke)``: their block structure
worked out by interval arithmetic, so the chunked kernel knows which blocks to skip without
evaluating the mask on the whole grid. A block kind is 0 (nothing allowed), 1 (everything
allowed) or 2 (partial); 2 is always a safe answer. ``and_masks``/``or_masks`` keep it when all
their parts have it. A user's own mask_mod needs none: the kernel evaluates it instead.

A mask becomes an additive bias in exactly one place: :func:`mask_to_bias`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

MaskMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
ScoreMod = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]
# block_kinds(qs, qe, ks, ke) -> kinds: query rows [qs, qe) (ints) against key blocks
# [ks[i], ke[i]) (int64 tensors of shape (nk,)); returns (nk,) int64 of 0 empty, 1 full, 2 partial.
BlockKinds = Callable[[int, int, Tensor, Tensor], Tensor]


def _kinds(full: Tensor, empty: Tensor) -> Tensor:
    """0 where ``empty``, 1 where ``full``, else 2 (partial)."""
    return torch.where(empty, 0, torch.where(full, 1, 2))


def with_block_kinds(mask_mod: MaskMod, block_kinds: BlockKinds) -> MaskMod:
    """Attach a block structure to a mask_mod (see the module docstring); returns the mask_mod."""
    mask_mod.block_kinds = block_kinds
    return mask_mod


def _range_kinds(dmin: Tensor, dmax: Tensor, lo: float, hi: float) -> Tensor:
    """Kinds of blocks whose positions satisfy ``lo <= d <= hi`` with d in [dmin, dmax]."""
    return _kinds((dmin >= lo) & (dmax <= hi), (dmax < lo) | (dmin > hi))


def mask_to_bias(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Turn a boolean mask (True = may attend) into an additive bias of 0 and -inf.

    This is the single place where attnlab converts a mask into a bias.

    Args:
        mask: boolean tensor, any shape.
        dtype: floating dtype of the returned bias.
    """
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return bias.masked_fill_(~mask, float("-inf"))


# ----------------------------------------------------------------------------- index grids


def index_grid(B: int, H: int, Lq: int, Lk: int, device=None, q_start: int = 0, kv_start: int = 0):
    """Broadcastable index tensors ``(b, h, q_idx, kv_idx)`` for calling a mask_mod or score_mod.

    Shapes: b (B,1,1,1), h (1,H,1,1), q_idx (1,1,Lq,1), kv_idx (1,1,1,Lk); int32, as
    FlexAttention passes them. ``q_start`` and ``kv_start`` offset the positions, for evaluating
    one block of a larger grid.
    """
    i32 = torch.int32
    b = torch.arange(B, device=device, dtype=i32).view(B, 1, 1, 1)
    h = torch.arange(H, device=device, dtype=i32).view(1, H, 1, 1)
    q_idx = torch.arange(q_start, q_start + Lq, device=device, dtype=i32).view(1, 1, Lq, 1)
    kv_idx = torch.arange(kv_start, kv_start + Lk, device=device, dtype=i32).view(1, 1, 1, Lk)
    return b, h, q_idx, kv_idx


def materialize(mask_mod: MaskMod, B: int, H: int, Lq: int, Lk: int, device=None) -> Tensor:
    """Evaluate a mask_mod on the whole grid: a boolean tensor broadcastable to (B, H, Lq, Lk).

    Args:
        mask_mod: function ``(b, h, q_idx, kv_idx) -> bool tensor``.
        B, H, Lq, Lk: the grid.
        device: where to build the index tensors.
    """
    out = mask_mod(*index_grid(B, H, Lq, Lk, device))
    out = torch.as_tensor(out, device=device)
    if out.dtype != torch.bool:
        raise TypeError(f"mask_mod must return a bool tensor, got dtype {out.dtype}")
    return out


# ----------------------------------------------------------------------------- composition


def and_masks(*mask_mods: MaskMod) -> MaskMod:
    """A mask_mod that allows a position only where every given mask_mod allows it."""
    return _combine("and_masks", mask_mods, torch.logical_and, all_full=True)


def or_masks(*mask_mods: MaskMod) -> MaskMod:
    """A mask_mod that allows a position where any given mask_mod allows it."""
    return _combine("or_masks", mask_mods, torch.logical_or, all_full=False)


def _combine(name: str, mask_mods: tuple[MaskMod, ...], op, all_full: bool) -> MaskMod:
    """Fold mask_mods with ``op``; keep their block structure when all of them have one.

    A block of the conjunction is full when all parts are full and empty when any is empty;
    of the disjunction, full when any is full and empty when all are empty.
    """
    if not mask_mods:
        raise ValueError(f"{name} needs at least one mask_mod")

    def mask_mod(b, h, q_idx, kv_idx):
        out = mask_mods[0](b, h, q_idx, kv_idx)
        for mod in mask_mods[1:]:
            out = op(out, mod(b, h, q_idx, kv_idx))
        return out

    if all(hasattr(m, "block_kinds") for m in mask_mods):

        def block_kinds(qs, qe, ks, ke):
            k = torch.stack([m.block_kinds(qs, qe, ks, ke) for m in mask_mods])  # (parts, nk)
            if all_full:
                return _kinds((k == 1).all(0), (k == 0).any(0))
            return _kinds((k == 1).any(0), (k == 0).all(0))

        with_block_kinds(mask_mod, block_kinds)
    return mask_mod


# ----------------------------------------------------------------------------- mask_mods


def causal(offset: int = 0) -> MaskMod:
    """Causal mask_mod: query i sees keys ``j <= i + offset``.

    Args:
        offset: where query 0 sits among the keys. For cached decoding with ``Lq`` new queries
            over ``Lk`` keys (the cache included), use ``offset = Lk - Lq``.
    """

    def mask_mod(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx + offset

    def block_kinds(qs, qe, ks, ke):  # allowed iff q + offset - kv >= 0
        return _range_kinds(qs + offset - (ke - 1), qe - 1 + offset - ks, 0, float("inf"))

    mask_mod.causal_offset = offset  # lets SDPA run it as is_causal when offset == 0
    return with_block_kinds(mask_mod, block_kinds)


def sliding_window(window: int, causal: bool = False, offset: int = 0) -> MaskMod:
    """Sliding-window (local) mask_mod: query i sees keys with ``|i + offset - j| <= window``.

    Args:
        window: how many positions on each side a query may see (the query's own is always in).
        causal: also forbid keys after the query (a left-only window of ``window`` keys).
        offset: query position offset, as for :func:`causal`.
    """
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")

    lo = 0 if causal else -window

    def mask_mod(b, h, q_idx, kv_idx):
        d = q_idx + offset - kv_idx
        return (d <= window) & (d >= lo)

    def block_kinds(qs, qe, ks, ke):
        return _range_kinds(qs + offset - (ke - 1), qe - 1 + offset - ks, lo, window)

    return with_block_kinds(mask_mod, block_kinds)


def padding(lengths: Tensor) -> MaskMod:
    """Key-padding mask_mod: in batch row b only the first ``lengths[b]`` keys are real.

    Args:
        lengths: (B,) integer tensor of valid key lengths.
    """
    lengths = torch.as_tensor(lengths)

    def mask_mod(b, h, q_idx, kv_idx):
        return kv_idx < lengths.to(kv_idx.device)[b]

    def block_kinds(qs, qe, ks, ke):  # full when every row is long enough, empty when none is
        return _kinds(ke <= int(lengths.min()), ks >= int(lengths.max()))

    return with_block_kinds(mask_mod, block_kinds)


def block_diagonal(seq_ids: Tensor, kv_seq_ids: Tensor | None = None) -> MaskMod:
    """Block-diagonal mask_mod for packed sequences: tokens attend within their own sequence.

    Args:
        seq_ids: (B, Lq) or (Lq,) integer id of the packed sequence each query belongs to.
        kv_seq_ids: the same for keys; defaults to ``seq_ids`` (self-attention).
    """
    q_ids = torch.as_tensor(seq_ids)
    kv_ids = q_ids if kv_seq_ids is None else torch.as_tensor(kv_seq_ids)
    if q_ids.dim() == 1:
        q_ids = q_ids.unsqueeze(0)
    if kv_ids.dim() == 1:
        kv_ids = kv_ids.unsqueeze(0)

    def mask_mod(b, h, q_idx, kv_idx):
        qb = b if q_ids.shape[0] > 1 else torch.zeros_like(b)
        kb = b if kv_ids.shape[0] > 1 else torch.zeros_like(b)
        return q_ids.to(q_idx.device)[qb, q_idx] == kv_ids.to(kv_idx.device)[kb, kv_idx]

    return mask_mod


def prefix_lm(prefix_length: int | Tensor) -> MaskMod:
    """Prefix-LM mask_mod: the first ``prefix_length`` keys are visible to all, the rest causally.

    Args:
        prefix_length: an int, or a (B,) tensor with one prefix length per batch row.
    """
    lengths = torch.as_tensor(prefix_length).reshape(-1)  # (1,) or (B,)
    per_row = lengths.numel() > 1

    def in_prefix(b, h, q_idx, kv_idx):
        return kv_idx < lengths.to(kv_idx.device)[b if per_row else 0]

    in_prefix = with_block_kinds(
        in_prefix, lambda qs, qe, ks, ke: _kinds(ke <= int(lengths.min()), ks >= int(lengths.max()))
    )
    return or_masks(in_prefix, causal())


# ----------------------------------------------------------------------------- mask tensors


def padding_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """Key-padding mask tensor of shape (B, 1, 1, Lk) from valid lengths.

    Args:
        lengths: (B,) integer tensor.
        max_len: Lk; defaults to ``lengths.max()``.
    """
    lengths = torch.as_tensor(lengths)
    L = int(lengths.max()) if max_len is None else max_len
    keep = torch.arange(L, device=lengths.device).view(1, L) < lengths.view(-1, 1)  # (B, Lk)
    return keep[:, None, None, :]


def causal_mask(Lq: int, Lk: int | None = None, offset: int | None = None, device=None) -> Tensor:
    """Causal mask tensor of shape (Lq, Lk), bottom-right aligned by default.

    Args:
        Lq: number of queries.
        Lk: number of keys; defaults to ``Lq``.
        offset: query 0's position among the keys; defaults to ``Lk - Lq`` (cached decoding).
        device: torch device.
    """
    Lk = Lq if Lk is None else Lk
    offset = Lk - Lq if offset is None else offset
    return materialize(causal(offset), 1, 1, Lq, Lk, device)[0, 0]


def merge_masks(mask: Tensor | None, key_padding_mask: Tensor | None, B: int, Lq: int, Lk: int) -> Tensor | None:
    """One bool mask broadcastable to (B, H, Lq, Lk) from :class:`MultiHeadAttention`'s ``mask``
    and ``key_padding_mask`` arguments (True = may attend), or None.

    Args:
        mask: bool, broadcastable to (B, H, Lq, Lk); a (B, Lk) mask is read as key padding.
        key_padding_mask: bool (B, Lk), True = a real key.
        B, Lq, Lk: batch, query and key lengths.
    """
    if mask is not None and (not isinstance(mask, Tensor) or mask.dtype != torch.bool):
        what = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(
            f"MultiHeadAttention: mask must be a bool tensor (True = may attend), got {what}; "
            "pass float scores as bias="
        )
    if mask is not None and mask.dim() == 2 and tuple(mask.shape) == (B, Lk):
        if (B, Lk) == (Lq, Lk) and B > 1:
            raise ValueError(
                f"MultiHeadAttention: a 2-D mask of shape {tuple(mask.shape)} is ambiguous when "
                f"B == Lq == {B}: pass key_padding_mask= (B, Lk) or a 4-D mask"
            )
        mask = mask[:, None, None, :]  # (B, 1, 1, Lk)
    if key_padding_mask is not None:
        if key_padding_mask.dim() != 2 or tuple(key_padding_mask.shape) != (B, Lk):
            raise ValueError(
                f"MultiHeadAttention: key_padding_mask must be (B, Lk) = {(B, Lk)}, "
                f"got {tuple(key_padding_mask.shape)}"
            )
        if key_padding_mask.dtype != torch.bool:
            raise ValueError(f"MultiHeadAttention: key_padding_mask must be bool, got {key_padding_mask.dtype}")
        kpm = key_padding_mask[:, None, None, :]  # (B, 1, 1, Lk)
        mask = kpm if mask is None else mask & kpm
    return mask
