"""A small ResNet-style image classifier with CBAM in every residual block (Woo et al. 2018).

A 3x3 stem, ``num_stages`` stages of ``blocks_per_stage`` basic residual blocks (He et al.
2016; width doubles and resolution halves from stage to stage), global average pooling and a
linear head. Each block refines its residual branch with :class:`~attnlab.layers.CBAM` before
the skip connection is added, as in the paper::

    model = create("cnn-attention-tiny")
    out = model(pixel_values, output_attentions=True)     # pixel_values (B, 1, 8, 8)
    out.logits                                              # (B, 10)
    out.attentions                                          # per stage (B, 1, h, w): 8x8, 4x4

The maps returned are the CBAM spatial gates of each stage's last block: sigmoids in [0, 1],
one per pixel, not distributions (they do not sum to 1).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..layers import CBAM
from .checkpoint import PretrainedModel
from .outputs import ImageClassifierOutput
from .registry import ConfigError, ModelConfig


@dataclasses.dataclass
class CNNAttentionConfig(ModelConfig):
    """Sizes of a :class:`CNNAttention`.

    Args:
        image_size: side of the (square) input image (only for ``example_inputs`` and checks).
        in_channels: image channels.
        num_classes: outputs of the head.
        base_channels: width of the stem and the first stage; doubles every stage.
        num_stages: stages; every stage after the first halves the resolution.
        blocks_per_stage: residual blocks per stage.
        reduction: CBAM channel-MLP bottleneck ratio.
        spatial_kernel: CBAM spatial convolution size (odd).
        dropout: dropout before the head.
    """

    family: ClassVar[str] = "cnn_attention"
    attention_normalised: ClassVar[bool] = False  # CBAM maps are sigmoid gates

    image_size: int = 32
    in_channels: int = 3
    num_classes: int = 10
    base_channels: int = 32
    num_stages: int = 3
    blocks_per_stage: int = 2
    reduction: int = 16
    spatial_kernel: int = 7
    dropout: float = 0.0

    def build(self) -> "CNNAttention":
        return CNNAttention(self)

    @classmethod
    def tiny(cls) -> dict[str, Any]:
        return dict(image_size=8, in_channels=1, num_classes=10, base_channels=16, num_stages=2,
                    blocks_per_stage=1, reduction=4, spatial_kernel=3)

    def example_inputs(self, batch_size: int = 2, seq_len: int = 6) -> dict[str, Any]:
        """Random images; ``seq_len`` is ignored."""
        return {"pixel_values": torch.randn(batch_size, self.in_channels, self.image_size, self.image_size)}

    def attention_shapes(self, batch_size: int = 2, seq_len: int = 6) -> list[tuple[int, ...]]:
        """Shapes of ``attentions`` for :meth:`example_inputs` (used by the registry's smoke test)."""
        shapes, side = [], self.image_size
        for stage in range(self.num_stages):
            side = side if stage == 0 else (side + 1) // 2
            shapes.append((batch_size, 1, side, side))
        return shapes

    def validate(self) -> None:
        for key in ("image_size", "in_channels", "num_classes", "base_channels", "num_stages",
                    "blocks_per_stage", "reduction", "spatial_kernel"):
            val = getattr(self, key)
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ConfigError(f"CNNAttentionConfig: {key} must be a positive int, got {val!r}")
        if self.spatial_kernel % 2 != 1:
            raise ConfigError(f"CNNAttentionConfig: spatial_kernel must be odd, got {self.spatial_kernel}")


class CBAMBlock(nn.Module):
    """A basic residual block (two 3x3 convolutions) whose branch is refined by CBAM.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution (2 halves the resolution).
        reduction: CBAM channel bottleneck ratio.
        spatial_kernel: CBAM spatial convolution size.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, reduction: int, spatial_kernel: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.cbam = CBAM(out_channels, reduction=reduction, kernel_size=spatial_kernel)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, Cin, H, W) -> (B, Cout, H', W') features and the (B, 1, H', W') spatial map."""
        y = torch.relu(self.bn1(self.conv1(x)))  # (B, Cout, H', W')
        y = self.bn2(self.conv2(y))  # (B, Cout, H', W')
        res = self.cbam(y)  # res.out (B, Cout, H', W'), res.spatial (B, 1, H', W')
        return torch.relu(res.out + self.shortcut(x)), res.spatial


class CNNAttention(PretrainedModel):
    """ResNet-style classifier with CBAM blocks.

    Submodules: ``stem`` (conv, batch norm, ReLU), ``stages`` (``nn.ModuleList`` of
    ``nn.ModuleList`` of :class:`CBAMBlock`), ``head`` (``nn.Linear``).

    Args:
        config: a :class:`CNNAttentionConfig`.
    """

    def __init__(self, config: CNNAttentionConfig):
        super().__init__()
        config.validate()
        self.config = config
        c = config.base_channels
        self.stem = nn.Sequential(nn.Conv2d(config.in_channels, c, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c), nn.ReLU())
        self.stages = nn.ModuleList()
        width = c
        for stage in range(config.num_stages):
            out = c * 2 ** stage
            blocks = nn.ModuleList()
            for i in range(config.blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(CBAMBlock(width, out, stride, config.reduction, config.spatial_kernel))
                width = out
            self.stages.append(blocks)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(width, config.num_classes)

    def forward(self, pixel_values: Tensor, output_attentions: bool = False) -> ImageClassifierOutput:
        """Classify a batch of images.

        Args:
            pixel_values: (B, C, H, W) images.
            output_attentions: also return each stage's (B, 1, h, w) CBAM spatial map (of its
                last block).
        """
        if pixel_values.dim() != 4 or pixel_values.shape[1] != self.config.in_channels:
            raise ValueError(f"CNNAttention: pixel_values must be (B, {self.config.in_channels}, H, W), "
                             f"got {tuple(pixel_values.shape)}")
        x = self.stem(pixel_values)  # (B, c, H, W)
        maps = []
        for blocks in self.stages:
            for block in blocks:
                x, spatial = block(x)  # (B, C_s, h, w), (B, 1, h, w)
            maps.append(spatial)
        pooled = self.dropout(x.mean(dim=(2, 3)))  # (B, C_last)
        return ImageClassifierOutput(logits=self.head(pooled), attentions=tuple(maps) if output_attentions else None)


__all__ = ["CNNAttention", "CNNAttentionConfig", "CBAMBlock"]
