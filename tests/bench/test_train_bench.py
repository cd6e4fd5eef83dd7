"""The training benchmark on a tiny config: throughputs, comparable losses, identical batches, report."""

from __future__ import annotations

import json
import math

import pytest
from rich.console import Console

from attnlab.bench import train as bench
from attnlab.bench.report import train_report, write_json
from attnlab.bench.train import TrainBenchConfig, TrainBenchError, make_batches, run_train_bench

TINY = TrainBenchConfig(d_model=32, encoder_layers=1, decoder_layers=1, heads=2, ffn_dim=64, vocab=100,
                        max_tokens=300, sentences=100, warmup=1, steps=4, round_steps=2)
HAS_HF = bench._transformers() is not None


@pytest.fixture(scope="module")
def result():
    return run_train_bench(TINY, progress=None)


def test_attnlab_row(result):
    row = result.rows[0]
    assert row.impl == "attnlab" and row.steps == TINY.steps
    assert row.ms > 0 and row.tokens_per_s > 0 and row.all_tokens_per_s > row.tokens_per_s
    assert row.params > 0 and math.isfinite(row.final_loss)


def test_first_loss_near_uniform(result):
    for row in result.rows:
        assert abs(row.first_loss / math.log(TINY.vocab) - 1) < 0.2, row


@pytest.mark.skipif(not HAS_HF, reason="transformers is not installed")
def test_hf_same_batches_and_size(result):
    a, h = result.rows
    assert h.impl == "hf" and h.tokens_per_s > 0 and h.vs_hf == 1.0
    assert (a.target_tokens, a.source_tokens) == (h.target_tokens, h.source_tokens)
    assert a.params == h.params
    assert a.vs_hf == pytest.approx(a.tokens_per_s / h.tokens_per_s)


def test_without_hf_notes_it(monkeypatch):
    monkeypatch.setattr(bench, "_transformers", lambda: None)
    res = run_train_bench(TrainBenchConfig(**{**TINY.__dict__, "steps": 1, "warmup": 0}), progress=None)
    assert [r.impl for r in res.rows] == ["attnlab"] and res.rows[0].vs_hf is None
    assert any("not installed" in n for n in res.notes)


def test_batches_deterministic_and_within_budget():
    first, again = make_batches(TINY, 5), make_batches(TINY, 5)
    for b, c in zip(first, again):
        assert b.src.equal(c.src) and b.labels.equal(c.labels)
        assert b.src.numel() <= TINY.max_tokens and b.tgt_in.shape == b.labels.shape
        assert b.target_tokens == int((b.labels != -100).sum())
        assert (b.tgt_in[:, 0] == bench.BOS).all()


def test_bad_setting():
    with pytest.raises(TrainBenchError, match="--heads"):
        run_train_bench(TrainBenchConfig(**{**TINY.__dict__, "heads": 5}), progress=None)


def test_report_and_json(result, tmp_path):
    console = Console(record=True, width=200)
    for part in train_report(result):
        console.print(part)
    text = console.export_text()
    assert "attnlab" in text and "tgt tok/s" in text
    data = json.loads(write_json(result, tmp_path / "train.json").read_text())
    assert data["rows"][0]["impl"] == "attnlab" and data["setup"]["vocab"] == TINY.vocab
