"""A Vision Transformer classifier (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words").

Patches are projected to ``d_model`` (:class:`~attnlab.layers.PatchEmbedding`), a class token
is prepended (``pool="cls"``) or the patch states are averaged (``pool="mean"``), learned
positions are added, and a stack of pre-norm :class:`~attnlab.layers.TransformerBlock` s and a
final norm feed a linear head::

    model = create("vit-tiny")                               # 8x8 grey digits, patch 2
    out = model(pixel_values, output_attentions=True)       # pixel_values (B, 1, 8, 8)
    out.logits                                               # (B, 10)
    out.attentions                                           # num_layers x (B, H, 17, 17)
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..attention import kernel_names
from ..layers import PatchEmbedding, TransformerBlock, activation_names, create_norm, norm_names
from ..layers.blocks import layer_head_masks
from .checkpoint import PretrainedModel
from .outputs import ImageClassifierOutput
from .registry import ConfigError, ModelConfig

_POOLS = ("cls", "mean")


@dataclasses.dataclass
class ViTConfig(ModelConfig):
    """Sizes and choices of a :class:`ViT`; the defaults are ViT-S/16 at 224 pixels.

    Args:
        image_size: side of the (square) input image, in pixels.
        patch_size: side of a square patch; must divide ``image_size``.
        in_channels: image channels.
        num_classes: outputs of the head.
        d_model: width of the residual stream.
        num_layers: transformer blocks.
        num_heads: attention heads.
        ffn_dim: feed-forward hidden width.
        pool: "cls" (a learned class token, as the paper) or "mean" (average of patch states).
        norm: "layernorm" or "rmsnorm".
        activation: feed-forward activation.
        dropout: dropout on embeddings and residual branches.
        attn_dropout: dropout on attention weights.
        eps: the norms' epsilon.
        init_std: normal init of positions, class token and linear weights.
        kernel: attention kernel, "auto" or a registered name.
    """

    family: ClassVar[str] = "vit"
    attention_normalised: ClassVar[bool] = True  # softmax rows (for the registry smoke test)

    image_size: int = 224
    patch_size: int = 16
    in_channels: int = 3
    num_classes: int = 1000
    d_model: int = 384
    num_layers: int = 12
    num_heads: int = 6
    ffn_dim: int = 1536
    pool: str = "cls"
    norm: str = "layernorm"
    activation: str = "gelu"
    dropout: float = 0.0
    attn_dropout: float = 0.0
    eps: float = 1e-6
    init_std: float = 0.02
    kernel: str = "auto"

    def build(self) -> "ViT":
        return ViT(self)

    @classmethod
    def tiny(cls) -> dict[str, Any]:
        return dict(image_size=8, patch_size=2, in_channels=1, num_classes=10, d_model=32, num_layers=2,
                    num_heads=4, ffn_dim=64)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def example_inputs(self, batch_size: int = 2, seq_len: int = 6) -> dict[str, Any]:
        """Random images; ``seq_len`` is ignored (the sequence is the patch grid)."""
        return {"pixel_values": torch.randn(batch_size, self.in_channels, self.image_size, self.image_size)}

    def attention_shapes(self, batch_size: int = 2, seq_len: int = 6) -> list[tuple[int, ...]]:
        """Shapes of ``attentions`` for :meth:`example_inputs` (used by the registry's smoke test)."""
        n = self.num_patches + (self.pool == "cls")
        return [(batch_size, self.num_heads, n, n)] * self.num_layers

    def validate(self) -> None:
        for key in ("image_size", "patch_size", "in_channels", "num_classes", "d_model", "num_layers",
                    "num_heads", "ffn_dim"):
            val = getattr(self, key)
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ConfigError(f"ViTConfig: {key} must be a positive int, got {val!r}")
        if self.image_size % self.patch_size:
            raise ConfigError(f"ViTConfig: image_size={self.image_size} is not a multiple of "
                              f"patch_size={self.patch_size}")
        if self.d_model % self.num_heads:
            raise ConfigError(f"ViTConfig: d_model={self.d_model} is not divisible by num_heads={self.num_heads}")
        for key, val, known in (("pool", self.pool, _POOLS), ("norm", self.norm, norm_names()),
                                ("activation", self.activation, activation_names()),
                                ("kernel", self.kernel, ["auto", *kernel_names()])):
            if val not in known:
                raise ConfigError(f"ViTConfig: {key}={val!r} is not one of {', '.join(known)}")


class ViT(PretrainedModel):
    """Vision Transformer image classifier.

    Submodules: ``patch_embed`` (:class:`PatchEmbedding`), ``cls_token`` (``pool="cls"`` only),
    ``pos_embed`` (learned, one vector per patch and the class token), ``blocks`` (pre-norm
    :class:`TransformerBlock` list), ``norm`` (final), ``head`` (``nn.Linear``).

    Args:
        config: a :class:`ViTConfig`.
    """

    def __init__(self, config: ViTConfig):
        super().__init__()
        config.validate()
        self.config = config
        d = config.d_model
        self.patch_embed = PatchEmbedding(config.patch_size, config.in_channels, d)
        n = config.num_patches
        if config.pool == "cls":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d))  # (1, 1, d)
            n += 1
        else:
            self.cls_token = None
        self.pos_embed = nn.Parameter(torch.zeros(1, n, d))  # (1, N, d)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(d, config.num_heads, config.ffn_dim, norm=config.norm, norm_first=True,
                             activation=config.activation, dropout=config.dropout,
                             attn_dropout=config.attn_dropout, eps=config.eps, kernel=config.kernel)
            for _ in range(config.num_layers)
        )
        self.norm = create_norm(config.norm, d, config.eps)
        self.head = nn.Linear(d, config.num_classes)
        self._init_weights(config.init_std)

    def _init_weights(self, std: float) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=std)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=std)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, pixel_values: Tensor, output_attentions: bool = False,
                head_mask: Tensor | None = None) -> ImageClassifierOutput:
        """Classify a batch of images.

        Args:
            pixel_values: (B, C, H, W) images of ``config.image_size`` pixels a side.
            output_attentions: also return every layer's (B, H, N, N) self-attention weights.
            head_mask: float (num_layers, H) or (H,) multiplying each head's output before the
                output projection (Michel et al. 2019).
        """
        size = self.config.image_size
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[2:]) != (size, size):
            raise ValueError(f"ViT: pixel_values must be (B, C, {size}, {size}), got {tuple(pixel_values.shape)}")
        x = self.patch_embed(pixel_values)  # (B, P, d)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)  # (B, 1 + P, d)
        x = self.dropout(x + self.pos_embed)  # (B, N, d)
        attentions = [] if output_attentions else None
        for block, hm in zip(self.blocks, layer_head_masks(head_mask, len(self.blocks), "ViT")):
            out = block(x, output_attentions=output_attentions, head_mask=hm)
            x = out.hidden  # (B, N, d)
            if attentions is not None:
                attentions.append(out.self_attention)  # (B, H, N, N)
        x = self.norm(x)
        pooled = x[:, 0] if self.cls_token is not None else x.mean(dim=1)  # (B, d)
        return ImageClassifierOutput(
            logits=self.head(pooled), attentions=None if attentions is None else tuple(attentions),
        )


__all__ = ["ViT", "ViTConfig"]
