"""Chunked attention: query- and key-blocked, online softmax, memory linear in sequence length.

Forward (per query block, over its key spans; Milakov & Gimelshein 2018, Dao et al. 2022)::

    s = (q·scale)·kᵀ + bias -> score_mod -> mask      # (B, H, bq, n) one block at a time
    m' = max(m, rowmax s);  p = exp(s - m')
    l = l·exp(m - m') + rowsum p;  acc = acc·exp(m - m') + p·v
    out = acc / l;  lse = m + log l                    # lse is all the backward keeps

Backward recomputes each block from ``lse`` (no (Lq, Lk) tensor is ever kept)::

    p = exp(s - lse);  dv += pᵀ·dout;  dp = dout·vᵀ (+ dweights)
    ds = p ∘ (dp - delta),  delta = rowsum(dout ∘ out) (+ rowsum(weights ∘ dweights))
    dq += ds·k·scale;  dk += dsᵀ·q·scale

Blocks that a mask rules out entirely are never computed (see :mod:`.blockplan`); blocks it
allows entirely skip the mask. Grouped-query attention runs without repeating KV heads: the G
query heads that share a KV head are stacked into one matmul. ``return_weights=True`` gives the
exact softmax weights, written block by block into the (B, H, Lq, Lk) result; they are
differentiable. Gradients reach tensors captured by a ``score_mod`` (a learnable bias table,
say) through a nested backward, as in reentrant checkpointing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..masks import MaskMod, ScoreMod, index_grid
from .base import AttentionRequest, FunctionKernel, register_kernel
from .blockplan import QueryBlock, Span, block_keep, plan_blocks

# Elements in one (B, H, block_q, span) score block: bounds the kernel's working memory.
SCORE_BLOCK_ELEMENTS = 1 << 22
BLOCK_Q = 128  # query rows per block when a mask may let blocks be skipped
BLOCK_K = 128  # key columns per block: the granularity at which masked work is skipped


@dataclass
class _Opts:
    mask: Tensor | None
    score_mod: ScoreMod | None
    mask_mod: MaskMod | None
    scale: float
    dropout_p: float
    return_weights: bool
    plan: list[QueryBlock]
    seed: int


def chunked_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: Tensor | None = None,
    bias: Tensor | None = None,
    score_mod: ScoreMod | None = None,
    mask_mod: MaskMod | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_weights: bool = False,
    block_q: int | None = None,
    block_k: int = BLOCK_K,
    max_span: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Chunked attention with a hand-written backward. Returns (out, weights or None).

    Inputs are as in :func:`attnlab.attention.attend` (which validates them); ``mask`` and
    ``bias`` must already be 4-D. The block sizes default to a working set of about
    ``SCORE_BLOCK_ELEMENTS`` scores.

    Args:
        q, k, v: (B, H, Lq, D), (B, Hkv, Lk, D), (B, Hkv, Lk, Dv).
        mask: 4-D bool, True = may attend, broadcastable to (B, H, Lq, Lk).
        bias: 4-D additive bias, broadcastable to (B, H, Lq, Lk).
        score_mod: ``(score, b, h, q_idx, kv_idx) -> score``.
        mask_mod: ``(b, h, q_idx, kv_idx) -> bool``.
        scale: defaults to ``1 / sqrt(D)``.
        dropout_p: dropout on the weights (masks are regenerated in backward from a seed).
        return_weights: also return the exact (B, H, Lq, Lk) weights (before dropout).
        block_q: query rows per block.
        block_k: key columns per block (skipping granularity).
        max_span: most key columns computed in one matmul.
    """
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    scale = D**-0.5 if scale is None else scale
    if block_q is None or max_span is None:
        bq, span = _block_sizes(B, H, Lq, Lk, masked=mask is not None or mask_mod is not None)
        block_q = block_q or bq
        max_span = max_span or span
    plan = plan_blocks(mask, mask_mod, B, H, Lq, Lk, block_q, block_k, max_span, q.device)
    seed = int(torch.randint(0, 2**62, (1,))) if dropout_p > 0 else 0
    opts = _Opts(mask, score_mod, mask_mod, float(scale), float(dropout_p), return_weights, plan, seed)
    half = q.dtype in (torch.float16, torch.bfloat16)  # softmax statistics need float32
    args = [t.float() if half and t is not None else t for t in (q, k, v, bias)]
    # A score_mod may capture tensors that need gradients (a learnable bias table) even when
    # q, k, v do not: a dummy input then keeps the function on the autograd tape.
    anchor = q.new_empty(0, requires_grad=_captures_grad(score_mod, q))
    out, weights = _ChunkedAttention.apply(*args, anchor, opts)
    if half:
        out = out.to(q.dtype)
        weights = weights.to(q.dtype) if return_weights else weights
    return out, (weights if return_weights else None)


