"""Load on ``attnlab serve``: many clients at once against a concurrency limit.

The server is a child process, ``python -m attnlab serve MODEL --host 127.0.0.1`` on a free port
(never another address), serving by default a tiny random ``classifier-tiny`` with a
character-level WordPiece vocabulary written beside it, so the server is measured, not a model.
After ``warmup`` requests, ``clients`` clients (one httpx connection each) send ``requests``
requests each, in turn, all at once, under one deadline, never retrying a 503. Reported: each
status's count (transport errors by class name), the p50/p95/max latency of the 200s and the
part of it inside the server's worker (its ``Server-Timing`` header: queued + explaining; the
rest is HTTP, event loops and the clients, which share the machine), the p50 of the 503s, and
the server's RSS (``/proc/<pid>/statm``) after the warmup, at its peak in the burst (sampled
every 20 ms) and once nothing is in flight. Then one normal request: does it still answer?
"""

from __future__ import annotations

import asyncio
import math
import os
import platform
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Callable, Iterator

from rich import box
from rich.table import Table
from rich.text import Text

from .measure import MiB, cpu_name
from .report import _env_rows, _grid, _ms

Progress = Callable[[str], None]
HOST = "127.0.0.1"  # the only address this benchmark binds
TEXTS = ("The quick brown fox jumps over the lazy dog.", "A man is eating food.",
         "Attention is all you need.", "It was the best of times, it was the worst of times.")


class ServeBenchError(ValueError):
    """A bad benchmark setting, or a server that did not start; the message says which."""


@dataclass(frozen=True)
class ServeBenchConfig:
    """What ``attnlab bench serve`` measures.

    Attributes:
        model: the checkpoint or run directory served; None: a tiny random classifier.
        clients: clients sending at once. requests: requests each client sends, one after another.
        concurrency: the server's ``--max-concurrent``.
        timeout_s: the server's ``--timeout`` (seconds per explanation).
        methods: relevance methods asked for in every request.
        warmup: requests sent one at a time before the burst (and before the first memory reading).
        deadline_s: the whole burst; requests not answered by then count as "deadline".
        threads: the server's torch threads (``OMP_NUM_THREADS``); None: inherited.
        startup_s: how long the server may take to answer its first health check.
    """

    model: str | None = None
    clients: int = 50
    requests: int = 4
    concurrency: int = 4
    timeout_s: float = 30.0
    methods: tuple[str, ...] = ("rollout", "raw")
    warmup: int = 3
    deadline_s: float = 300.0
    threads: int | None = None
    startup_s: float = 120.0

    @classmethod
    def quick(cls) -> "ServeBenchConfig":
        return cls(clients=8, requests=2, concurrency=2, warmup=1, deadline_s=60.0)


@dataclass
class LoadResult:
    """What one burst got back.

    Attributes:
        statuses: per HTTP status (as text) or transport error (its class name), how many.
        ok_ms: latencies of the 200s. rejected_ms: latencies of the 503s.
        server_ms: of the 200s, the time inside the server: waiting for its worker plus explaining
            (``Server-Timing``); the rest of ``ok_ms`` is HTTP, the event loops and the client.
        missing_retry_after: 503s without a ``Retry-After`` header.
        wall_s: seconds from the first request to the last answer.
    """

    statuses: dict[str, int]
    ok_ms: list[float]
    rejected_ms: list[float]
    server_ms: list[float]
    missing_retry_after: int
    wall_s: float
    peak_rss_bytes: int | None = None


@dataclass
class ServeBenchResult:
    """Everything a run measured, plus the setup and notes printed above the tables."""

    setup: dict
    notes: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    ok_p50_ms: float | None = None
    ok_p95_ms: float | None = None
    ok_max_ms: float | None = None
    server_p50_ms: float | None = None
    server_p95_ms: float | None = None
    rejected_p50_ms: float | None = None
    answers_per_s: float = 0.0
    missing_retry_after: int = 0
    rss_start_bytes: int = 0
    rss_peak_bytes: int = 0
    rss_end_bytes: int = 0
    after_status: str = ""


# ----------------------------------------------------------------------------- the server


def write_tiny_checkpoint(directory: str | Path, seed: int = 0) -> Path:
    """A random ``classifier-tiny`` and a character-level WordPiece ``vocab.txt`` in ``directory``:
    what :func:`attnlab.explain.pipeline.load_subject` loads, in a few milliseconds per request."""
    import torch

    from attnlab.models import create

    chars = string.ascii_lowercase + string.digits
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars), *".,!?'-:;\"()"]
    torch.manual_seed(seed)
    out = create("classifier-tiny", vocab_size=len(vocab)).save_pretrained(directory)
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return out


