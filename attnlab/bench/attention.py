"""``attnlab bench attention``: attention implementations timed against PyTorch's SDPA.

Two sections:

* **sweep**: for each dtype, batch size B and length N (H heads of dim D), every implementation
  (SDPA, a naive softmax(q·kᵀ/√d)·v, every registered kernel) forward and forward+backward:
  median ms, peak memory, and the ratio of its time to SDPA's.
* **structured masks**: at one N, the chunked kernel given a ``mask_mod`` against SDPA given the
  same mask as a dense boolean tensor (sliding window, causal; plus SDPA ``is_causal`` for
  information), forward+backward; and compiled FlexAttention against chunked, forward only.

Before a case runs, a planner asks: does the implementation support it, would it fit in memory
(an estimate, see :func:`estimate_bytes`), would it finish within ``max_seconds`` (extrapolated
from the previous N)? A case that would not is reported with the reason, not run.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field, replace
from importlib.metadata import version as dist_version
from typing import Callable

import torch

from attnlab.attention import kernel_names

from .impls import (
    FLEX_COMPILED, FWD, FWD_BWD, MATERIALISES, SDPA_IS_CAUSAL, Case, impl_names,
    measure_case, unsupported,
)
from .measure import (
    GiB, NA, NO_FIT, SKIPPED, Outcome, cpu_name, mem_available_bytes, run_in_process, run_isolated,
)

LENGTHS = tuple(2**i for i in range(7, 16))  # 128 .. 32768
DTYPE_ALIASES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16",
                 "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16"}
BF16_CPU_NOTE = ("bfloat16 skipped on CPU: it has no hardware path there (about 250x slower than "
                 "float32); it runs on CUDA")
Progress = Callable[[str], None]


class BenchConfigError(ValueError):
    """A bad benchmark setting; the message names it."""


@dataclass(frozen=True)
class BenchConfig:
    """What ``attnlab bench attention`` measures.

    Attributes:
        device: "cpu" or "cuda".
        batches: batch sizes B of the sweep.
        lengths: sequence lengths N of the sweep (queries = keys).
        heads: H. dim: D.
        dtypes: dtypes of the sweep; None: float32, plus bfloat16 on CUDA.
        impls: implementations of the sweep; None: all (see ``impls.impl_names``).
        warmup, repeats: untimed and timed calls per case (the median is reported).
        max_seconds: time budget of one case: fewer timed calls (at least one) rather than
            overrun it, and a case whose warmup and one call are estimated to overrun is skipped.
        sweep, masks: which sections run.
        mask_n, window: N and sliding-window half width of the structured-mask section.
        mem_fraction: the share of available memory a case may plan to use.
    """

    device: str = "cpu"
    batches: tuple[int, ...] = (1, 8)
    lengths: tuple[int, ...] = LENGTHS
    heads: int = 8
    dim: int = 64
    dtypes: tuple[str, ...] | None = None
    impls: tuple[str, ...] | None = None
    warmup: int = 1
    repeats: int = 5
    max_seconds: float = 60.0
    sweep: bool = True
    masks: bool = True
    mask_n: int = 4096
    window: int = 256
    mem_fraction: float = 0.8

    @classmethod
    def quick(cls, device: str = "cpu") -> BenchConfig:
        """A subset that runs in about a minute on 2 CPU cores."""
        return cls(device=device, batches=(1,), lengths=(128, 256, 512, 1024, 2048),
                   dtypes=("float32",), repeats=3, max_seconds=10.0, mask_n=2048)


@dataclass
class SweepRow:
    """One implementation at one (dtype, B, N): forward and forward+backward.

    ``*_vs_sdpa`` is this implementation's median time divided by SDPA's (None without both).
    """

    dtype: str
    B: int
    N: int
    impl: str
    fwd: Outcome
    fwd_bwd: Outcome
    fwd_vs_sdpa: float | None = None
    fwd_bwd_vs_sdpa: float | None = None


@dataclass
class MaskRow:
    """One contender of the structured-mask section.

    ``vs_chunked`` is this implementation's time divided by chunked's in the same mode: above 1,
    chunked is that many times faster. For chunked itself it is 1.
    """

    mask: str
    impl: str
    mode: str
    outcome: Outcome
    vs_chunked: float | None = None


@dataclass
class BenchResult:
    """Everything a run measured, plus the setup and notes printed above the tables."""

    setup: dict
    notes: list[str] = field(default_factory=list)
    sweep: list[SweepRow] = field(default_factory=list)
    masks: list[MaskRow] = field(default_factory=list)


# ----------------------------------------------------------------------------- config


def resolve(config: BenchConfig) -> tuple[BenchConfig, list[str]]:
    """Check ``config`` and fill its defaults; returns it with notes to print.

    Raises:
        BenchConfigError: naming the bad setting.
    """
    notes: list[str] = []
    if config.device not in ("cpu", "cuda"):
        raise BenchConfigError(f"--device: {config.device!r} is not cpu or cuda")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise BenchConfigError("--device: cuda is not available here (use --device cpu)")
    for name, values in (("--batch", config.batches), ("--lengths", config.lengths)):
        if not values or any(x < 1 for x in values):
            raise BenchConfigError(f"{name}: need positive integers, got {list(values)}")
    for name, x, low in (("--heads", config.heads, 1), ("--dim", config.dim, 1),
                         ("--repeats", config.repeats, 1), ("--warmup", config.warmup, 0),
                         ("--mask-n", config.mask_n, 1), ("--window", config.window, 0)):
        if x < low:
            raise BenchConfigError(f"{name}: must be at least {low}, got {x}")
    if not config.max_seconds > 0:
        raise BenchConfigError(f"--max-seconds: must be positive, got {config.max_seconds}")

    cuda = config.device == "cuda"
    if config.dtypes is None:
        dtypes = ("float32", "bfloat16") if cuda else ("float32",)
    else:
        bad = [d for d in config.dtypes if d not in DTYPE_ALIASES]
        if bad or not config.dtypes:
            raise BenchConfigError(f"--dtype: unknown {bad}; known: fp32, bf16, fp16")
        dtypes = tuple(dict.fromkeys(DTYPE_ALIASES[d] for d in config.dtypes))
    if not cuda:
        notes.append(BF16_CPU_NOTE if "bfloat16" not in dtypes else
                     "bfloat16 on CPU has no hardware path: expect it to be ~250x slower")

    known = impl_names()
    impls = tuple(known) if config.impls is None else tuple(dict.fromkeys(config.impls))
    bad = [i for i in impls if i not in known]
    if bad:
        raise BenchConfigError(f"--impls: unknown {bad}; known: {', '.join(known)}")
    if "sdpa" not in impls:
        impls = ("sdpa",) + impls
        notes.append("sdpa added to the sweep: it is the reference of the ratios")
    if config.masks and "chunked" not in kernel_names():
        notes.append("structured masks skipped: no 'chunked' kernel is registered")
        config = replace(config, masks=False)
    return replace(config, dtypes=dtypes, impls=impls), notes


def setup_info(config: BenchConfig) -> dict:
    """Versions, device, threads and sizes: printed at the top and saved in the JSON."""
    if config.device == "cuda":
        name = torch.cuda.get_device_name()
        isolation = "in process (torch.cuda.max_memory_allocated)"
    else:
        name = cpu_name()
        isolation = "one child process per case (forkserver; peak RSS)"
    return {
        "attnlab": dist_version("attnlab"), "torch": torch.__version__,
        "python": platform.python_version(), "device": config.device, "device_name": name,
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "mem_available_gib": round(_available_bytes(config.device) / GiB, 1),
        "dtypes": list(config.dtypes or ()), "batches": list(config.batches),
        "heads": config.heads, "dim": config.dim, "lengths": list(config.lengths),
        "impls": list(config.impls or ()), "warmup": config.warmup, "repeats": config.repeats,
        "max_seconds": config.max_seconds, "mask_n": config.mask_n, "window": config.window,
        "isolation": isolation, "forward": "inference (torch.no_grad)",
    }


# ----------------------------------------------------------------------------- planning


def estimate_bytes(case: Case) -> int:
    """Bytes ``case`` needs: inputs and gradients, plus the (B, H, N, N) score matrices of an
    implementation that materialises them (about 3 live in the forward: scores, exp, weights;
    about 6 with the backward: those saved plus their gradients)."""
    e = torch.empty((), dtype=case.torch_dtype).element_size()
    vec = case.B * case.H * case.N * case.D * e  # one (B, H, N, D) tensor
    need = vec * (8 if case.backward else 4)  # q, k, v, out (+ dout, dq, dk, dv)
    if case.impl in MATERIALISES:
        need += case.B * case.H * case.N * case.N * e * (6 if case.backward else 3)
    if case.mask is not None and case.impl == "sdpa":
        need += case.N * case.N  # the dense bool mask
    return need


def _available_bytes(device: str) -> int:
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    return mem_available_bytes()


class Planner:
    """Says whether a case should run, and learns from each measured one.

    A case is not run when its implementation does not support it, when its memory need
    (the larger of :func:`estimate_bytes` and the previous N's measured peak scaled by N²)
    exceeds ``mem_fraction`` of the available memory, or when the warmup and one timed call
    (the previous N's time per call scaled by N²) would exceed ``max_seconds``. A case that runs
    gets ``max_seconds`` as its budget: it times fewer calls (at least one) rather than overrun.
    """

    def __init__(self, config: BenchConfig):
        self.config = config
        # (impl, mode, dtype, B, mask) -> (N, outcome) of the last measured N
        self.last: dict[tuple, tuple[int, Outcome]] = {}

    def check(self, case: Case) -> Outcome | None:
        """An Outcome saying why ``case`` should not run, or None to run it."""
        why = unsupported(case)
        if why is not None:
            return Outcome(NA, note=f"n/a: {why}")
        prev = self.last.get(self._key(case))
        grow = (case.N / prev[0]) ** 2 if prev else None
        need = estimate_bytes(case)
        if prev and prev[1].peak_bytes:
            need = max(need, int(prev[1].peak_bytes * grow))
        avail = _available_bytes(case.device)
        if need > avail * self.config.mem_fraction:
            return Outcome(NO_FIT, note=f"would not fit (needs {need / GiB:.1f} GiB, "
                                        f"{avail / GiB:.1f} GiB available)")
        if prev and prev[1].ms is not None:
            call_s = prev[1].ms * grow / 1e3
            if call_s * (case.warmup + 1) > self.config.max_seconds:
                return Outcome(SKIPPED, note=f"skipped: one call estimated at {call_s:.0f} s; "
                                             f"warmup and one timed call exceed --max-seconds "
                                             f"{self.config.max_seconds:g}")
        return None

    def record(self, case: Case, outcome: Outcome) -> None:
        if outcome.ok:
            self.last[self._key(case)] = (case.N, outcome)

    def timeout_s(self, case: Case) -> float:
        return 2 * self.config.max_seconds + 30 + (180 if case.compiled else 0)

    @staticmethod
    def _key(case: Case) -> tuple:
        return case.impl, case.mode, case.dtype, case.B, case.mask


def run_case(case: Case, planner: Planner, progress: Progress | None = None) -> Outcome:
    """Plan, then measure ``case`` (in a child process on CPU); never raises for the case."""
    out = planner.check(case)
    if out is None:
        if case.device == "cuda":
            out = run_in_process(measure_case, case)
        else:
            out = run_isolated(measure_case, case, planner.timeout_s(case))
        planner.record(case, out)
    if progress:
        where = f"{case.dtype} B={case.B} N={case.N}" + (f" {case.mask}" if case.mask else "")
        progress(f"{where} {case.impl} {case.mode}: {_brief(out, case.repeats)}")
    return out


def _brief(out: Outcome, case_repeats: int) -> str:
    if not out.ok:
        return out.note or out.status
    s = f"{out.ms:.2f} ms"
    if out.repeats is not None and out.repeats < case_repeats:
        s += f" (median of {out.repeats}: time budget)"
    if out.compile_s is not None:
        s += f" (compile {out.compile_s:.1f} s)"
    return s


def _ratio(a: Outcome, b: Outcome) -> float | None:
    """a's time / b's time, from two measured outcomes."""
    if a.ok and b.ok and a.ms is not None and b.ms and b.ms > 0:
        return a.ms / b.ms
    return None


# ----------------------------------------------------------------------------- sections


def run_sweep(
    config: BenchConfig, planner: Planner, progress: Progress | None = None
) -> list[SweepRow]:
    """Every implementation at every (dtype, B, N), forward and forward+backward."""
    rows: list[SweepRow] = []
    for dtype in config.dtypes or ("float32",):
        for B in config.batches:
            for N in sorted(config.lengths):
                here = []
                for impl in config.impls or impl_names():
                    case = Case(impl, FWD, B, config.heads, N, config.dim, dtype, config.device,
                                warmup=config.warmup, repeats=config.repeats,
                                budget_s=config.max_seconds)
                    fwd = run_case(case, planner, progress)
                    fwd_bwd = run_case(replace(case, mode=FWD_BWD), planner, progress)
                    here.append(SweepRow(dtype, B, N, impl, fwd, fwd_bwd))
                ref = next((r for r in here if r.impl == "sdpa"), None)
                for r in here:
                    if ref is not None:
                        r.fwd_vs_sdpa = _ratio(r.fwd, ref.fwd)
                        r.fwd_bwd_vs_sdpa = _ratio(r.fwd_bwd, ref.fwd_bwd)
                rows.extend(here)
    return rows


def run_masks(
    config: BenchConfig, planner: Planner, progress: Progress | None = None
) -> list[MaskRow]:
    """Chunked with a mask_mod against SDPA with the dense mask (fwd+bwd), and compiled
    FlexAttention against chunked (fwd), at N = ``mask_n``, B = 1, float32."""
    rows: list[MaskRow] = []
    for mask, label in (("sliding", f"sliding ±{config.window}"), ("causal", "causal")):
        base = Case("chunked", FWD_BWD, 1, config.heads, config.mask_n, config.dim, "float32",
                    config.device, mask=mask, window=config.window, warmup=config.warmup,
                    repeats=config.repeats, budget_s=config.max_seconds)
        contenders = [(FWD_BWD, "chunked"), (FWD_BWD, "sdpa")]
        if mask == "causal":
            contenders.append((FWD_BWD, SDPA_IS_CAUSAL))
        contenders += [(FWD, "chunked"), (FWD, FLEX_COMPILED)]
        chunked: dict[str, Outcome] = {}
        for mode, impl in contenders:
            out = run_case(replace(base, impl=impl, mode=mode), planner, progress)
            if impl == "chunked":
                chunked[mode] = out
            rows.append(MaskRow(label, impl, mode, out, _ratio(out, chunked[mode])))
    return rows


def run_attention_bench(config: BenchConfig, progress: Progress | None = None) -> BenchResult:
    """Run the sections ``config`` asks for.

    Args:
        config: what to measure (checked by :func:`resolve` first).
        progress: called with one line per case as it finishes.
    """
    config, notes = resolve(config)
    result = BenchResult(setup=setup_info(config), notes=notes)
    planner = Planner(config)
    if config.sweep:
        result.sweep = run_sweep(config, planner, progress)
    if config.masks:
        result.masks = run_masks(config, planner, progress)
    return result