def _captures_grad(score_mod: ScoreMod | None, q: Tensor) -> bool:
    """Whether ``score_mod`` uses tensors that require grad (probed on a single score)."""
    if score_mod is None or not torch.is_grad_enabled():
        return False
    one = torch.zeros((1, 1, 1, 1), dtype=q.dtype, device=q.device)
    probe = score_mod(one, *index_grid(1, 1, 1, 1, q.device))
    return isinstance(probe, Tensor) and probe.requires_grad


def _block_sizes(B: int, H: int, Lq: int, Lk: int, masked: bool) -> tuple[int, int]:
    """(block_q, max_span): large blocks amortise Python overhead; masked grids use finer rows."""
    rows = max(1, SCORE_BLOCK_ELEMENTS // (B * H))  # block_q * span per (b, h) pair
    span = min(Lk, max(BLOCK_K, rows // BLOCK_Q))
    span = -(-span // BLOCK_K) * BLOCK_K
    if masked:
        return BLOCK_Q, span
    block_q = max(16, min(Lq, rows // max(span, 1), 1024))
    return block_q, span


# --------------------------------------------------------------------------- block helpers


def _q_block(q: Tensor, blk: QueryBlock, hkv: int, scale: float) -> Tensor:
    """Scaled query rows of a block, query heads grouped by KV head: (B, Hkv, G*bq, D)."""
    B, H, _, D = q.shape
    qb = q[:, :, blk.qs:blk.qe] * scale  # (B, H, bq, D)
    return qb.reshape(B, hkv, (H // hkv) * (blk.qe - blk.qs), D)


def _slice4(t: Tensor, blk: QueryBlock, sp: Span) -> Tensor:
    """The [qs:qe, ks:ke] block of a 4-D tensor that may broadcast (size 1) in those dims."""
    qsl = slice(blk.qs, blk.qe) if t.shape[2] > 1 else slice(None)
    ksl = slice(sp.ks, sp.ke) if t.shape[3] > 1 else slice(None)
    return t[:, :, qsl, ksl]


def _raw_scores(qb: Tensor, k: Tensor, bias: Tensor | None, blk: QueryBlock, sp: Span, H: int) -> Tensor:
    """``(q·scale)·kᵀ + bias`` for one block: (B, H, bq, n)."""
    B = qb.shape[0]
    s = torch.matmul(qb, k[:, :, sp.ks:sp.ke].transpose(-1, -2))  # (B, Hkv, G*bq, n)
    s = s.view(B, H, blk.qe - blk.qs, sp.ke - sp.ks)
    if bias is not None:
        s += _slice4(bias, blk, sp)
    return s


def _modded(s: Tensor, o: _Opts, blk: QueryBlock, sp: Span) -> Tensor:
    """Apply score_mod to raw block scores (a new tensor when there is a score_mod)."""
    if o.score_mod is None:
        return s
    B, H, bq, n = s.shape
    out = o.score_mod(s, *index_grid(B, H, bq, n, s.device, q_start=blk.qs, kv_start=sp.ks))
    return out if out.shape == s.shape else out.expand(s.shape).contiguous()


def _apply_mask(s: Tensor, o: _Opts, blk: QueryBlock, sp: Span) -> Tensor:
    """Set disallowed positions of a partial block to -inf (in place)."""
    if sp.partial:
        B, H = s.shape[:2]
        keep = block_keep(o.mask, o.mask_mod, B, H, blk.qs, blk.qe, sp.ks, sp.ke, s.device)
        s.masked_fill_(~keep, float("-inf"))
    return s


def _dropout_scale(p: Tensor, o: _Opts, qi: int, si: int) -> Tensor | None:
    """The dropout multiplier (0 or 1/(1-p)) of block (qi, si); the same in forward and backward."""
    if o.dropout_p == 0:
        return None
    gen = torch.Generator(device=p.device)
    gen.manual_seed((o.seed + 1_000_003 * qi + si) % 2**63)
    keep = torch.rand(p.shape, generator=gen, device=p.device, dtype=p.dtype) >= o.dropout_p
    return keep.to(p.dtype) / (1.0 - o.dropout_p)


def _matmul_pv(p: Tensor, v: Tensor, sp: Span) -> Tensor:
    """p (B, H, bq, n) · v[span] (B, Hkv, n, Dv) -> (B, H, bq, Dv), without repeating KV heads."""
    B, H, bq, n = p.shape
    hkv = v.shape[1]
    out = torch.matmul(p.reshape(B, hkv, (H // hkv) * bq, n), v[:, :, sp.ks:sp.ke])
    return out.view(B, H, bq, -1)


# --------------------------------------------------------------------------- forward / backward


def _forward_block(q, k, v, bias, o: _Opts, qi: int, blk: QueryBlock, weights: Tensor | None):
    """Output rows (B, H, bq, Dv) and their log-sum-exp (B, H, bq, 1) for one query block."""
    B, H = q.shape[:2]
    bq = blk.qe - blk.qs
    qb = _q_block(q, blk, k.shape[1], o.scale)
    m = l = acc = None
    p_single = None
    for si, sp in enumerate(blk.spans):
        s = _apply_mask(_modded(_raw_scores(qb, k, bias, blk, sp, H), o, blk, sp), o, blk, sp)
        m_new = s.amax(-1, keepdim=True) if m is None else torch.maximum(m, s.amax(-1, keepdim=True))
        m_use = m_new.masked_fill(torch.isneginf(m_new), 0.0)  # rows with nothing yet: any shift
        p = s.sub_(m_use).exp_()  # (B, H, bq, n), in place over s
        drop = _dropout_scale(p, o, qi, si)
        pv = _matmul_pv(p if drop is None else p * drop, v, sp)
        if m is None:
            l, acc = p.sum(-1, keepdim=True), pv
        else:
            alpha = torch.exp(m - m_use)
            l = l.mul_(alpha).add_(p.sum(-1, keepdim=True))
            acc = acc.mul_(alpha).add_(pv)
        m = m_new
        if weights is not None and len(blk.spans) == 1:
            p_single = p
    if m is None:  # the mask rules out this whole query block
        out = q.new_zeros(B, H, bq, v.shape[-1])
        return out, q.new_full((B, H, bq, 1), float("inf"))
    alive = l > 0
    out = acc / l.masked_fill(~alive, 1.0)
    # dead rows get lse = +inf, so exp(s - lse) = 0 for them in the backward and the weights
    lse = torch.where(alive, m.masked_fill(~alive, 0.0) + torch.log(l), float("inf"))
    if weights is not None:
        if p_single is not None:
            sp = blk.spans[0]
            weights[:, :, blk.qs:blk.qe, sp.ks:sp.ke] = p_single / l.masked_fill(~alive, 1.0)
        else:
            for sp in blk.spans:
                s = _apply_mask(_modded(_raw_scores(qb, k, bias, blk, sp, H), o, blk, sp), o, blk, sp)
                weights[:, :, blk.qs:blk.qe, sp.ks:sp.ke] = torch.exp(s - lse)
    return out, lse


def _reduce_to(g: Tensor, shape: torch.Size) -> Tensor:
    """Sum a (B, H, bq, n) gradient over the dims in which a broadcast tensor has size 1."""
    dims = [i for i in range(4) if shape[i] == 1 and g.shape[i] != 1]
    return g.sum(dims, keepdim=True) if dims else g


class _ChunkedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, anchor, o: _Opts):
        B, H, Lq, _ = q.shape
        out = q.new_empty(B, H, Lq, v.shape[-1])
        lse = q.new_empty(B, H, Lq, 1)
        weights = q.new_zeros(B, H, Lq, k.shape[2]) if o.return_weights else q.new_empty(0)
        for qi, blk in enumerate(o.plan):
            ob, lb = _forward_block(q, k, v, bias, o, qi, blk, weights if o.return_weights else None)
            out[:, :, blk.qs:blk.qe] = ob
            lse[:, :, blk.qs:blk.qe] = lb
        ctx.save_for_backward(q, k, v, bias, out, lse, weights)
        ctx.opts = o
        ctx.set_materialize_grads(False)
        if not o.return_weights:
            ctx.mark_non_differentiable(weights)
        return out, weights

    @staticmethod
    def backward(ctx, dout, dweights):
        q, k, v, bias, out, lse, weights = ctx.saved_tensors
        o: _Opts = ctx.opts
        B, H, Lq, D = q.shape
        hkv, G = k.shape[1], H // k.shape[1]
        if dout is None:
            dout = torch.zeros_like(out)
        if not o.return_weights:
            dweights = None
        delta = (dout * out).sum(-1, keepdim=True)  # (B, H, Lq, 1)
        if dweights is not None:
            delta = delta + (weights * dweights).sum(-1, keepdim=True)
        dq = torch.zeros_like(q)
        dk = torch.zeros_like(k)
        dv = torch.zeros_like(v)
        want_dbias = bias is not None and ctx.needs_input_grad[3]
        dbias = torch.zeros_like(bias) if want_dbias else None
        for qi, blk in enumerate(o.plan):
            if not blk.spans:
                continue
            bq = blk.qe - blk.qs
            qb = _q_block(q, blk, hkv, o.scale)  # (B, Hkv, G*bq, D)
            dob = dout[:, :, blk.qs:blk.qe].reshape(B, hkv, G * bq, -1)  # (B, Hkv, G*bq, Dv)
            lse_b, delta_b = lse[:, :, blk.qs:blk.qe], delta[:, :, blk.qs:blk.qe]
            dqb = torch.zeros_like(qb)
            for si, sp in enumerate(blk.spans):
                s_raw = _raw_scores(qb, k, bias, blk, sp, H)  # (B, H, bq, n)
                if o.score_mod is not None:
                    s_raw.requires_grad_(True)
                    with torch.enable_grad():
                        s_mod = _modded(s_raw, o, blk, sp)
                    s = _apply_mask(s_mod.detach().clone(), o, blk, sp)
                else:
                    s = _apply_mask(s_raw, o, blk, sp)
                p = s.sub_(lse_b).exp_()  # (B, H, bq, n)
                vb = v[:, :, sp.ks:sp.ke]
                dp = torch.matmul(dob, vb.transpose(-1, -2)).view(B, H, bq, -1)  # (B, H, bq, n)
                drop = _dropout_scale(p, o, qi, si)
                if drop is not None:
                    dp.mul_(drop)
                if dweights is not None:
                    dp += dweights[:, :, blk.qs:blk.qe, sp.ks:sp.ke]
                p_out = p if drop is None else p * drop
                dv[:, :, sp.ks:sp.ke] += torch.matmul(
                    p_out.reshape(B, hkv, G * bq, -1).transpose(-1, -2), dob
                )
                ds = p.mul_(dp.sub_(delta_b))  # (B, H, bq, n), in place over p
                if o.score_mod is not None:
                    torch.autograd.backward(s_mod, ds)  # also reaches tensors the score_mod captured
                    ds = s_raw.grad
                if dbias is not None:
                    _slice4(dbias, blk, sp).add_(_reduce_to(ds, dbias.shape))
                ds3 = ds.reshape(B, hkv, G * bq, -1)
                dqb += torch.matmul(ds3, k[:, :, sp.ks:sp.ke])
                dk[:, :, sp.ks:sp.ke] += torch.matmul(ds3.transpose(-1, -2), qb)
            dq[:, :, blk.qs:blk.qe] = dqb.view(B, H, bq, D) * o.scale
        return dq, dk, dv, dbias, None, None


def _chunked(req: AttentionRequest):
    return chunked_attention(
        req.q, req.k, req.v, mask=req.mask, bias=req.bias, score_mod=req.score_mod,
        mask_mod=req.mask_mod, scale=req.scale, dropout_p=req.dropout_p,
        return_weights=req.return_weights,
    )


CHUNKED = register_kernel(FunctionKernel("chunked", _chunked, lambda req: None))
