"""The model benchmark on tiny settings: rows, ratios from the measured times, report, JSON, CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from rich.console import Console
from typer.testing import CliRunner

from attnlab.bench import model as bench
from attnlab.bench.model import ModelBenchConfig, ModelBenchError, run_model_bench
from attnlab.bench.report import model_report, write_json
from attnlab.cli import app
from attnlab.models import create

TINY = ModelBenchConfig(batch=2, seq_len=8, kernels=("auto", "math"), decoder="decoder", prompt_len=4,
                        new_tokens=6, warmup=1, repeats=2, max_seconds=5.0, hf_generate=False)


def _has_transformers() -> bool:
    return bench._transformers() is not None


def _render(result) -> str:
    console = Console(record=True, width=200)
    for part in model_report(result):
        console.print(part)
    return console.export_text()


@pytest.fixture(scope="module")
def attnlab_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("encoder")
    create("encoder-tiny").save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("bert")
    cfg = transformers.BertConfig(vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=40)
    transformers.BertModel(cfg).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def tiny_result(attnlab_dir):
    return run_model_bench(replace(TINY, model=str(attnlab_dir)))


def test_encoder_rows(tiny_result):
    rows = tiny_result.encoder
    assert [(r.impl, r.kernel) for r in rows] == [("attnlab", "auto"), ("attnlab", "math")]
    assert rows[1].ran == "math" and rows[0].ran in ("sdpa", "chunked", "math")
    for r in rows:
        assert r.ms > 0 and 1 <= r.repeats <= TINY.repeats
        assert r.tokens_per_s == pytest.approx(TINY.batch * TINY.seq_len / (r.ms / 1e3))
        assert r.vs_hf is None  # Hugging Face cannot read an attnlab checkpoint
    if _has_transformers():
        assert any("Hugging Face cannot load" in n for n in tiny_result.notes)


def test_generation_rows(tiny_result):
    cached, uncached = tiny_result.generation
    assert (cached.impl, cached.use_cache, uncached.use_cache) == ("attnlab", True, False)
    assert cached.cache_speedup == pytest.approx(uncached.ms / cached.ms)
    assert uncached.cache_speedup is None and cached.same_tokens is True
    for r in (cached, uncached):
        assert r.tokens_per_s == pytest.approx(TINY.new_tokens / (r.ms / 1e3))


def test_encoder_against_hf(hf_dir):
    result = run_model_bench(replace(TINY, model=str(hf_dir), kernels=("auto",), generation=False))
    mine, ref = result.encoder
    assert ref.impl == "hf" and ref.kernel and ref.vs_hf == 1.0
    assert mine.vs_hf == pytest.approx(mine.tokens_per_s / ref.tokens_per_s)
    assert "hf" in _render(result)


def test_hf_gpt2_generation():
    pytest.importorskip("transformers")
    result = run_model_bench(replace(TINY, encoder=False, hf_generate=True, new_tokens=3, repeats=1))
    impls = [(r.impl, r.use_cache) for r in result.generation]
    assert impls == [("attnlab", True), ("attnlab", False), ("hf", True), ("hf", False)]
    hf_cached, hf_uncached = result.generation[2:]
    assert hf_cached.cache_speedup == pytest.approx(hf_uncached.ms / hf_cached.ms)


def test_without_transformers(attnlab_dir, monkeypatch):
    monkeypatch.setattr(bench, "_transformers", lambda: None)
    result = run_model_bench(replace(TINY, model=str(attnlab_dir), kernels=("auto",), generation=False))
    assert [r.impl for r in result.encoder] == ["attnlab"]
    assert any("transformers is not installed" in n for n in result.notes)


def test_report_and_json(tiny_result, tmp_path):
    text = _render(tiny_result)
    assert "encoder forward" in text and "greedy generation" in text and "speedup" in text
    path = write_json(tiny_result, tmp_path / "out" / "model.json")
    data = json.loads(path.read_text())
    assert set(data) == {"setup", "notes", "encoder", "generation"}
    assert data["setup"]["batch"] == TINY.batch and data["setup"]["decoder"] == "decoder"
    assert data["generation"][0]["cache_speedup"] == pytest.approx(tiny_result.generation[0].cache_speedup)
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left no temporary file


@pytest.mark.parametrize("change, word", [
    (dict(kernels=("nope",)), "--kernels"), (dict(seq_len=1000), "--seq-len"),
    (dict(new_tokens=1000, encoder=False), "--new-tokens"), (dict(batch=0), "--batch"),
    (dict(decoder="no-such-model", encoder=False), "--decoder"),
])
def test_bad_settings(attnlab_dir, change, word):
    with pytest.raises(ModelBenchError, match=word):
        run_model_bench(replace(TINY, model=str(attnlab_dir), **change))


def test_cli(attnlab_dir, tmp_path):
    out = tmp_path / "cli.json"
    res = CliRunner().invoke(app, ["bench", "model", "--model", str(attnlab_dir), "--batch", "2", "--seq-len", "8",
                                   "--kernels", "auto", "--decoder", "decoder", "--prompt-len", "4",
                                   "--new-tokens", "4", "--repeats", "1", "--no-hf", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "encoder forward" in res.output and json.loads(out.read_text())["encoder"][0]["kernel"] == "auto"
    res = CliRunner().invoke(app, ["bench", "model", "--model", str(attnlab_dir), "--kernels", "nope"])
    assert res.exit_code == 2 and "--kernels" in res.output
