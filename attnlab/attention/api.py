"""``attend``: the one entry point to attention kernels.

    res = attend(q, k, v, mask=..., bias=..., score_mod=..., mask_mod=..., kernel="auto",
                 return_weights=True)
    res.out      # (B, H, Lq, Dv)
    res.weights  # (B, H, Lq, Lk) or None
    res.kernel   # the kernel that ran

Inputs are validated here once, so every kernel sees the same clean request and every bad
input gets the same clear error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .kernels import KERNELS, AttentionRequest, get_kernel, kernel_names
from .masks import MaskMod, ScoreMod


class AttentionInputError(ValueError):
    """Bad input to :func:`attend`: the message names the argument and the shapes at fault."""


@dataclass
class AttentionResult:
    """What :func:`attend` returns.

    Attributes:
        out: (B, H, Lq, Dv) attention output.
        weights: (B, H, Lq, Lk) attention weights (before dropout), or None if not requested.
        kernel: name of the kernel that ran.
    """

    out: Tensor
    weights: Tensor | None
    kernel: str


# Preference order of ``kernel="auto"``: the first kernel that supports the request runs.
# sdpa is PyTorch's fused kernel (plain requests, mask/bias tensors, plain causal); chunked runs
# score_mods and mask_mods, skips blocks a mask rules out and returns exact weights without
# materialising anything else; math is the reference that supports everything.
AUTO_ORDER = ("sdpa", "chunked", "math")


def attend(
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
    kernel: str = "auto",
    return_weights: bool = False,
) -> AttentionResult:
    """Attention of queries over keys and values.

    ``out = softmax(score_mod(q·kᵀ·scale + bias) masked) · v``, computed by the chosen kernel.
    A query row with nothing to attend to gives zeros in ``out`` and ``weights``.

    Args:
        q: (B, H, Lq, D) queries.
        k: (B, Hkv, Lk, D) keys; H must be a multiple of Hkv (grouped-query attention).
        v: (B, Hkv, Lk, Dv) values.
        mask: boolean, True = may attend, broadcastable to (B, H, Lq, Lk).
        bias: additive float bias, broadcastable to (B, H, Lq, Lk).
        score_mod: ``score_mod(score, b, h, q_idx, kv_idx) -> score`` (FlexAttention's
            signature), written with tensor ops; applied after scale and bias.
        mask_mod: ``mask_mod(b, h, q_idx, kv_idx) -> bool`` (FlexAttention's signature).
        scale: multiplies q·kᵀ; defaults to ``1 / sqrt(D)``.
        dropout_p: dropout probability on the attention weights (pass 0 in eval mode).
        kernel: "auto" or a registered kernel name ("math", "sdpa", "chunked", "flex").
        return_weights: also return the (B, H, Lq, Lk) weights.
    """
    req = _validate(q, k, v, mask, bias, score_mod, mask_mod, scale, dropout_p, return_weights)
    if kernel == "auto":
        name = pick_kernel(req)
    else:
        name = kernel
        why = _get(kernel).unsupported(req)
        if why is not None:
            raise AttentionInputError(f"attend: kernel={kernel!r} cannot serve this request: {why}")
    out, weights = _get(name)(req)
    return AttentionResult(out=out, weights=weights, kernel=name)


def pick_kernel(req: AttentionRequest) -> str:
    """The kernel ``kernel="auto"`` runs for ``req``: the first of :data:`AUTO_ORDER` that can."""
    for name in AUTO_ORDER:
        if get_kernel(name).unsupported(req) is None:
            return name
    return "math"


def _get(name: str):
    if name not in KERNELS:
        raise AttentionInputError(f"attend: {KERNELS.unknown(name, also=('auto',))}")
    return KERNELS.get(name)


def _shape(t) -> str:
    return "x".join(str(s) for s in t.shape) if isinstance(t, Tensor) else type(t).__name__


def _as_4d(name: str, t: Tensor, target: tuple[int, int, int, int]) -> Tensor:
    """Left-pad ``t`` to 4 dims and check that it broadcasts to ``target`` (B, H, Lq, Lk)."""
    if t.dim() > 4:
        raise AttentionInputError(
            f"attend: {name} has {t.dim()} dims (shape {_shape(t)}); it must broadcast to "
            f"(B, H, Lq, Lk) = {target}"
        )
    t4 = t.reshape((1,) * (4 - t.dim()) + tuple(t.shape))
    for have, want in zip(t4.shape, target):
        if have not in (1, want):
            raise AttentionInputError(
                f"attend: {name} of shape {tuple(t.shape)} does not broadcast to "
                f"(B, H, Lq, Lk) = {target}"
            )
    return t4


def _validate(q, k, v, mask, bias, score_mod, mask_mod, scale, dropout_p, return_weights):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise AttentionInputError(f"attend: {name} must be a tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise AttentionInputError(
                f"attend: {name} must be 4-D (B, heads, length, dim), got shape {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            raise AttentionInputError(f"attend: {name} must be floating point, got {t.dtype}")
    B, H, Lq, D = q.shape
    if k.shape[0] != B or v.shape[0] != B:
        raise AttentionInputError(
            f"attend: batch sizes differ: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if k.shape[1] != v.shape[1]:
        raise AttentionInputError(
            f"attend: k and v must have the same number of heads: k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    Hkv = k.shape[1]
    if Hkv == 0 or H % Hkv != 0:
        raise AttentionInputError(
            f"attend: q has {H} heads, which is not a multiple of the {Hkv} KV heads of k/v "
            f"(q {tuple(q.shape)}, k {tuple(k.shape)})"
        )
    if k.shape[3] != D:
        raise AttentionInputError(
            f"attend: q and k head dims differ: q {tuple(q.shape)}, k {tuple(k.shape)}"
        )
    if v.shape[2] != k.shape[2]:
        raise AttentionInputError(
            f"attend: k and v lengths differ: k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise AttentionInputError(f"attend: dtypes differ: q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if not (q.device == k.device == v.device):
        raise AttentionInputError(f"attend: devices differ: q {q.device}, k {k.device}, v {v.device}")
    target = (B, H, Lq, k.shape[2])
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            what = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise AttentionInputError(
                f"attend: mask must be a bool tensor (True = may attend), got {what}; "
                "pass float scores as bias="
            )
        mask = _as_4d("mask", mask.to(q.device), target)
    if bias is not None:
        if not isinstance(bias, Tensor) or not bias.is_floating_point():
            what = bias.dtype if isinstance(bias, Tensor) else type(bias).__name__
            raise AttentionInputError(f"attend: bias must be a floating tensor, got {what}")
        bias = _as_4d("bias", bias.to(device=q.device, dtype=q.dtype), target)
    for name, fn in (("score_mod", score_mod), ("mask_mod", mask_mod)):
        if fn is not None and not callable(fn):
            raise AttentionInputError(f"attend: {name} must be callable, got {type(fn).__name__}")
    if scale is None:
        scale = D**-0.5
    elif not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise AttentionInputError(f"attend: scale must be a number, got {type(scale).__name__}")
    if not 0.0 <= dropout_p < 1.0:
        raise AttentionInputError(f"attend: dropout_p must be in [0, 1), got {dropout_p}")
    return AttentionRequest(
        q=q, k=k, v=v, mask=mask, bias=bias, score_mod=score_mod, mask_mod=mask_mod,
        scale=float(scale), dropout_p=float(dropout_p), return_weights=bool(return_weights),
    )


__all__ = ["attend", "AttentionResult", "AttentionInputError", "pick_kernel", "kernel_names"]
