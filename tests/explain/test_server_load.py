"""`attnlab serve` under load, over a real socket: 50 clients x 4 requests at a concurrency limit of 4.

The server is a child process (``python -m attnlab serve``) on 127.0.0.1 and a free port, serving a
tiny random classifier. Only 200s and the limit's 503s (each with Retry-After) may come back; no
other 5xx, no transport error. Its RSS after the burst stays near its RSS before. Then bad requests
over the same socket (huge and streamed bodies, malformed JSON, wrong types, unknown fields and
methods) get their 4xx, and a normal request still gets a 200. Latencies are printed, never compared.
"""

from __future__ import annotations

import math

import pytest

httpx = pytest.importorskip("httpx", reason="the load test needs httpx")
pytest.importorskip("uvicorn", reason="the load test needs uvicorn")

from attnlab.bench.measure import MiB  # noqa: E402
from attnlab.bench.serve import percentile, run_load, start_server, wait_idle, write_tiny_checkpoint  # noqa: E402

CLIENTS, REQUESTS, CONCURRENCY = 50, 4, 4
RSS_GROWTH_BOUND = 50 * MiB  # generous: the burst moves it by a few MiB


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("load")
    model = write_tiny_checkpoint(tmp / "tiny")
    with start_server(model, max_concurrent=CONCURRENCY, timeout_s=30, log=tmp / "server.log", threads=1) as srv:
        yield srv


def test_burst_gets_only_200s_and_503s_and_memory_returns(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for _ in range(3):  # warm: lazy imports and first-call allocations are not the burst's
            assert c.post("/api/explain", json={"text": "warm up"}).status_code == 200
    before = server.rss()
    load = run_load(server.url, CLIENTS, REQUESTS, deadline_s=240, pid=server.pid)
    assert wait_idle(server.url, 60), "explanations still in progress a minute after the burst"
    after = server.rss()
    p50, p95 = percentile(load.ok_ms, 50), percentile(load.ok_ms, 95)
    print(f"\n{CLIENTS} clients x {REQUESTS} requests, max_concurrent {CONCURRENCY}: {load.statuses} in "
          f"{load.wall_s:.1f} s; 200s p50 {p50:.0f} ms, p95 {p95:.0f} ms (in the worker: p50 "
          f"{percentile(load.server_ms, 50):.0f}, p95 {percentile(load.server_ms, 95):.0f}); 503 p50 "
          f"{percentile(load.rejected_ms, 50) or float('nan'):.0f} ms; RSS {before / MiB:.1f} -> peak "
          f"{load.peak_rss_bytes / MiB:.1f} -> {after / MiB:.1f} MiB")
    assert sum(load.statuses.values()) == CLIENTS * REQUESTS
    assert set(load.statuses) <= {"200", "503"}, load.statuses  # no other 5xx, no connection error
    assert load.statuses.get("200", 0) > 0
    assert load.missing_retry_after == 0
    assert math.isfinite(p50) and math.isfinite(p95) and len(load.server_ms) == len(load.ok_ms)
    assert after - before < RSS_GROWTH_BOUND, (before, after)


@pytest.mark.parametrize("send, status", [
    (lambda c: c.post("/api/explain", content=b"x" * 2_000_000, headers={"content-type": "application/json"}), 413),
    (lambda c: c.post("/api/explain", content=(b"x" * 10_000 for _ in range(100)),
                      headers={"content-type": "application/json"}), 413),
    (lambda c: c.post("/api/explain", content=b'{"text": "a', headers={"content-type": "application/json"}), 422),
    (lambda c: c.post("/api/explain", json={"text": 3}), 422),
    (lambda c: c.post("/api/explain", json={"text": "  "}), 422),
    (lambda c: c.post("/api/explain", json={"text": "hi", "method": ["raw"]}), 422),
    (lambda c: c.post("/api/explain", json={"text": "word " * 100}), 413),
    (lambda c: c.post("/api/explain", json={"text": "hi", "methods": ["nope"]}), 400),
    (lambda c: c.delete("/api/explain"), 405),
    (lambda c: c.get("/api/nothing"), 404),
], ids=["huge-body", "streamed-body", "malformed-json", "wrong-type", "empty-text", "unknown-field",
        "too-many-tokens", "unknown-method", "unknown-http-method", "no-such-path"])
def test_bad_requests_over_the_socket_then_it_still_serves(server, send, status):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = send(c)
        assert r.status_code == status, r.text
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
        assert "server" not in r.headers and "access-control-allow-origin" not in r.headers
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.post("/api/explain", json={"text": "a normal request"}).status_code == 200
        assert c.get("/api/health").json()["in_flight"] == 0
