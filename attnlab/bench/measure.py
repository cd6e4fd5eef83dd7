"""How one benchmark case is measured: median time, peak memory, and isolation.

Time: ``warmup`` untimed calls, then the median of ``repeats`` calls timed with
``time.perf_counter`` (with ``torch.cuda.synchronize`` on CUDA); fewer (at least one) when a case
would overrun its time budget.

Peak memory is what the case needs beyond its inputs:

* CPU: each case runs in a child process of its own, so its peak RSS is its own and a crash or
  an out-of-memory cannot take the benchmark down. Peak = the child's ``ru_maxrss`` minus its RSS
  (``/proc/self/statm``) after the warmup calls; the high-water mark is reset there through
  ``/proc/self/clear_refs`` so that building the inputs and one-time setup do not count.
  The children come from multiprocessing's ``forkserver``, not plain ``fork``: once a process
  has used PyTorch's OpenMP thread pool, a child forked from it hangs in its first parallel op
  (GNU libgomp is not fork-safe). The fork server imports torch but never computes, so forking
  from it is safe and cheap. The child's address space is capped near the memory available,
  so an allocation that cannot fit fails inside the child instead of waking the OOM killer.
* CUDA: in process; peak = ``torch.cuda.max_memory_allocated`` minus the allocation after the
  warmup calls. CUDA out-of-memory errors are caught.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
import types
from dataclasses import dataclass
from typing import Callable

import torch

GiB = 1 << 30
MiB = 1 << 20

# Statuses of an Outcome. Only "ok" has a time.
OK, NA, NO_FIT, SKIPPED, OOM, TIMEOUT, CRASHED, ERROR = (
    "ok", "n/a", "would not fit", "skipped", "out of memory", "timeout", "crashed", "error",
)


@dataclass
class Outcome:
    """The result of measuring one case (or the reason it was not measured).

    Attributes:
        status: "ok", or why there is no time: "n/a", "would not fit", "skipped",
            "out of memory", "timeout", "crashed", "error".
        ms: median milliseconds per call (status "ok" only).
        peak_bytes: peak memory beyond the inputs.
        note: a one-line reason or remark.
        compile_s: seconds of the first call, for compiled implementations (not in ``ms``).
        repeats: how many timed calls the median is of.
    """

    status: str
    ms: float | None = None
    peak_bytes: int | None = None
    note: str = ""
    compile_s: float | None = None
    repeats: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK


# ----------------------------------------------------------------------------- memory


def mem_available_bytes() -> int:
    """MemAvailable from /proc/meminfo (free memory plus reclaimable cache)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    """Reset the peak RSS to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory beyond what is allocated when the ``with`` block starts.

    Usage: ``with PeakMemory(device) as pm: ...``; then ``pm.peak_bytes``.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.peak_bytes: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            _malloc_trim()  # freed heap goes back to the OS, so reusing it counts again
            reset_peak_rss()
            self.base = rss_bytes()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = peak_rss_bytes()
        self.peak_bytes = max(0, peak - self.base)


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc


# ----------------------------------------------------------------------------- time


def time_calls(
    fn: Callable[[], object], *, repeats: int, device: torch.device, budget_s: float | None = None,
) -> list[float]:
    """Milliseconds of each of up to ``repeats`` calls of ``fn()`` (at least one).

    Args:
        fn: the call to time (warm it up first).
        repeats: timed calls wanted.
        device: CUDA calls are synchronised before reading the clock.
        budget_s: stop early when the next call would end past this many seconds.
    """
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        sync()
        t1 = time.perf_counter()
        times.append((t1 - t0) * 1e3)
        if budget_s is not None and (t1 - start) + (t1 - t0) > budget_s:
            break
    return times


# ----------------------------------------------------------------------------- isolation

# Modules the fork server imports once, so children start with them loaded.
PRELOAD = ["torch", "attnlab.bench.impls"]


def run_isolated(fn: Callable, arg, timeout_s: float) -> Outcome:
    """``fn(arg) -> Outcome`` in a child process; a timeout, crash or OOM becomes an Outcome.

    Args:
        fn: a module-level function (it is pickled by reference).
        arg: its picklable argument.
        timeout_s: the child is killed after this many seconds.
    """
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(send, fn, arg), daemon=True)
    _start_without_main(p)
    send.close()
    out = None
    try:
        if recv.poll(timeout_s):
            try:
                out = recv.recv()
            except EOFError:
                pass  # the child died without an answer
        else:
            p.kill()
            p.join(10)
            return Outcome(TIMEOUT, note=f"timeout: killed after {timeout_s:.0f} s")
    finally:
        recv.close()
    p.join(10)
    if out is not None:
        return out
    code = p.exitcode
    if code is not None and code < 0:
        sig = -code
        why = " (the OOM killer?)" if sig == 9 else ""
        return Outcome(CRASHED, note=f"crashed: killed by signal {sig}{why}")
    return Outcome(CRASHED, note=f"crashed: exit code {code}")


def _start_without_main(p) -> None:
    """Start ``p`` without re-running the parent's ``__main__`` in the child.

    multiprocessing re-imports the main script in a forkserver child; ``fn`` lives in an
    importable module, and a script without a ``__main__`` guard (or code read from stdin)
    would break or recurse there.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        p.start()
    finally:
        sys.modules["__main__"] = main


def _child(send, fn, arg) -> None:
    _cap_address_space()
    try:
        out = fn(arg)
    except MemoryError as e:
        out = Outcome(OOM, note=f"out of memory: {_one_line(e)}")
    except RuntimeError as e:
        msg = _one_line(e)
        oom = "can't allocate memory" in msg or "out of memory" in msg.lower()
        out = Outcome(OOM if oom else ERROR, note=f"{'out of memory' if oom else 'error'}: {msg}")
    except Exception as e:  # noqa: BLE001 - any failure of the case is reported, not raised
        out = Outcome(ERROR, note=f"error: {type(e).__name__}: {_one_line(e)}")
    send.send(out)
    send.close()


def run_in_process(fn: Callable, arg) -> Outcome:
    """``fn(arg) -> Outcome`` in this process (CUDA); an out-of-memory or error becomes one."""
    try:
        return fn(arg)
    except torch.cuda.OutOfMemoryError as e:
        return Outcome(OOM, note=f"out of memory: {_one_line(e)}")
    except Exception as e:  # noqa: BLE001
        return Outcome(ERROR, note=f"error: {type(e).__name__}: {_one_line(e)}")
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _cap_address_space(fraction: float = 0.95) -> None:
    """Let allocations beyond the available memory fail (MemoryError) instead of swapping or
    waking the OOM killer, which could hit another process on a shared machine."""
    try:
        with open("/proc/self/statm") as f:
            vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = vm + int(mem_available_bytes() * fraction)
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (OSError, ValueError):
        pass


def _one_line(e: BaseException, limit: int = 200) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"
