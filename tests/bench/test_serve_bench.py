"""`attnlab bench serve` on a tiny burst: the figures it prints and saves, and its setting errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from attnlab.bench.serve import ServeBenchConfig, ServeBenchError, percentile, run_serve_bench, server_time_ms
from attnlab.cli import app

pytest.importorskip("httpx")
pytest.importorskip("uvicorn")


def test_bench_serve_prints_statuses_latency_and_memory(tmp_path):
    out = tmp_path / "serve.json"
    res = CliRunner().invoke(app, ["bench", "serve", "--clients", "4", "--requests", "2", "--concurrency", "1",
                                   "--warmup", "1", "--threads", "1", "--json", str(out)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())  # rich wraps narrow tables' titles
    for words in ("answers to 8 requests", "200 p50", "200 p95", "server RSS, MiB", "after warmup",
                  "after the burst a normal request got 200"):
        assert words in text
    data = json.loads(out.read_text())
    assert sum(data["statuses"].values()) == data["sent"] == 8
    assert set(data["statuses"]) <= {"200", "503"} and data["statuses"]["200"] > 0
    assert data["missing_retry_after"] == 0 and data["after_status"] == "200"
    assert data["rss_start_bytes"] > 0 and data["rss_peak_bytes"] >= data["rss_end_bytes"] > 0
    assert data["ok_p50_ms"] > 0 and data["ok_p95_ms"] >= data["ok_p50_ms"] and data["server_p50_ms"] > 0
    assert data["setup"]["concurrency"] == 1 and data["setup"]["model"].startswith("classifier-tiny")


@pytest.mark.parametrize("args, says", [
    (["--clients", "0"], "--clients: must be at least 1"),
    (["--concurrency", "0"], "--concurrency: must be at least 1"),
    (["--model", "/no/such/dir"], "no such directory"),
])
def test_bad_settings_are_one_line(args, says):
    res = CliRunner().invoke(app, ["bench", "serve", *args])
    assert res.exit_code == 2 and says in res.output


def test_bad_setting_raises_before_starting_anything():
    with pytest.raises(ServeBenchError, match="--requests"):
        run_serve_bench(ServeBenchConfig(requests=0), progress=None)


def test_percentile_interpolates_like_numpy():
    xs = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(xs, 50) == 3.0 and percentile(xs, 0) == 1.0 and percentile(xs, 100) == 5.0
    assert percentile(xs, 95) == pytest.approx(4.8) and percentile([], 50) is None


def test_server_timing_is_summed():
    assert server_time_ms("queue;dur=1.5, explain;dur=20.25") == 21.75
    assert server_time_ms("") == 0
