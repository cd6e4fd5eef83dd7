"""LoRA through peft on attnlab modules: the update by hand, merging, peft's own loader, and the
error for target_modules that name nothing."""

import peft
import pytest
import torch
from safetensors.torch import load_file

from attnlab.config import ConfigError
from attnlab.finetune import ADAPTER_WEIGHTS, FinetuneConfig, apply_finetune, merge, save_adapter
from attnlab.models import create, load_pretrained

LORA = FinetuneConfig(method="lora", r=8, alpha=16)


def _train_b(model, seed=3):
    """LoRA's B starts at zero (the update is then nothing); give it values, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def test_lora_equals_w_x_plus_scaled_b_a_x(build, tmp_path):
    model = build()
    q = model.encoder.layers[0].self_attn.q_proj
    W, b = q.weight.detach().clone(), q.bias.detach().clone()
    apply_finetune(model, LORA)
    _train_b(model)
    save_adapter(model, tmp_path, LORA, base="encoder-tiny")
    saved = load_file(str(tmp_path / ADAPTER_WEIGHTS))
    A = saved["encoder.layers.0.self_attn.q_proj.lora_A.weight"]  # (r, in)
    B = saved["encoder.layers.0.self_attn.q_proj.lora_B.weight"]  # (out, r)
    assert A.shape == (8, 32) and B.shape == (32, 8) and B.abs().sum() > 0
    x = torch.randn(2, 5, 32)
    expected = x @ W.T + b + (16 / 8) * (x @ A.T @ B.T)  # W x + (alpha / r) B A x
    torch.testing.assert_close(model.encoder.layers[0].self_attn.q_proj(x), expected, atol=1e-6, rtol=1e-6)


def test_merged_lora_equals_unmerged(build, batch):
    model = build()
    base_keys = list(model.state_dict())
    apply_finetune(model, LORA)
    _train_b(model)
    with torch.no_grad():
        unmerged = model(**batch).logits
    merged = merge(model)
    with torch.no_grad():
        out = merged(**batch).logits
    assert (out - unmerged).abs().max() < 1e-5
    assert not torch.allclose(unmerged, build()(**batch).logits, atol=1e-4)  # B != 0 changed the model
    # a plain model again: the base's own keys, no peft layers, everything trainable
    assert list(merged.state_dict()) == base_keys
    assert not any(isinstance(m, peft.tuners.tuners_utils.BaseTunerLayer) for m in merged.modules())
    assert not hasattr(merged, "peft_config") and all(p.requires_grad for p in merged.parameters())


def test_merged_encoder_saves_and_loads_as_a_plain_checkpoint(tmp_path, batch):
    torch.manual_seed(0)
    enc = create("encoder-tiny").eval()
    apply_finetune(enc, FinetuneConfig(method="lora", modules_to_save=[]))
    _train_b(enc)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        unmerged = enc(**inputs).last_hidden_state
    merge(enc).save_pretrained(tmp_path)
    loaded = load_pretrained(tmp_path)
    with torch.no_grad():
        out = loaded(**inputs).last_hidden_state
    assert type(loaded).__name__ == "Encoder"
    assert (out - unmerged).abs().max() < 1e-5


def test_peft_set_peft_model_state_dict_accepts_our_file(build, batch, tmp_path):
    model = apply_finetune(build(), LORA)
    _train_b(model)
    save_adapter(model, tmp_path, LORA, base="encoder-tiny")
    saved = load_file(str(tmp_path / ADAPTER_WEIGHTS))

    fresh = build(seed=1)  # other weights everywhere, prepared by peft itself
    fresh = peft.inject_adapter_in_model(
        peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]), fresh)
    fresh.load_state_dict(model.state_dict(), strict=False)  # the same base weights...
    with torch.no_grad():
        for name, p in fresh.named_parameters():
            if "lora_" in name or name.startswith("head."):
                p.zero_()  # ...but nothing of the adapter or the head
    result = peft.set_peft_model_state_dict(fresh, saved)
    assert result.unexpected_keys == []
    assert not [k for k in result.missing_keys if "lora_" in k or k.startswith("head.")]
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(**batch).logits, model(**batch).logits, atol=1e-6, rtol=1e-6)


def test_lora_trains_only_the_adapters_and_the_head(build):
    model = apply_finetune(build(), LORA)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        *(f"encoder.layers.{i}.self_attn.{proj}.lora_{ab}.default.weight"
          for i in range(2) for proj in ("q_proj", "v_proj") for ab in "AB"),
        "head.classifier.weight", "head.classifier.bias",
    }


def test_target_modules_naming_nothing_lists_the_linear_modules(build):
    model = build()
    with pytest.raises(ConfigError) as err:
        apply_finetune(model, FinetuneConfig(method="lora", target_modules=["nope"]))
    msg = str(err.value)
    assert "\n" not in msg and "['nope']" in msg
    assert msg.endswith("q_proj, k_proj, v_proj, out_proj, ffn.up, ffn.down, pooler.dense")  # head left out
    assert not any("lora" in n for n, _ in model.named_parameters())  # nothing was changed


def test_modules_to_save_naming_nothing_is_one_line(build):
    with pytest.raises(ConfigError, match=r"modules_to_save: 'classifier_head' names no module .*encoder, head"):
        apply_finetune(build(), FinetuneConfig(method="lora", modules_to_save=["classifier_head"]))
