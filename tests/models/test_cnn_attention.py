"""The CBAM ResNet: shapes, spatial maps, and learning scikit-learn's 8x8 digits."""

import pytest
import torch
import torch.nn.functional as F

from attnlab.models import CNNAttention, CNNAttentionConfig, ConfigError, create, get_config


def test_shapes_and_spatial_maps():
    model = create("cnn-attention-tiny").eval()
    out = model(torch.randn(3, 1, 8, 8), output_attentions=True)
    assert out.logits.shape == (3, 10)
    assert [tuple(m.shape) for m in out.attentions] == [(3, 1, 8, 8), (3, 1, 4, 4)]
    for m in out.attentions:  # CBAM spatial gates: sigmoids, one per pixel
        assert ((m > 0) & (m < 1)).all()
    assert model(torch.randn(3, 1, 8, 8)).attentions is None


def test_stages_and_presets():
    cfg = CNNAttentionConfig(image_size=32, in_channels=3, base_channels=8, num_stages=3, blocks_per_stage=2,
                             reduction=4)
    model = CNNAttention(cfg).eval()
    out = model(torch.randn(2, 3, 32, 32), output_attentions=True)
    assert [tuple(m.shape) for m in out.attentions] == cfg.attention_shapes(2) == [
        (2, 1, 32, 32), (2, 1, 16, 16), (2, 1, 8, 8)]
    assert model.head.in_features == 32 and len(model.stages[0]) == 2
    assert get_config("cnn_attention").num_stages == 3
    with pytest.raises(ConfigError, match="spatial_kernel must be odd"):
        create("cnn-attention-tiny", spatial_kernel=4)
    with pytest.raises(ValueError, match=r"pixel_values must be \(B, 1, H, W\)"):
        create("cnn-attention-tiny")(torch.randn(2, 3, 8, 8))


def test_learns_digits(digits):
    torch.manual_seed(0)
    xtr, ytr, xte, yte = digits
    model = create("cnn-attention-tiny")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(3):
        perm = torch.randperm(len(ytr))
        for i in range(0, len(ytr), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(xtr[idx]).logits, ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    model.eval()
    with torch.no_grad():
        acc = (model(xte).logits.argmax(-1) == yte).float().mean().item()
    print(f"cnn-attention-tiny digits: loss {first:.3f} -> {last:.3f}, held-out accuracy {acc:.3f} (chance 0.1)")
    assert last < first / 2
    assert acc > 0.8
