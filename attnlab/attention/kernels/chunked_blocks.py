"""The per-block work of the chunked kernel: one query block against its key spans.

Matmuls run as 3-D ``bmm`` over (B·Hkv) batches, the G query heads of a KV head stacked into
the rows, so grouped-query attention never repeats K or V. Elementwise steps (bias, score_mod,
mask) see the same block as (B, H, bq, n). Score blocks live in reused workspace buffers and
gradients accumulate in place (``baddbmm_``): on CPU, a fresh multi-megabyte tensor per block
costs more in page faults than the arithmetic it holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..masks import MaskMod, ScoreMod, index_grid, mask_to_bias
from .blockplan import QueryBlock, Span, block_keep


@dataclass
class Opts:
    """Everything about a chunked call that is not a differentiable tensor."""

    mask: Tensor | None
    score_mod: ScoreMod | None
    mask_mod: MaskMod | None
    scale: float
    dropout_p: float
    return_weights: bool
    plan: list[QueryBlock]
    seed: int


@dataclass
class Blocks:
    """The inputs in the layouts the blocks need.

    Shapes: q (B, H, Lq, D); k3 (B·Hkv, Lk, D); kt3 (B·Hkv, D, Lk), contiguous so that
    q·kᵀ is a plain matmul; v3 (B·Hkv, Lk, Dv); bias 4-D broadcastable or None.
    """

    q: Tensor
    k3: Tensor
    kt3: Tensor
    v3: Tensor
    bias: Tensor | None
    H: int
    hkv: int
    _vt3: Tensor | None = None

    def vt3(self) -> Tensor:
        """vᵀ per batch entry, (B·Hkv, Dv, Lk) contiguous, made once (the backward needs it)."""
        if self._vt3 is None:
            self._vt3 = self.v3.transpose(1, 2).contiguous()
        return self._vt3

    @classmethod
    def of(cls, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> "Blocks":
        B, hkv, Lk, D = k.shape
        k3 = k.reshape(B * hkv, Lk, D)
        return cls(q, k3, k3.transpose(1, 2).contiguous(), v.reshape(B * hkv, Lk, -1), bias,
                   q.shape[1], hkv)


class Workspace:
    """Reusable flat buffers, one per name, each sized once for the largest block of the plan.

    Growing a buffer block by block (a causal plan's spans widen row by row) would touch fresh
    pages every time, and first-touch page faults cost more than the matmuls they feed.
    """

    def __init__(self, like: Tensor, plan: list[QueryBlock]):
        B, H = like.shape[:2]
        self.like = like
        self.size = max((B * H * (b.qe - b.qs) * (sp.ke - sp.ks) for b in plan for sp in b.spans), default=0)
        self.bufs: dict[str, Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...]) -> Tensor:
        n = 1
        for d in shape:
            n *= d
        buf = self.bufs.get(name)
        if buf is None or buf.numel() < n:
            buf = self.bufs[name] = self.like.new_empty(max(n, self.size))
        return buf[:n].view(shape)


# --------------------------------------------------------------------------- scores


def _q_block(x: Blocks, blk: QueryBlock, scale: float, ws: Workspace) -> Tensor:
    """Scaled query rows of a block, grouped by KV head: (B·Hkv, G·bq, D), in the workspace."""
    B, H, _, D = x.q.shape
    bq = blk.qe - blk.qs
    qb = ws.take("q", (B, H, bq, D))
    torch.mul(x.q[:, :, blk.qs:blk.qe], scale, out=qb)
    return qb.view(B * x.hkv, (H // x.hkv) * bq, D)


def _rows(t: Tensor, blk: QueryBlock, x: Blocks, ws: Workspace, name: str) -> Tensor:
    """Rows [qs, qe) of a (B, H, L, d) tensor as (B·Hkv, G·bq, d), copied into the workspace."""
    B, H, _, d = t.shape
    bq = blk.qe - blk.qs
    out = ws.take(name, (B, H, bq, d))
    out.copy_(t[:, :, blk.qs:blk.qe])
    return out.view(B * x.hkv, (H // x.hkv) * bq, d)


def _slice4(t: Tensor, qs: int, qe: int, ks: int, ke: int) -> Tensor:
    """The [qs:qe, ks:ke] block of a 4-D tensor that may broadcast (size 1) in those dims."""
    qsl = slice(qs, qe) if t.shape[2] > 1 else slice(None)
    ksl = slice(ks, ke) if t.shape[3] > 1 else slice(None)
    return t[:, :, qsl, ksl]


def _raw_scores(x: Blocks, qb: Tensor, blk: QueryBlock, sp: Span, out: Tensor | None) -> Tensor:
    """``(q·scale)·kᵀ + bias`` of one block as (B, H, bq, n), written into ``out`` if given."""
    kt = x.kt3[:, :, sp.ks:sp.ke]  # (B·Hkv, D, n)
    s = torch.bmm(qb, kt) if out is None else torch.bmm(qb, kt, out=out)  # (B·Hkv, G·bq, n)
    s = s.view(x.q.shape[0], x.H, blk.qe - blk.qs, sp.ke - sp.ks)
    if x.bias is not None:
        s += _slice4(x.bias, blk.qs, blk.qe, sp.ks, sp.ke)
    return s


def _modded(s: Tensor, o: Opts, blk: QueryBlock, sp: Span) -> Tensor:
    """Apply score_mod to raw block scores (a new tensor when there is a score_mod)."""
    if o.score_mod is None:
        return s
    B, H, bq, n = s.shape
    out = o.score_mod(s, *index_grid(B, H, bq, n, s.device, q_start=blk.qs, kv_start=sp.ks))
    return out if out.shape == s.shape else out.expand(s.shape).contiguous()


def _apply_mask(s: Tensor, o: Opts, blk: QueryBlock, sp: Span) -> Tensor:
    """Set the disallowed positions of the span's partial column ranges to -inf (in place).

    (Scores of +inf at disallowed positions would become NaN: a score_mod must not make them.)"""
    B, H = s.shape[:2]
    for a, b in sp.partial:
        keep = block_keep(o.mask, o.mask_mod, B, H, blk.qs, blk.qe, a, b, s.device)
        # adding a 0/-inf bias is ~30x faster than masked_fill_ with a broadcast mask on CPU
        s[..., a - sp.ks:b - sp.ks] += mask_to_bias(keep, s.dtype)
    return s


def _block_scores(x: Blocks, qb: Tensor, o: Opts, blk: QueryBlock, sp: Span, ws: Workspace) -> Tensor:
    """Final scores of a block, score_mod and mask applied, in the workspace: (B, H, bq, n)."""
    s = _raw_scores(x, qb, blk, sp, ws.take("s", (qb.shape[0], qb.shape[1], sp.ke - sp.ks)))
    return _apply_mask(_modded(s, o, blk, sp), o, blk, sp)


def _may_have_dead_rows(sp: Span, o: Opts, x: Blocks) -> bool:
    """Whether a row of the span can have no allowed key: never when some column is fully allowed."""
    if o.score_mod is not None or x.bias is not None:  # either may put -inf anywhere
        return True
    return sum(b - a for a, b in sp.partial) == sp.ke - sp.ks


def _accumulate(acc: Tensor, a: Tensor, b: Tensor, ws: Workspace, name: str) -> None:
    """``acc += a @ b`` for 3-D tensors; ``acc`` may be a strided slice of a larger buffer.

    PyTorch runs ``baddbmm_`` on a non-contiguous slice as one small matmul per batch entry;
    a bmm into a workspace and one add is faster.
    """
    if acc.is_contiguous():
        acc.baddbmm_(a, b)
    else:
        acc.add_(torch.bmm(a, b, out=ws.take(name, acc.shape)))


def _softmax_(s: Tensor, o: Opts, sp: Span, x: Blocks) -> Tensor:
    """Fused softmax of a whole block, in place; rows with nothing allowed give zeros.

    (PyTorch's CPU softmax reads each element before writing it, so ``out=s`` is exact; the
    kernel parity tests check this.)
    """
    dead = None
    if _may_have_dead_rows(sp, o, x):
        dead = torch.isneginf(s.amax(-1, keepdim=True))  # (B, H, bq, 1)
    p = torch.softmax(s, -1, out=s)
    if dead is not None and dead.any():
        p.masked_fill_(dead, 0.0)
    return p


def _dropout_scale(p: Tensor, o: Opts, qi: int, si: int) -> Tensor | None:
    """The dropout multiplier (0 or 1/(1-p)) of block (qi, si); the same in forward and backward."""
    if o.dropout_p == 0:
        return None
    gen = torch.Generator(device=p.device)
    gen.manual_seed((o.seed + 1_000_003 * qi + si) % 2**63)
    keep = torch.rand(p.shape, generator=gen, device=p.device, dtype=p.dtype) >= o.dropout_p
    return keep.to(p.dtype) / (1.0 - o.dropout_p)


def _as3(t: Tensor, x: Blocks) -> Tensor:
    """(B, H, bq, n) -> (B·Hkv, G·bq, n), the matmul layout."""
    return t.reshape(-1, (x.H // x.hkv) * t.shape[2], t.shape[3])


# --------------------------------------------------------------------------- forward


def forward_block(x: Blocks, o: Opts, qi: int, blk: QueryBlock, ws: Workspace,
                  weights: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Output rows (B, H, bq, Dv) of one query block, and their log-sum-exp (B, H, bq, 1).

    A block with one key span takes PyTorch's fused softmax and needs no lse (None); several
    spans combine by online softmax.
    """
    B, H = x.q.shape[:2]
    bq, Dv = blk.qe - blk.qs, x.v3.shape[-1]
    if not blk.spans:  # the mask rules out this whole query block
        return x.q.new_zeros(B, H, bq, Dv), None
    qb = _q_block(x, blk, o.scale, ws)
    if len(blk.spans) == 1:
        sp = blk.spans[0]
        p = _softmax_(_block_scores(x, qb, o, blk, sp, ws), o, sp, x)
        if weights is not None:
            weights[:, :, blk.qs:blk.qe, sp.ks:sp.ke] = p
        drop = _dropout_scale(p, o, qi, 0)
        out = ws.take("out", (B * x.hkv, qb.shape[1], Dv))
        torch.bmm(_as3(p if drop is None else p * drop, x), x.v3[:, sp.ks:sp.ke], out=out)
        return out.view(B, H, bq, Dv), None

    m = l = None
    acc = ws.take("acc", (B * x.hkv, qb.shape[1], Dv)).zero_()  # (B·Hkv, G·bq, Dv)
    for si, sp in enumerate(blk.spans):
        s = _block_scores(x, qb, o, blk, sp, ws)
        m_new = s.amax(-1, keepdim=True) if m is None else torch.maximum(m, s.amax(-1, keepdim=True))
        m_use = m_new.masked_fill(torch.isneginf(m_new), 0.0)  # rows with nothing yet: any shift
        p = s.sub_(m_use).exp_()  # (B, H, bq, n), in place over s
        if m is None:
            l = p.sum(-1, keepdim=True)
        else:
            alpha = torch.exp(m - m_use)  # (B, H, bq, 1)
            l = l.mul_(alpha).add_(p.sum(-1, keepdim=True))
            acc.view(B, H, bq, Dv).mul_(alpha)
        drop = _dropout_scale(p, o, qi, si)
        acc.baddbmm_(_as3(p if drop is None else p * drop, x), x.v3[:, sp.ks:sp.ke])
        m = m_new
    alive = l > 0
    out = acc.view(B, H, bq, Dv) / l.masked_fill(~alive, 1.0)
    # dead rows get lse = +inf, so exp(s - lse) = 0 for them in the backward and the weights
    lse = torch.where(alive, m.masked_fill(~alive, 0.0) + torch.log(l), float("inf"))
    if weights is not None:
        for sp in blk.spans:
            s = _block_scores(x, qb, o, blk, sp, ws)
            weights[:, :, blk.qs:blk.qe, sp.ks:sp.ke] = torch.exp(s.sub_(lse))
    return out, lse


# --------------------------------------------------------------------------- backward


def _reduce_to(g: Tensor, shape: torch.Size) -> Tensor:
    """Sum a (B, H, bq, n) gradient over the dims in which a broadcast tensor has size 1."""
    dims = [i for i in range(4) if shape[i] == 1 and g.shape[i] != 1]
    return g.sum(dims, keepdim=True) if dims else g


def backward_block(x: Blocks, o: Opts, qi: int, blk: QueryBlock, ws: Workspace, dout: Tensor,
                   lse: Tensor, delta: Tensor | None, dweights: Tensor | None, grads) -> None:
    """Accumulate one query block's gradient into ``grads`` = (dq, dk3, dv3, dbias).

    dq gets ``ds·k`` without the softmax scale: the caller multiplies it in once.

    Shapes: dq like q; dk3 (B·Hkv, Lk, D); dv3 (B·Hkv, Lk, Dv); dbias like bias or None.
    """
    dq, dk3, dv3, dbias = grads
    B, H, _, D = x.q.shape
    bq = blk.qe - blk.qs
    qb = _q_block(x, blk, o.scale, ws)  # (B·Hkv, G·bq, D)
    dob = _rows(dout, blk, x, ws, "do")  # (B·Hkv, G·bq, Dv)
    dqb = ws.take("dq", qb.shape).zero_()
    vt3 = x.vt3()  # (B·Hkv, Dv, Lk)
    direct = len(blk.spans) == 1  # the forward used the fused softmax
    for si, sp in enumerate(blk.spans):
        shape3 = (qb.shape[0], qb.shape[1], sp.ke - sp.ks)
        if o.score_mod is not None:  # s_raw stays out of the workspace: the score_mod graph may hold it
            s_raw = _raw_scores(x, qb, blk, sp, None).requires_grad_(True)
            with torch.enable_grad():
                s_mod = _modded(s_raw, o, blk, sp)
            s = _apply_mask(s_mod.detach().clone(), o, blk, sp)
        else:
            s = _apply_mask(_raw_scores(x, qb, blk, sp, ws.take("s", shape3)), o, blk, sp)
        if direct:
            p = _softmax_(s, o, sp, x)
        else:
            p = s.sub_(lse[:, :, blk.qs:blk.qe]).exp_()  # (B, H, bq, n)
        dp = torch.bmm(dob, vt3[:, :, sp.ks:sp.ke], out=ws.take("dp", shape3))
        dp = dp.view(p.shape)  # (B, H, bq, n)
        drop = _dropout_scale(p, o, qi, si)
        if drop is not None:
            dp.mul_(drop)
        if dweights is not None:
            dp += dweights[:, :, blk.qs:blk.qe, sp.ks:sp.ke]
        p_out = p if drop is None else p * drop
        _accumulate(dv3[:, sp.ks:sp.ke], _as3(p_out, x).transpose(1, 2), dob, ws, "dv")
        if direct:  # ds = p ∘ (dp - rowsum(p ∘ dp)), fused
            ds = torch.ops.aten._softmax_backward_data.out(dp, p, -1, p.dtype, grad_input=dp)
        else:
            ds = p.mul_(dp.sub_(delta[:, :, blk.qs:blk.qe]))  # in place over p
        if o.score_mod is not None:
            torch.autograd.backward(s_mod, ds)  # also reaches tensors the score_mod captured
            ds = s_raw.grad
        if dbias is not None:
            _slice4(dbias, blk.qs, blk.qe, sp.ks, sp.ke).add_(_reduce_to(ds, dbias.shape))
        ds3 = _as3(ds, x)  # (B·Hkv, G·bq, n)
        dqb.baddbmm_(ds3, x.k3[:, sp.ks:sp.ke])
        _accumulate(dk3[:, sp.ks:sp.ke], ds3.transpose(1, 2), qb, ws, "dk")
    dq[:, :, blk.qs:blk.qe] = dqb.view(B, H, bq, D)  # the caller scales dq once at the end
