"""CBAM: the Convolutional Block Attention Module (Woo et al. 2018, ECCV).

A feature map is reweighted first per channel, then per pixel:

    Mc = σ(MLP(avgpool(x)) + MLP(maxpool(x)))           # (B, C, 1, 1)
    x' = Mc ⊙ x
    Ms = σ(conv7x7([mean_c(x'); max_c(x')]))             # (B, 1, H, W)
    y  = Ms ⊙ x'

    cbam = CBAM(64)
    res = cbam(features)          # res.out (B, 64, H, W), res.spatial (B, 1, H, W) in [0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class CBAMOutput:
    """What :class:`CBAM` returns.

    Attributes:
        out: (B, C, H, W) refined features.
        channel: (B, C) channel attention weights in [0, 1].
        spatial: (B, 1, H, W) spatial attention map in [0, 1].
    """

    out: Tensor
    channel: Tensor
    spatial: Tensor


class ChannelAttention(nn.Module):
    """Channel weights from a shared bottleneck MLP over average- and max-pooled features.

    Args:
        channels: C.
        reduction: bottleneck ratio r (hidden width ``max(1, C // r)``).
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.ReLU(), nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, 1, 1) weights in [0, 1]."""
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))  # (B, C, 1, 1)
        mx = self.mlp(x.amax(dim=(2, 3), keepdim=True))  # (B, C, 1, 1)
        return torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    """A per-pixel map from a convolution over the channel-wise mean and max.

    Args:
        kernel_size: odd side of the convolution (7 in the paper).
    """

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"SpatialAttention: kernel_size must be odd, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 1, H, W) map in [0, 1]."""
        pooled = torch.cat((x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)), dim=1)  # (B, 2, H, W)
        return torch.sigmoid(self.conv(pooled))  # (B, 1, H, W)


class CBAM(nn.Module):
    """Channel attention then spatial attention, applied multiplicatively.

    Args:
        channels: C of the input feature map.
        reduction: channel MLP bottleneck ratio.
        kernel_size: spatial convolution size.
        channel: the channel module; defaults to ``ChannelAttention(channels, reduction)``.
        spatial: the spatial module; defaults to ``SpatialAttention(kernel_size)``.
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7, *,
                 channel: nn.Module | None = None, spatial: nn.Module | None = None):
        super().__init__()
        self.channels = channels
        self.channel = channel if channel is not None else ChannelAttention(channels, reduction)
        self.spatial = spatial if spatial is not None else SpatialAttention(kernel_size)

    def forward(self, x: Tensor) -> CBAMOutput:
        """Refine ``x`` (B, C, H, W)."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"CBAM: x must be (B, {self.channels}, H, W), got {tuple(x.shape)}")
        mc = self.channel(x)  # (B, C, 1, 1)
        x = x * mc  # (B, C, H, W)
        ms = self.spatial(x)  # (B, 1, H, W)
        return CBAMOutput(out=x * ms, channel=mc.flatten(1), spatial=ms)


__all__ = ["CBAM", "CBAMOutput", "ChannelAttention", "SpatialAttention"]
