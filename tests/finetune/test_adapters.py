"""Houlsby bottleneck adapters: placement, the identity at initialisation, training, no merge."""

import pytest
import torch

from attnlab.finetune import FinetuneConfig, apply_finetune, merge
from attnlab.finetune.adapters import AdaptedLinear

ADAPTER = FinetuneConfig(method="adapter", adapter_size=16)


def test_adapters_sit_after_attention_output_and_ffn(build):
    model = build()
    out_proj = model.encoder.layers[0].self_attn.out_proj
    apply_finetune(model, ADAPTER)
    for layer in model.encoder.layers:
        assert isinstance(layer.self_attn.out_proj, AdaptedLinear) and isinstance(layer.ffn.down, AdaptedLinear)
        assert not isinstance(layer.self_attn.q_proj, AdaptedLinear)
    assert model.encoder.layers[0].self_attn.out_proj.base_layer is out_proj
    assert model.encoder.layers[0].self_attn.out_proj.weight is out_proj.weight
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        *(f"encoder.layers.{i}.{sub}.adapter.{ud}.{wb}" for i in range(2) for sub in ("self_attn.out_proj", "ffn.down")
          for ud in ("down", "up") for wb in ("weight", "bias")),
        *(f"encoder.layers.{i}.{norm}.{wb}" for i in range(2) for norm in ("attn_norm", "ffn_norm")
          for wb in ("weight", "bias")),
        "head.classifier.weight", "head.classifier.bias",
    }


def test_adapted_linear_is_base_plus_bottleneck():
    lin = torch.nn.Linear(8, 6)
    ad = AdaptedLinear(lin, 4)
    torch.nn.init.normal_(ad.adapter.up.weight)
    x = torch.randn(3, 8)
    h = lin(x)
    expected = h + ad.adapter.up(torch.nn.functional.gelu(ad.adapter.down(h)))
    torch.testing.assert_close(ad(x), expected)


def test_fresh_adapters_are_the_identity_and_train(build, batch):
    model = build()
    with torch.no_grad():
        base = model(**batch).logits
    apply_finetune(model, ADAPTER)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, base)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(**batch).loss.backward()
    opt.step()
    with torch.no_grad():
        after = model(**batch).logits
    assert not torch.allclose(after, base, atol=1e-6)
    assert model.encoder.layers[1].ffn.down.adapter.up.weight.abs().sum() > 0


def test_adapters_cannot_merge(build):
    with pytest.raises(ValueError, match="'adapter' cannot be merged"):
        merge(apply_finetune(build(), ADAPTER))
