"""save_adapter / load_adapter for every method: only the trained weights, an exact reload onto
a fresh base model, and one-line errors for files that do not fit."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from attnlab.config import ConfigError
from attnlab.finetune import (
    ADAPTER_CONFIG, ADAPTER_WEIGHTS, FinetuneConfig, apply_finetune, load_adapter, method_names,
    read_adapter_config, save_adapter, trainable_summary,
)
from attnlab.models.checkpoint import CheckpointError


def _cfg(method):
    return FinetuneConfig(method=method, total_step=10, prefix_length=3, adapter_size=8)


def _trained(build, method):
    """A model with ``method`` applied and every trainable weight moved off its init."""
    model = apply_finetune(build(), _cfg(method))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("method", method_names())
def test_adapter_round_trip_is_exact_and_holds_only_trained_weights(method, build, batch, tmp_path):
    model = _trained(build, method)
    save_adapter(model, tmp_path, _cfg(method), base="encoder-tiny")
    saved = load_file(str(tmp_path / ADAPTER_WEIGHTS))
    assert sum(t.numel() for t in saved.values()) == trainable_summary(model)["trainable"]
    config = json.loads((tmp_path / ADAPTER_CONFIG).read_text())
    assert config["base"] == "encoder-tiny" and config["method"] == method

    fresh = build()  # the same base weights, nothing trained
    with torch.no_grad():
        before = fresh(**batch).logits
        reloaded = load_adapter(fresh, tmp_path)(**batch).logits
        expected = model(**batch).logits
    assert torch.equal(reloaded, expected)
    assert not torch.equal(before, expected)  # the file carried something


def test_read_adapter_config(build, tmp_path):
    cfg = FinetuneConfig(method="lora", r=4, target_modules=["q_proj"])
    save_adapter(apply_finetune(build(), cfg), tmp_path, cfg, base="runs/base")
    assert read_adapter_config(tmp_path) == (cfg, "runs/base")


def test_missing_or_extra_key_is_one_line_naming_the_file(build, tmp_path):
    cfg = _cfg("lora")
    save_adapter(_trained(build, "lora"), tmp_path, cfg, base="encoder-tiny")
    path = tmp_path / ADAPTER_WEIGHTS
    state = load_file(str(path))
    gone = "encoder.layers.1.self_attn.v_proj.lora_B.weight"
    save_file({**{k: v for k, v in state.items() if k != gone}, "bogus.weight": torch.zeros(1)}, str(path))
    with pytest.raises(CheckpointError) as err:
        load_adapter(build(), tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    assert f"missing {gone}" in msg and "unexpected bogus.weight" in msg


def test_shape_mismatch_names_the_key(build, tmp_path):
    save_adapter(_trained(build, "lora"), tmp_path, _cfg("lora"), base="encoder-tiny")
    cfg = json.loads((tmp_path / ADAPTER_CONFIG).read_text())
    (tmp_path / ADAPTER_CONFIG).write_text(json.dumps({**cfg, "r": 4}))  # the file holds r=8
    with pytest.raises(CheckpointError, match=r"lora_A.weight has shape \(8, 32\) in the file but \(4, 32\)"):
        load_adapter(build(), tmp_path)


def test_bad_adapter_config_names_the_file(build, tmp_path):
    save_adapter(_trained(build, "lora"), tmp_path, _cfg("lora"), base="encoder-tiny")
    cfg = json.loads((tmp_path / ADAPTER_CONFIG).read_text())
    (tmp_path / ADAPTER_CONFIG).write_text(json.dumps({**cfg, "rank": 8}))
    with pytest.raises(ConfigError, match=rf"{ADAPTER_CONFIG}: unknown key 'rank'"):
        load_adapter(build(), tmp_path)


def test_save_needs_the_applied_method_and_apply_happens_once(build, tmp_path):
    model = apply_finetune(build(), _cfg("lora"))
    with pytest.raises(ValueError, match="cfg.method='ia3' but the model has 'lora'"):
        save_adapter(model, tmp_path, _cfg("ia3"), base="x")
    with pytest.raises(ValueError, match="already has method 'lora' applied"):
        apply_finetune(model, _cfg("bitfit"))
    with pytest.raises(ValueError, match="no fine-tuning method applied"):
        save_adapter(build(), tmp_path, _cfg("lora"), base="x")
