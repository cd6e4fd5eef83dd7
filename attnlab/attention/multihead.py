"""The multi-head attention module: projections, heads, positions and the KV cache.

The module owns everything around the kernel; the attention itself runs in :func:`attend` (any
registered kernel) or, for scores that are not a dot product and normalisers other than softmax,
in the reference :func:`math_attention`::

    mha = MultiHeadAttention(512, 8, num_kv_heads=2, position="rope")
    res = mha(x, causal=True)                  # res.out (B, L, 512), res.kernel
    res = mha(x, mask=pad, return_weights=True)  # res.weights (B, 8, L, L)
    res = mha(x, head_mask=torch.tensor([1., 0, 1, 1, 1, 1, 1, 1]))  # head 1 silenced
    mha.prune_heads([1, 5])                    # now 6 query heads, q/out projections shrunk

A head mask (Michel et al. 2019, "Are Sixteen Heads Really Better than One?") multiplies each
head's output before the output projection, whatever kernel ran; the gradient of a loss with
respect to it is their head-importance signal. Pruning removes heads from the weights; a pruned
module keeps ``embed_dim`` but its inner width ``num_heads * head_dim`` shrinks.

Grouped-query attention (Ainslie et al. 2023) shares each of ``num_kv_heads`` key/value heads
between ``num_heads / num_kv_heads`` query heads; k and v go to the kernel with their own head
count, never repeated here.

Prefix tuning (Li & Liang 2021) plugs in through ``kv_prefix``: an optional submodule called as
``kv_prefix(B) -> (keys, values)``, each (B, Hkv, P, D), that are put before the real keys and
values on every call (after positions are applied and after the cache, which holds only real
keys). The P prefix columns are always visible and unbiased: masks grow by P True columns, and
mask_mods, score_mods and position biases see the real keys' indices. Returned weights stay
(B, H, Lq, Lk) over the real keys, so with a prefix their rows sum to less than 1.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import masks as M
from .api import attend
from .cache import KVCache
from .kernels.math import math_attention, repeat_kv
from .normalizers import create_normalizer
from .positions import PositionalEncoding, create_position, position_class
from .scores import create_score


@dataclass
class AttentionOutput:
    """What :class:`MultiHeadAttention` returns.

    Attributes:
        out: (B, Lq, E) output, after the output projection.
        weights: (B, H, Lq, Lk) attention weights (before dropout), or None if not requested;
            over the real keys only (with a ``kv_prefix`` the rows sum to less than 1).
        kernel: the kernel that ran ("math" for non-dot scores and non-softmax normalisers).
        cache: the :class:`KVCache` passed in (updated in place), or None.
    """

    out: Tensor
    weights: Tensor | None
    kernel: str
    cache: KVCache | None = None


class MultiHeadAttention(nn.Module):
    """Multi-head attention (Vaswani et al. 2017) with GQA/MQA, pluggable scores, normalisers,
    positions and kernels.

    Args:
        embed_dim: E, width of queries and of the output.
        num_heads: H, number of query heads.
        num_kv_heads: Hkv, number of key/value heads (GQA; 1 is MQA); defaults to H.
        head_dim: D, per-head width; defaults to ``embed_dim // num_heads``.
        kdim, vdim: widths of the key and value inputs; default to E.
        bias: biases in the four projections.
        dropout: dropout on the attention weights (training mode only).
        score: a registered score name (``attnlab.attention.scores``).
        score_kwargs: extra arguments of the score.
        normalizer: a registered normaliser name, or a callable ``scores -> weights``.
        normalizer_kwargs: extra arguments of the normaliser.
        position: None, a registered position name or a ``PositionalEncoding``. Only its
            ``rotate`` and ``bias`` hooks are used here; they apply in self-attention only.
        position_kwargs: extra arguments when ``position`` is a name (``head_dim`` and
            ``num_heads`` are filled in when the encoding takes them).
        kernel: default kernel: "auto" or a registered kernel name.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        kdim: int | None = None,
        vdim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        score: str = "scaled_dot",
        score_kwargs: dict | None = None,
        normalizer="softmax",
        normalizer_kwargs: dict | None = None,
        position: str | PositionalEncoding | None = None,
        position_kwargs: dict | None = None,
        kernel: str = "auto",
    ):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        _check_sizes(embed_dim, num_heads, num_kv_heads, head_dim, dropout)
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = embed_dim // num_heads if head_dim is None else head_dim
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self.dropout = float(dropout)
        self.kernel = kernel
        self.pruned_heads: list[int] = []  # original indices of removed query heads, sorted
        H, Hkv, D = num_heads, num_kv_heads, self.head_dim

        self.q_proj = nn.Linear(embed_dim, H * D, bias=bias)
        self.k_proj = nn.Linear(self.kdim, Hkv * D, bias=bias)
        self.v_proj = nn.Linear(self.vdim, Hkv * D, bias=bias)
        self.out_proj = nn.Linear(H * D, embed_dim, bias=bias)

        self.score = create_score(score, head_dim=D, num_heads=H, **(score_kwargs or {}))
        # Softmax over a dot-product score is what every kernel computes; anything else needs
        # the reference kernel with an explicit normaliser.
        plain_softmax = normalizer == "softmax" and not normalizer_kwargs
        if callable(normalizer):
            self.normalizer = normalizer
        else:
            self.normalizer = None if plain_softmax else create_normalizer(normalizer, **(normalizer_kwargs or {}))
        self.uses_attend = self.score.dot_product and self.normalizer is None
        self.position = _build_position(position, position_kwargs, D, H)
        self.kv_prefix: nn.Module | None = None  # prefix tuning's hook (see the module docstring)

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        mask_mod: M.MaskMod | None = None,
        bias: Tensor | None = None,
        score_mod: M.ScoreMod | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        positions: Tensor | None = None,
        return_weights: bool = False,
        kernel: str | None = None,
        head_mask: Tensor | None = None,
    ) -> AttentionOutput:
        """Attend from ``query`` over ``key``/``value`` (self-attention when ``key`` is None).

        Args:
            query: (B, Lq, E).
            key: (B, Lk, kdim); defaults to ``query``. Ignored with a filled static cache.
            value: (B, Lk, vdim); defaults to ``key``.
            mask: bool, True = may attend, broadcastable to (B, H, Lq, Lk) with Lk counting
                cached keys. A 2-D mask of shape (B, Lk) but not (Lq, Lk) is read as key padding.
            key_padding_mask: (B, Lk) bool, True = real token.
            mask_mod: ``(b, h, q_idx, kv_idx) -> bool``; kv_idx counts cached keys.
            bias: additive float bias broadcastable to (B, H, Lq, Lk).
            score_mod: ``(score, b, h, q_idx, kv_idx) -> score``, applied after the position bias.
            causal: query i sees keys up to its own position (cached keys all come before).
            cache: a :class:`KVCache`, updated in place. Dynamic: the new keys/values are
                appended. Static: filled on the first call, then the k/v projections are skipped.
            positions: (Lq,) or (B, Lq) absolute positions of the queries for the rotate hook;
                defaults to ``arange(past, past + Lq)`` with ``past`` the cache length.
            return_weights: also return the (B, H, Lq, Lk) weights.
            kernel: overrides the module's kernel for this call.
            head_mask: float (H,) or (B, H) multiplying each head's output before the output
                projection (0 removes a head); the returned weights are not affected. After
                pruning, H may be the current head count or the original one (pruned entries
                are then ignored).
        """
        kernel = self.kernel if kernel is None else kernel
        static = cache is not None and cache.is_static
        reuse = static and cache.filled
        self_attn = key is None and not static  # positions apply to self-attention only
        key = query if key is None else key
        value = key if value is None else value
        self._check_inputs(query, None if reuse else key, None if reuse else value)
        B, Lq, _ = query.shape
        past = cache.length if cache is not None and not static else 0

        q = self._heads(self.q_proj(query), self.num_heads)  # (B, H, Lq, D)
        if reuse:
            k, v = cache.k, cache.v  # (B, Hkv, Lk, D)
        else:
            k = self._heads(self.k_proj(key), self.num_kv_heads)  # (B, Hkv, Lk_new, D)
            v = self._heads(self.v_proj(value), self.num_kv_heads)  # (B, Hkv, Lk_new, D)
        pos_enc = self.position if self_attn else None
        if pos_enc is not None and "rotate" in pos_enc.hooks:
            if positions is None:
                positions = torch.arange(past, past + Lq, device=q.device)  # (Lq,)
            q, k = pos_enc.rotate(q, k, positions, positions)
        if cache is not None and not reuse:
            k, v = cache.update(k, v)  # (B, Hkv, past + Lq, D); keys cached after rotation
        Lk = k.shape[2]

        mask = M.merge_masks(mask, key_padding_mask, B, Lq, Lk)
        if causal:
            mask_mod = M.causal(past) if mask_mod is None else M.and_masks(mask_mod, M.causal(past))
        if pos_enc is not None and "bias" in pos_enc.hooks:
            score_mod = _compose(pos_enc.score_mod(q_offset=past), score_mod)
        dropout_p = self.dropout if self.training else 0.0
        P = 0
        if self.kv_prefix is not None:
            pk, pv = self.kv_prefix(B)  # (B, Hkv, P, D) each
            P = pk.shape[2]
        if P:
            k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)  # (B, Hkv, P + Lk, D)
            mask, bias, mask_mod, score_mod = _prefix_visible(P, Lk, mask, bias, mask_mod, score_mod)

        if self.uses_attend:
            q2, k2, scale = self.score.prepare(q, k)
            res = attend(
                q2, k2, v, scale=scale, mask=mask, bias=bias, score_mod=score_mod, mask_mod=mask_mod,
                dropout_p=dropout_p, kernel=kernel, return_weights=return_weights,
            )
            o, weights, ran = res.out, res.weights, res.kernel
        else:
            if kernel not in ("auto", "math"):
                raise ValueError(
                    f"MultiHeadAttention: kernel={kernel!r} cannot run score={self.score.name!r} "
                    f"with normalizer {self.normalizer!r}; only kernel='math' (or 'auto') can"
                )
            scores = self.score(q, repeat_kv(k, self.num_heads // self.num_kv_heads))  # (B, H, Lq, Lk)
            o, weights = math_attention(
                q, k, v, scores=scores, normalizer=self.normalizer, mask=mask, bias=bias,
                score_mod=score_mod, mask_mod=mask_mod, dropout_p=dropout_p,
            )
            weights, ran = (weights if return_weights else None), "math"
        if P and weights is not None:
            weights = weights[..., P:]  # (B, H, Lq, Lk): the real keys only

        if head_mask is not None:
            o = o * self._head_mask(head_mask, B).to(dtype=o.dtype, device=o.device)  # (B, H, Lq, D)
        o = o.transpose(1, 2).reshape(B, Lq, self.num_heads * self.head_dim)  # (B, Lq, H*D)
        return AttentionOutput(out=self.out_proj(o), weights=weights, kernel=ran, cache=cache)

    def _head_mask(self, head_mask: Tensor, B: int) -> Tensor:
        """A (H,) or (B, H) head mask (H current or original) as (1 | B, H, 1, 1)."""
        H, H0 = self.num_heads, self.num_heads + len(self.pruned_heads)
        m = torch.as_tensor(head_mask)
        if m.dim() not in (1, 2) or m.shape[-1] not in (H, H0) or (m.dim() == 2 and m.shape[0] not in (1, B)):
            raise ValueError(
                f"MultiHeadAttention: head_mask must be (H,) or (B, H) with H = {H}"
                + (f" (or {H0} before pruning)" if H0 != H else "") + f", B = {B}; got {tuple(m.shape)}"
            )
        if m.shape[-1] != H:
            m = m[..., self.kept_heads()]  # original indices -> current heads
        return m.reshape(-1, H, 1, 1)  # (1 | B, H, 1, 1)

    def kept_heads(self) -> list[int]:
        """Original indices of the query heads still present, in order."""
        gone = set(self.pruned_heads)
        return [h for h in range(self.num_heads + len(gone)) if h not in gone]

    def prune_heads(self, heads) -> None:
        """Remove query heads from the weights (q rows, output-projection columns, q biases).

        Args:
            heads: original head indices (as before any pruning); already pruned ones are
                skipped. At least one head must remain.

        Raises:
            ValueError: grouped-query attention (shared k/v heads), a score with per-head
                parameters, a position bias (ALiBi, relative), a ``kv_prefix`` or removing every head.
        """
        kept = self.kept_heads()
        drop = sorted({int(h) for h in heads} - set(self.pruned_heads))
        bad = [h for h in drop if not 0 <= h < len(kept) + len(self.pruned_heads)]
        if bad:
            raise ValueError(f"MultiHeadAttention.prune_heads: no heads {bad}; original count "
                             f"{len(kept) + len(self.pruned_heads)}")
        if not drop:
            return
        if self.num_kv_heads != self.num_heads:
            raise ValueError(
                f"MultiHeadAttention.prune_heads: grouped-query attention (num_heads={self.num_heads}, "
                f"num_kv_heads={self.num_kv_heads}) shares k/v heads between query heads; pruning "
                "it is not supported (use a head mask)"
            )
        if any(True for _ in self.score.parameters()) or (
                self.position is not None and "bias" in self.position.hooks):
            raise ValueError(
                "MultiHeadAttention.prune_heads: the score or position has per-head parameters "
                f"(score={self.score.name!r}, position={getattr(self.position, 'name', None)!r}); "
                "pruning it is not supported (use a head mask)"
            )
        if self.kv_prefix is not None:
            raise ValueError("MultiHeadAttention.prune_heads: the kv_prefix (prefix tuning) holds per-head "
                             "keys and values; prune the heads before adding it")
        keep = [i for i, h in enumerate(kept) if h not in drop]  # current indices
        if not keep:
            raise ValueError("MultiHeadAttention.prune_heads: cannot remove every head")
        D = self.head_dim
        rows = torch.tensor([i * D + d for i in keep for d in range(D)], device=self.q_proj.weight.device)
        self.q_proj = _select(self.q_proj, rows, dim=0)
        self.k_proj = _select(self.k_proj, rows, dim=0)
        self.v_proj = _select(self.v_proj, rows, dim=0)
        self.out_proj = _select(self.out_proj, rows, dim=1)
        self.num_heads = self.num_kv_heads = len(keep)
        self.score.num_heads = len(keep)
        self.pruned_heads = sorted({*self.pruned_heads, *drop})

    def _heads(self, x: Tensor, n: int) -> Tensor:
        """(B, L, n*D) -> (B, n, L, D)."""
        B, L, _ = x.shape
        return x.view(B, L, n, self.head_dim).transpose(1, 2)

    def _check_inputs(self, query: Tensor, key: Tensor | None, value: Tensor | None) -> None:
        if query.dim() != 3 or query.shape[-1] != self.embed_dim:
            raise ValueError(
                f"MultiHeadAttention: query must be (B, Lq, embed_dim={self.embed_dim}), "
                f"got {tuple(query.shape)}"
            )
        if key is None:
            return
        if key.dim() != 3 or key.shape[-1] != self.kdim:
            raise ValueError(f"MultiHeadAttention: key must be (B, Lk, kdim={self.kdim}), got {tuple(key.shape)}")
        if value.dim() != 3 or value.shape[-1] != self.vdim:
            raise ValueError(f"MultiHeadAttention: value must be (B, Lk, vdim={self.vdim}), got {tuple(value.shape)}")
        if not (query.shape[0] == key.shape[0] == value.shape[0]) or key.shape[1] != value.shape[1]:
            raise ValueError(
                f"MultiHeadAttention: batch or length mismatch: query {tuple(query.shape)}, "
                f"key {tuple(key.shape)}, value {tuple(value.shape)}"
            )

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, "
            f"head_dim={self.head_dim}, dropout={self.dropout}, kernel={self.kernel!r}"
            + (f", pruned_heads={self.pruned_heads}" if self.pruned_heads else "")
        )

    # ------------------------------------------------------------------ interop

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> "MultiHeadAttention":
        """A module with the weights of a ``torch.nn.MultiheadAttention``.

        The result is batch-first whatever ``mha.batch_first`` says. Masks keep attnlab's
        convention (True = may attend), the opposite of torch's ``attn_mask``/``key_padding_mask``.

        Args:
            mha: the torch module; ``add_bias_kv`` and ``add_zero_attn`` are not supported.
        """
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("from_torch: add_bias_kv and add_zero_attn are not supported")
        w = mha.out_proj.weight
        has_bias = mha.in_proj_bias is not None
        new = cls(
            mha.embed_dim, mha.num_heads, kdim=mha.kdim, vdim=mha.vdim, bias=has_bias,
            dropout=mha.dropout,
        ).to(device=w.device, dtype=w.dtype)
        E = mha.embed_dim
        if mha.in_proj_weight is not None:
            wq, wk, wv = mha.in_proj_weight.split(E)  # (E, E) each
        else:
            wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
        with torch.no_grad():
            for lin, weight in ((new.q_proj, wq), (new.k_proj, wk), (new.v_proj, wv), (new.out_proj, w)):
                lin.weight.copy_(weight)
            if has_bias:
                for lin, b in zip((new.q_proj, new.k_proj, new.v_proj), mha.in_proj_bias.split(E)):
                    lin.bias.copy_(b)
                new.out_proj.bias.copy_(mha.out_proj.bias)
        return new


# ----------------------------------------------------------------------------- helpers


def _select(lin: nn.Linear, index: Tensor, dim: int) -> nn.Linear:
    """A copy of ``lin`` keeping ``index`` of its outputs (dim 0) or inputs (dim 1)."""
    w = lin.weight.index_select(dim, index).detach().clone()
    out_f, in_f = w.shape
    new = nn.Linear(in_f, out_f, bias=lin.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if lin.bias is not None:
            new.bias.copy_(lin.bias if dim == 1 else lin.bias.index_select(0, index))
    new.weight.requires_grad_(lin.weight.requires_grad)
    return new


def _check_sizes(embed_dim, num_heads, num_kv_heads, head_dim, dropout) -> None:
    for name, val in (("embed_dim", embed_dim), ("num_heads", num_heads), ("num_kv_heads", num_kv_heads)):
        if not isinstance(val, int) or val < 1:
            raise ValueError(f"MultiHeadAttention: {name} must be a positive int, got {val!r}")
    if head_dim is None and embed_dim % num_heads:
        raise ValueError(
            f"MultiHeadAttention: embed_dim={embed_dim} is not divisible by num_heads={num_heads} "
            "(pass head_dim= to choose the per-head width)"
        )
    if head_dim is not None and (not isinstance(head_dim, int) or head_dim < 1):
        raise ValueError(f"MultiHeadAttention: head_dim must be a positive int, got {head_dim!r}")
    if num_heads % num_kv_heads:
        raise ValueError(
            f"MultiHeadAttention: num_heads={num_heads} is not a multiple of num_kv_heads={num_kv_heads}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"MultiHeadAttention: dropout must be in [0, 1), got {dropout}")


def _build_position(position, kwargs, head_dim: int, num_heads: int) -> PositionalEncoding | None:
    """None, an instance, or a registered name built with ``kwargs`` (sizes filled in)."""
    if position is None or isinstance(position, PositionalEncoding):
        enc = position
    elif isinstance(position, str):
        kwargs = dict(kwargs or {})
        params = inspect.signature(position_class(position).__init__).parameters
        for name, val in (("head_dim", head_dim), ("num_heads", num_heads)):
            if name in params:
                kwargs.setdefault(name, val)
        enc = create_position(position, **kwargs)
    else:
        raise ValueError(
            f"MultiHeadAttention: position must be None, a name or a PositionalEncoding, "
            f"got {type(position).__name__}"
        )
    if enc is not None and not enc.hooks & {"rotate", "bias"}:
        raise ValueError(
            f"MultiHeadAttention: position {enc.name or type(enc).__name__!r} has only the "
            f"{sorted(enc.hooks)} hook(s); add it to the token embeddings, not to attention"
        )
    return enc


def _prefix_visible(P: int, Lk: int, mask, bias, mask_mod, score_mod):
    """Masks and biases over Lk real keys, extended to P prefix columns in front that every
    query may attend, with no bias; the mods keep seeing real-key indices (kv_idx - P)."""
    if mask is not None:
        mask = mask.expand(*mask.shape[:-1], Lk)
        mask = torch.cat([mask.new_ones(*mask.shape[:-1], P), mask], dim=-1)  # (..., P + Lk)
    if bias is not None:
        bias = torch.nn.functional.pad(bias.expand(*bias.shape[:-1], Lk), (P, 0))  # (..., P + Lk)
    real_mask, real_score = mask_mod, score_mod

    def prefix_mask(b, h, q_idx, kv_idx):
        return (kv_idx < P) | real_mask(b, h, q_idx, (kv_idx - P).clamp(min=0))

    def prefix_score(score, b, h, q_idx, kv_idx):
        return torch.where(kv_idx < P, score, real_score(score, b, h, q_idx, (kv_idx - P).clamp(min=0)))

    return mask, bias, None if mask_mod is None else prefix_mask, None if score_mod is None else prefix_score


def _compose(first: M.ScoreMod, second: M.ScoreMod | None) -> M.ScoreMod:
    """A score_mod applying ``first`` then ``second``."""
    if second is None:
        return first

    def score_mod(score, b, h, q_idx, kv_idx):
        return second(first(score, b, h, q_idx, kv_idx), b, h, q_idx, kv_idx)

    return score_mod


__all__ = ["MultiHeadAttention", "AttentionOutput"]
