"""CBAM: shapes, ranges, and the two attentions against their formulas."""

import pytest
import torch

from attnlab.layers import CBAM, CBAMOutput, ChannelAttention, SpatialAttention


def test_shapes_and_ranges():
    torch.manual_seed(0)
    cbam = CBAM(32, reduction=8)
    x = torch.randn(2, 32, 9, 11)
    res = cbam(x)
    assert isinstance(res, CBAMOutput)
    assert res.out.shape == x.shape and res.channel.shape == (2, 32) and res.spatial.shape == (2, 1, 9, 11)
    for t in (res.channel, res.spatial):
        assert ((t >= 0) & (t <= 1)).all()
    ref = x * res.channel[:, :, None, None] * res.spatial
    torch.testing.assert_close(res.out, ref)


def test_channel_attention_formula():
    torch.manual_seed(0)
    ca = ChannelAttention(8, reduction=2)
    x = torch.randn(3, 8, 4, 5)
    w1, w2 = ca.mlp[0].weight[:, :, 0, 0], ca.mlp[2].weight[:, :, 0, 0]  # (4, 8), (8, 4)

    def mlp(v):
        return torch.relu(v @ w1.T) @ w2.T

    ref = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))
    torch.testing.assert_close(ca(x).flatten(1), ref)


def test_spatial_attention_formula():
    torch.manual_seed(0)
    sa = SpatialAttention(3)
    x = torch.randn(2, 5, 6, 6)
    pooled = torch.stack((x.mean(1), x.amax(1)), 1)  # (2, 2, 6, 6)
    ref = torch.sigmoid(torch.nn.functional.conv2d(pooled, sa.conv.weight, padding=1))
    torch.testing.assert_close(sa(x), ref)
    with pytest.raises(ValueError, match="odd"):
        SpatialAttention(4)


def test_gradients_and_bad_input():
    cbam = CBAM(4, reduction=16)  # hidden width clamps to 1
    x = torch.randn(1, 4, 3, 3, requires_grad=True)
    cbam(x).out.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in cbam.parameters())
    with pytest.raises(ValueError, match=r"x must be \(B, 4, H, W\)"):
        cbam(torch.randn(1, 5, 3, 3))
