"""What a benchmark case runs: a naive attention, every attnlab kernel, and the structured-mask
contenders (SDPA with a dense mask or ``is_causal``, compiled FlexAttention).

A :class:`Case` is a plain picklable record; :func:`measure_case` runs one, in whatever process
it is handed to (see :mod:`attnlab.bench.measure`).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.attention import attend, masks
from attnlab.attention.kernels import AttentionRequest, get_kernel, kernel_names

from .measure import OK, Outcome, PeakMemory, time_calls

FWD, FWD_BWD = "fwd", "fwd+bwd"
NAIVE = "naive"
SDPA_IS_CAUSAL = "sdpa_is_causal"  # torch's F.scaled_dot_product_attention(is_causal=True)
FLEX_COMPILED = "flex_compiled"  # torch.compile(flex_attention) with a block mask

# Implementations that materialise the (B, H, N, N) scores.
MATERIALISES = {NAIVE, "math"}

Fn = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Case:
    """One measurement: an implementation, a mode and a shape.

    Attributes:
        impl: "naive", a registered kernel name, "sdpa_is_causal" or "flex_compiled".
        mode: "fwd" (inference, no autograd) or "fwd+bwd".
        B, H, N, D: batch, heads, sequence length (queries = keys), head dim.
        dtype: "float32" or "bfloat16".
        device: "cpu" or "cuda".
        mask: None, "sliding" (±window) or "causal".
        window: the sliding window's half width.
        warmup, repeats: untimed and timed calls.
        budget_s: time budget (warmup included); fewer timed calls (at least one) beyond it.
    """

    impl: str
    mode: str
    B: int
    H: int
    N: int
    D: int
    dtype: str = "float32"
    device: str = "cpu"
    mask: str | None = None
    window: int = 256
    warmup: int = 1
    repeats: int = 3
    budget_s: float | None = None

    @property
    def backward(self) -> bool:
        return self.mode == FWD_BWD

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def compiled(self) -> bool:
        """Whether the first call compiles (timed apart as ``compile_s``)."""
        return self.impl in (FLEX_COMPILED, "flex")


def naive_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q·kᵀ/√d)·v written out: (B, H, N, D) -> (B, H, N, D)."""
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, N, N)
    return torch.softmax(s, dim=-1) @ v  # (B, H, N, D)


def mask_mod_of(case: Case):
    """The mask_mod of ``case.mask``, or None."""
    if case.mask is None:
        return None
    if case.mask == "sliding":
        return masks.sliding_window(case.window)
    if case.mask == "causal":
        return masks.causal()
    raise ValueError(f"unknown mask {case.mask!r}; known: sliding, causal")


def impl_names() -> list[str]:
    """The implementations of the main sweep: sdpa (the reference), naive, then every kernel."""
    kernels = kernel_names()
    first = ["sdpa"] if "sdpa" in kernels else []
    return first + [NAIVE] + [k for k in kernels if k != "sdpa"]


def unsupported(case: Case) -> str | None:
    """Why ``case.impl`` cannot run ``case`` (a kernel's own answer), or None."""
    if case.impl in (NAIVE, SDPA_IS_CAUSAL, FLEX_COMPILED):
        return None
    dev, dt = torch.device(case.device), case.torch_dtype

    def probe(d: int) -> Tensor:  # right shape, dtype and device; no memory
        t = torch.empty((), dtype=dt, device=dev).expand(case.B, case.H, case.N, d)
        return t.requires_grad_(case.backward)

    mm = mask_mod_of(case)
    dense = mm is not None and case.impl == "sdpa"
    req = AttentionRequest(
        q=probe(case.D), k=probe(case.D), v=probe(case.D),
        mask=torch.ones((), dtype=torch.bool).expand(1, 1, case.N, case.N) if dense else None,
        bias=None, score_mod=None, mask_mod=None if dense else mm,
        scale=case.D**-0.5, dropout_p=0.0, return_weights=False,
    )
    with torch.set_grad_enabled(case.backward):
        return get_kernel(case.impl).unsupported(req)


def build(case: Case) -> Fn:
    """The function a case times: ``(q, k, v) -> out``. Masks are built here, outside timing."""
    dev = torch.device(case.device)
    mm = mask_mod_of(case)
    if case.impl == NAIVE:
        if mm is not None:
            raise ValueError("the naive implementation takes no mask")
        return naive_attention
    if case.impl == SDPA_IS_CAUSAL:
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if case.impl == FLEX_COMPILED:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        block_mask = create_block_mask(mm, None, None, case.N, case.N, device=dev)
        flex = torch.compile(flex_attention)
        return lambda q, k, v: flex(q, k, v, block_mask=block_mask)
    if mm is not None and case.impl == "sdpa":
        dense = masks.materialize(mm, 1, 1, case.N, case.N, dev)  # (1, 1, N, N) bool
        return lambda q, k, v: attend(q, k, v, mask=dense, kernel="sdpa").out
    name = case.impl
    return lambda q, k, v: attend(q, k, v, mask_mod=mm, kernel=name).out


def measure_case(case: Case) -> Outcome:
    """Run ``case``: median ms, and peak memory beyond q, k, v (gradients count as used)."""
    dev = torch.device(case.device)
    g = torch.Generator(device=dev).manual_seed(0)
    shape = (case.B, case.H, case.N, case.D)
    q, k, v = (torch.randn(shape, generator=g, device=dev, dtype=case.torch_dtype)
               for _ in range(3))  # (B, H, N, D) each
    fn = build(case)

    if case.backward:
        for t in (q, k, v):
            t.requires_grad_(True)
        dout = torch.randn(shape, generator=g, device=dev, dtype=case.torch_dtype)

        def step():
            q.grad = k.grad = v.grad = None
            fn(q, k, v).backward(dout)
    else:

        def step():
            with torch.no_grad():
                fn(q, k, v)

    compile_s = None
    if case.compiled:  # the first call compiles; it is timed apart
        t0 = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(case.warmup):  # one-time costs (thread pools, autograd engine) stay out
        step()
    left = None if case.budget_s is None else case.budget_s - (time.perf_counter() - t0)
    with PeakMemory(dev) as pm:
        times = time_calls(step, repeats=case.repeats, device=dev, budget_s=left)
    return Outcome(OK, ms=statistics.median(times), peak_bytes=pm.peak_bytes,
                   compile_s=compile_s, repeats=len(times))
