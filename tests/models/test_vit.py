"""ViT: shapes, attention maps, config checks, and learning scikit-learn's 8x8 digits."""

import pytest
import torch
import torch.nn.functional as F

from attnlab.models import ConfigError, ViT, ViTConfig, create, get_config


def _fit(model, xtr, ytr, epochs, lr, batch=64):
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(ytr))
        for i in range(0, len(ytr), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(xtr[idx]).logits, ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return sum(losses[:5]) / 5, sum(losses[-5:]) / 5


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_shapes_and_attention_rows_sum_to_one(pool):
    model = create("vit-tiny", pool=pool).eval()
    x = torch.randn(3, 1, 8, 8)
    out = model(x, output_attentions=True)
    n = 16 + (pool == "cls")  # (8 / 2)^2 patches, plus the class token
    assert out.logits.shape == (3, 10)
    assert len(out.attentions) == 2
    for w in out.attentions:
        assert w.shape == (3, 4, n, n)
        torch.testing.assert_close(w.sum(-1), torch.ones(3, 4, n))
    assert model(x).attentions is None
    assert (model.cls_token is None) == (pool == "mean")


def test_rgb_and_presets():
    model = ViT(ViTConfig(image_size=16, patch_size=4, in_channels=3, num_classes=5, d_model=24, num_layers=1,
                          num_heads=3, ffn_dim=48))
    assert model(torch.randn(2, 3, 16, 16)).logits.shape == (2, 5)
    cfg = get_config("vit")
    assert (cfg.image_size, cfg.patch_size, cfg.d_model, cfg.num_layers, cfg.num_heads) == (224, 16, 384, 12, 6)
    assert cfg.num_patches == 196


def test_bad_inputs_and_configs():
    model = create("vit-tiny")
    with pytest.raises(ValueError, match=r"pixel_values must be \(B, C, 8, 8\)"):
        model(torch.randn(2, 1, 6, 6))
    with pytest.raises(ConfigError, match="image_size=8 is not a multiple of patch_size=3"):
        create("vit-tiny", patch_size=3)
    with pytest.raises(ConfigError, match="pool='max' is not one of cls, mean"):
        create("vit-tiny", pool="max")


def test_learns_digits(digits):
    torch.manual_seed(0)
    xtr, ytr, xte, yte = digits
    model = create("vit-tiny")
    first, last = _fit(model, xtr, ytr, epochs=20, lr=3e-3)
    model.eval()
    with torch.no_grad():
        acc = (model(xte).logits.argmax(-1) == yte).float().mean().item()
    print(f"vit-tiny digits: loss {first:.3f} -> {last:.3f}, held-out accuracy {acc:.3f} (chance 0.1)")
    assert last < first / 2
    assert acc > 0.8