def free_port() -> int:
    """A TCP port free on the loopback address now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_of(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes (``/proc/<pid>/statm``)."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class ServerProcess:
    """A running ``attnlab serve`` child: its URL, process and log file."""

    url: str
    proc: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss(self) -> int:
        return rss_of(self.pid)

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def start_server(model_dir: str | Path, *, max_concurrent: int, timeout_s: float, log: Path,
                 threads: int | None = None, startup_s: float = 120.0, extra: tuple[str, ...] = ()
                 ) -> Iterator[ServerProcess]:
    """Run ``attnlab serve model_dir`` on 127.0.0.1 and a free port until the block ends.

    Args:
        model_dir: what to serve.
        max_concurrent, timeout_s: the server's limits.
        log: the file its stdout and stderr go to.
        threads: its ``OMP_NUM_THREADS`` (None: inherited).
        startup_s: how long it may take to answer ``/api/health``.
        extra: more ``attnlab serve`` options.

    Raises:
        ServeBenchError: it exited or did not answer in time (the message ends with its log).
    """
    import httpx

    port = free_port()
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    cmd = [sys.executable, "-m", "attnlab", "serve", str(model_dir), "--host", HOST, "--port", str(port),
           "--max-concurrent", str(max_concurrent), "--timeout", str(timeout_s), "--log-level", "warning", *extra]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    server = ServerProcess(f"http://{HOST}:{port}", proc, Path(log))
    try:
        until = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise ServeBenchError(f"attnlab serve exited with code {proc.returncode}:\n{server.log_tail()}")
            try:
                if httpx.get(f"{server.url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > until:
                raise ServeBenchError(f"attnlab serve did not answer within {startup_s:g} s:\n{server.log_tail()}")
            time.sleep(0.1)
        yield server
    finally:
        proc.terminate()  # uvicorn shuts down gracefully on SIGTERM
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_idle(url: str, timeout_s: float) -> bool:
    """Poll ``/api/health`` until no explanation is in progress; False if still busy after ``timeout_s``."""
    import httpx

    until = time.monotonic() + timeout_s
    while time.monotonic() < until:
        if httpx.get(f"{url}/api/health", timeout=5).json()["in_flight"] == 0:
            return True
        time.sleep(0.05)
    return False


# ----------------------------------------------------------------------------- the load


def run_load(url: str, clients: int, requests: int, methods: tuple[str, ...] = ("rollout", "raw"),
             deadline_s: float = 300.0, pid: int | None = None) -> LoadResult:
    """``clients`` httpx clients at once, ``requests`` explanation requests each, in turn.

    Args:
        url: the server's base URL.
        clients, requests: the burst's shape.
        methods: the relevance methods of every request.
        deadline_s: the whole burst; what is unanswered then counts as "deadline".
        pid: the server's process id, to sample its RSS every 20 ms (None: no sampling).
    """
    return asyncio.run(_burst(url, clients, requests, methods, deadline_s, pid))


async def _burst(url: str, clients: int, requests: int, methods: tuple[str, ...], deadline_s: float,
                 pid: int | None) -> LoadResult:
    import httpx

    statuses: Counter = Counter()
    ok_ms: list[float] = []
    rejected_ms: list[float] = []
    server_ms: list[float] = []
    missing = 0
    peak = [rss_of(pid)] if pid else [None]

    async def client(c: int) -> None:
        nonlocal missing
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=url, timeout=deadline_s, limits=limits) as http:
            for r in range(requests):
                body = {"text": f"{TEXTS[(c + r) % len(TEXTS)]} {c}-{r}", "methods": list(methods)}
                t0 = time.perf_counter()
                try:
                    resp = await http.post("/api/explain", json=body)
                except httpx.HTTPError as e:
                    statuses[type(e).__name__] += 1
                    continue
                ms = (time.perf_counter() - t0) * 1e3
                statuses[str(resp.status_code)] += 1
                if resp.status_code == 200:
                    ok_ms.append(ms)
                    server_ms.append(server_time_ms(resp.headers.get("server-timing", "")))
                elif resp.status_code == 503:
                    rejected_ms.append(ms)
                    missing += "retry-after" not in resp.headers

    async def sample() -> None:
        while True:
            peak[0] = max(peak[0], rss_of(pid))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample()) if pid else None
    start = time.perf_counter()
    tasks = [asyncio.create_task(client(c)) for c in range(clients)]
    done, pending = await asyncio.wait(tasks, timeout=deadline_s)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    wall = time.perf_counter() - start
    if sampler is not None:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    unanswered = clients * requests - sum(statuses.values())
    if unanswered:
        statuses["deadline"] += unanswered
    for t in done:
        if t.exception() is not None:  # a bug of the client code itself, not a server answer
            raise t.exception()
    return LoadResult(dict(sorted(statuses.items())), ok_ms, rejected_ms, server_ms, missing, wall, peak[0])


def server_time_ms(header: str) -> float:
    """The sum of the ``dur`` values of a ``Server-Timing`` header (0 when there are none)."""
    return sum(float(part.split("dur=", 1)[1]) for part in header.split(",") if "dur=" in part)


def percentile(xs: list[float], q: float) -> float | None:
    """The ``q``-th percentile (linear interpolation, as numpy's default); None for no values."""
    if not xs:
        return None
    s = sorted(xs)
    pos = (len(s) - 1) * q / 100
    lo = math.floor(pos)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (pos - lo)


# ----------------------------------------------------------------------------- the benchmark


def _check(config: ServeBenchConfig) -> None:
    for name in ("clients", "requests", "concurrency"):
        if getattr(config, name) < 1:
            raise ServeBenchError(f"--{name}: must be at least 1, got {getattr(config, name)}")
    if config.warmup < 0:
        raise ServeBenchError(f"--warmup: must be 0 or more, got {config.warmup}")
    if not config.timeout_s > 0 or not config.deadline_s > 0:
        raise ServeBenchError("--timeout and --deadline: must be positive")
    if config.model is not None and not Path(config.model).is_dir():
        raise ServeBenchError(f"--model: {config.model}: no such directory")
    try:
        import httpx  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ServeBenchError(f"{e.name} is not installed (pip install fastapi uvicorn httpx)") from None


def setup_info(config: ServeBenchConfig, model: str) -> dict:
    """Versions, CPU, the server's limits and the burst's shape: printed first and saved in the JSON."""
    import torch

    def version(dist: str) -> str | None:
        try:
            return dist_version(dist)
        except Exception:  # noqa: BLE001 - not installed
            return None

    return {
        "attnlab": version("attnlab"), "torch": torch.__version__, "transformers": version("transformers"),
        "fastapi": version("fastapi"), "uvicorn": version("uvicorn"), "python": platform.python_version(),
        "device": "cpu", "device_name": cpu_name(), "cpu_count": os.cpu_count(),
        "threads": config.threads or os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads(),
        "load_avg": os.getloadavg()[0], "model": model, "clients": config.clients, "requests": config.requests,
        "concurrency": config.concurrency, "timeout_s": config.timeout_s, "methods": list(config.methods),
        "warmup": config.warmup, "deadline_s": config.deadline_s,
    }


def run_serve_bench(config: ServeBenchConfig, progress: Progress | None = print) -> ServeBenchResult:
    """Start the server, warm it up, send the burst, measure memory, check it still answers.

    Args:
        config: what to measure.
        progress: called with a line before each phase (e.g. ``Console(stderr=True).print``).

    Raises:
        ServeBenchError: a bad setting, or a server that did not start.
    """
    import httpx

    _check(config)
    say = progress or (lambda _msg: None)
    with tempfile.TemporaryDirectory(prefix="attnlab-bench-serve-") as tmp:
        model = config.model or str(write_tiny_checkpoint(Path(tmp) / "classifier-tiny"))
        result = ServeBenchResult(setup=setup_info(config, config.model or "classifier-tiny (random init)"))
        say(f"starting attnlab serve on {HOST}")
        with start_server(model, max_concurrent=config.concurrency, timeout_s=config.timeout_s,
                          log=Path(tmp) / "server.log", threads=config.threads, startup_s=config.startup_s) as srv:
            body = {"text": TEXTS[0], "methods": list(config.methods)}
            for _ in range(config.warmup):
                r = httpx.post(f"{srv.url}/api/explain", json=body, timeout=config.timeout_s + 10)
                if r.status_code != 200:
                    raise ServeBenchError(f"warmup request: {r.status_code} {r.text[:300]}")
            result.rss_start_bytes = srv.rss()
            say(f"burst: {config.clients} clients x {config.requests} requests, max_concurrent {config.concurrency}")
            load = run_load(srv.url, config.clients, config.requests, config.methods, config.deadline_s, srv.pid)
            if not wait_idle(srv.url, config.timeout_s + 10):
                result.notes.append("explanations were still in progress after the burst")
            time.sleep(0.5)
            result.rss_end_bytes = srv.rss()
            try:
                result.after_status = str(httpx.post(f"{srv.url}/api/explain", json=body,
                                                     timeout=config.timeout_s + 10).status_code)
            except httpx.HTTPError as e:
                result.after_status = type(e).__name__
    result.statuses, result.sent = load.statuses, config.clients * config.requests
    result.ok_p50_ms, result.ok_p95_ms = percentile(load.ok_ms, 50), percentile(load.ok_ms, 95)
    result.ok_max_ms = max(load.ok_ms) if load.ok_ms else None
    result.server_p50_ms, result.server_p95_ms = percentile(load.server_ms, 50), percentile(load.server_ms, 95)
    result.rejected_p50_ms = percentile(load.rejected_ms, 50)
    result.answers_per_s = len(load.ok_ms) / load.wall_s if load.wall_s > 0 else 0.0
    result.missing_retry_after = load.missing_retry_after
    result.rss_peak_bytes = max(load.peak_rss_bytes or 0, result.rss_end_bytes)
    unexpected = {k: v for k, v in load.statuses.items() if k not in ("200", "503")}
    if unexpected:
        result.notes.append(f"answers other than 200 and 503: {unexpected}")
    return result


# ----------------------------------------------------------------------------- report


def serve_report(result: ServeBenchResult) -> list:
    """Everything ``attnlab bench serve`` prints: setup, notes, statuses, latency, memory."""
    s = result.setup
    out: list = [_grid([
        *_env_rows(s),
        ("fastapi / uvicorn", f"{s['fastapi']} / {s['uvicorn']}; load average {s['load_avg']:.2f} at the start"),
        ("model", s["model"]),
        ("server", f"127.0.0.1, max_concurrent {s['concurrency']}, timeout {s['timeout_s']:g} s; "
                   f"methods {', '.join(s['methods'])}"),
        ("burst", f"{s['clients']} clients x {s['requests']} requests each, all at once, no retries, "
                  f"after {s['warmup']} warmup requests; deadline {s['deadline_s']:g} s"),
    ])]
    out += [Text(n, style="yellow") for n in result.notes]
    t = Table(title=f"answers to {result.sent} requests", title_justify="left", box=box.SIMPLE_HEAD)
    t.add_column("status")
    t.add_column("count", justify="right")
    for status, n in result.statuses.items():
        t.add_row(status, str(n))
    out.append(t)
    lat = Table(title="latency, ms (200s: the whole request, and the part inside the server's worker "
                      "(queue + explain); 503s: the refusal)", title_justify="left", box=box.SIMPLE_HEAD)
    for name in ("200 p50", "200 p95", "200 max", "worker p50", "worker p95", "503 p50", "200s per s"):
        lat.add_column(name, justify="right")
    cell = lambda x: "" if x is None else _ms(x)  # noqa: E731
    lat.add_row(cell(result.ok_p50_ms), cell(result.ok_p95_ms), cell(result.ok_max_ms), cell(result.server_p50_ms),
                cell(result.server_p95_ms), cell(result.rejected_p50_ms), f"{result.answers_per_s:.1f}")
    out.append(lat)
    mem = Table(title="server RSS, MiB", title_justify="left", box=box.SIMPLE_HEAD)
    for name in ("after warmup", "peak in burst", "after burst", "after - warmup"):
        mem.add_column(name, justify="right")
    mem.add_row(f"{result.rss_start_bytes / MiB:.1f}", f"{result.rss_peak_bytes / MiB:.1f}",
                f"{result.rss_end_bytes / MiB:.1f}", f"{(result.rss_end_bytes - result.rss_start_bytes) / MiB:+.1f}")
    out.append(mem)
    ok = result.after_status == "200" and result.missing_retry_after == 0
    out.append(Text(f"after the burst a normal request got {result.after_status}; 503s without Retry-After: "
                    f"{result.missing_retry_after}", style="bold" if ok else "bold red"))
    return out


__all__ = ["ServeBenchConfig", "ServeBenchError", "ServeBenchResult", "LoadResult", "write_tiny_checkpoint",
           "start_server", "run_load", "wait_idle", "rss_of", "free_port", "percentile", "server_time_ms",
           "run_serve_bench", "serve_report"]
