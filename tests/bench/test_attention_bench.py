"""The attention benchmark on tiny sizes: structure, ratios, memory planning, isolation, JSON."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import replace

import pytest
import torch
from rich.console import Console

from attnlab.bench import attention as bench
from attnlab.bench import measure
from attnlab.bench.attention import BenchConfig, Planner, resolve, run_attention_bench
from attnlab.bench.impls import FWD, FWD_BWD, NAIVE, Case, impl_names, measure_case
from attnlab.bench.measure import GiB, NO_FIT, OK, Outcome, run_isolated
from attnlab.bench.report import report, write_json

TINY = BenchConfig(device="cpu", batches=(1,), lengths=(64, 128), heads=2, dim=16, warmup=0,
                   repeats=1, masks=False)


def _render(result) -> str:
    console = Console(record=True, width=200)
    for part in report(result):
        console.print(part)
    return console.export_text()


@pytest.fixture(scope="module")
def tiny_result():
    return run_attention_bench(TINY)


def test_sweep_structure(tiny_result):
    impls = impl_names()
    assert impls[0] == "sdpa" and NAIVE in impls
    rows = tiny_result.sweep
    assert [(r.N, r.impl) for r in rows] == [(n, i) for n in (64, 128) for i in impls]
    for r in rows:
        if r.impl in ("sdpa", NAIVE, "math"):
            assert r.fwd.status == OK and r.fwd_bwd.status == OK, (r.impl, r.fwd, r.fwd_bwd)
        for o in (r.fwd, r.fwd_bwd):
            assert o.ok == (o.ms is not None)
            assert o.ok or o.note  # every case without a time says why
    text = _render(tiny_result)
    assert "float32, B=1" in text and "÷sdpa" in text and "f+b MiB" in text
    assert "bfloat16 skipped on CPU" in text  # and says so


def test_ratio_is_computed_from_measured_times(tiny_result):
    for n in (64, 128):
        here = {r.impl: r for r in tiny_result.sweep if r.N == n}
        ref = here["sdpa"]
        assert ref.fwd_vs_sdpa == 1.0 and ref.fwd_bwd_vs_sdpa == 1.0
        for r in here.values():
            for o, ref_o, ratio in ((r.fwd, ref.fwd, r.fwd_vs_sdpa),
                                    (r.fwd_bwd, ref.fwd_bwd, r.fwd_bwd_vs_sdpa)):
                if o.ok:
                    assert ratio == pytest.approx(o.ms / ref_o.ms)
                else:
                    assert ratio is None


def test_json_is_written_atomically(tiny_result, tmp_path):
    path = write_json(tiny_result, tmp_path / "sub" / "attention.json")
    d = json.loads(path.read_text())
    assert set(d) == {"setup", "notes", "sweep", "masks"}
    assert d["setup"]["torch"] == torch.__version__ and d["setup"]["threads"] >= 1
    assert d["sweep"][0]["fwd"]["status"] == OK and d["sweep"][0]["fwd"]["ms"] > 0
    assert os.listdir(path.parent) == ["attention.json"]  # no temporary file left


def test_absurd_n_would_not_fit_and_is_not_run(monkeypatch):
    monkeypatch.setattr(bench, "mem_available_bytes", lambda: 4 * GiB)
    ran = []
    def fake(fn, case, timeout):
        ran.append(case)
        return Outcome(OK, ms=1.0)

    monkeypatch.setattr(bench, "run_isolated", fake)
    config = replace(TINY, lengths=(1 << 16,), heads=8, dim=64, impls=("naive", "math"))
    result = run_attention_bench(config)
    by = {r.impl: r for r in result.sweep}
    for impl in ("naive", "math"):
        for o in (by[impl].fwd, by[impl].fwd_bwd):
            assert o.status == NO_FIT
            assert o.note.startswith("would not fit (needs ") and "GiB" in o.note
    # (1, 8, 65536, 65536) fp32 scores are 128 GiB each: three of them in the forward.
    assert "needs 384." in by["naive"].fwd.note
    assert {c.impl for c in ran} == {"sdpa"}  # only SDPA, which needs no N x N scores, ran
    assert "no fit [" in _render(result)


def test_planner_skips_what_would_overrun_max_seconds():
    config, _ = resolve(replace(TINY, max_seconds=1.0))
    planner = Planner(config)
    case = Case("naive", FWD, 1, 2, 64, 16, warmup=1, repeats=3)
    planner.record(case, Outcome(OK, ms=400.0, peak_bytes=1))
    out = planner.check(replace(case, N=128))  # 1.6 s per call now
    assert out is not None and out.status == "skipped" and "--max-seconds 1" in out.note
    assert planner.check(replace(case, N=128, mode=FWD_BWD)) is None  # nothing known about it


def test_planner_scales_measured_peak(monkeypatch):
    monkeypatch.setattr(bench, "mem_available_bytes", lambda: 10 * GiB)
    config, _ = resolve(TINY)
    planner = Planner(config)
    case = Case("sdpa", FWD, 1, 2, 1024, 16)
    planner.record(case, Outcome(OK, ms=1.0, peak_bytes=1 * GiB))
    out = planner.check(replace(case, N=4096))  # 16 GiB extrapolated
    assert out is not None and out.status == NO_FIT and "needs 16.0 GiB" in out.note


def test_measure_case_in_the_child_sees_the_scores():
    case = Case(NAIVE, FWD, 1, 8, 512, 64, warmup=1, repeats=2)
    out = run_isolated(measure_case, case, timeout_s=120)
    assert out.status == OK, out
    assert out.repeats == 2 and out.ms > 0
    assert out.peak_bytes >= 8 * 512 * 512 * 4  # at least one (B, H, N, N) fp32 score matrix


@pytest.mark.parametrize("impl, mask", [("chunked", "sliding"), ("sdpa", "sliding"),
                                        ("chunked", "causal"), ("sdpa", "causal"),
                                        ("sdpa_is_causal", "causal")])
def test_mask_cases_run(impl, mask):
    out = measure_case(Case(impl, FWD_BWD, 1, 2, 64, 16, mask=mask, window=8, warmup=0, repeats=1))
    assert out.status == OK and out.ms > 0


def test_masks_section_ratios(monkeypatch):
    times = {("chunked", FWD_BWD): 2.0, ("sdpa", FWD_BWD): 6.0, ("sdpa_is_causal", FWD_BWD): 3.0,
             ("chunked", FWD): 1.0, ("flex_compiled", FWD): 0.5}

    def fake(fn, case, timeout):
        return Outcome(OK, ms=times[(case.impl, case.mode)], peak_bytes=0,
                       compile_s=1.0 if case.impl == "flex_compiled" else None)

    monkeypatch.setattr(bench, "run_isolated", fake)
    result = run_attention_bench(replace(TINY, sweep=False, masks=True, mask_n=64, window=8))
    rows = {(r.mask, r.impl, r.mode): r for r in result.masks}
    assert rows[("sliding ±8", "sdpa", FWD_BWD)].vs_chunked == pytest.approx(3.0)
    assert rows[("causal", "sdpa_is_causal", FWD_BWD)].vs_chunked == pytest.approx(1.5)
    assert rows[("causal", "flex_compiled", FWD)].vs_chunked == pytest.approx(0.5)
    assert ("sliding ±8", "sdpa_is_causal", FWD_BWD) not in rows
    text = _render(result)
    assert "chunked speedup over SDPA with the dense mask" in text and "3.00x" in text


def test_isolation_reports_crash_timeout_and_errors():
    assert run_isolated(os._exit, 3, timeout_s=60).note == "crashed: exit code 3"
    out = run_isolated(signal.raise_signal, signal.SIGKILL, timeout_s=60)
    assert out.status == "crashed" and "signal 9" in out.note
    t0 = time.perf_counter()
    assert run_isolated(time.sleep, 60, timeout_s=1).status == "timeout"
    assert time.perf_counter() - t0 < 30
    assert run_isolated(int, "x", timeout_s=60).note.startswith("error: ValueError")
    assert run_isolated(bytearray, 1 << 50, timeout_s=60).status == "out of memory"


def test_budget_cuts_repeats():
    times = measure.time_calls(lambda: time.sleep(0.05), repeats=100, device=torch.device("cpu"),
                               budget_s=0.2)
    assert 1 <= len(times) < 10
