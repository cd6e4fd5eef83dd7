"""Input embeddings: tokens (+ segments + absolute positions) for text, patches for images.

    emb = Embeddings(30522, 384, max_len=512, type_vocab_size=2, norm="layernorm", eps=1e-12)
    x = emb(input_ids, token_type_ids)            # (B, L) -> (B, L, 384)   (BERT)

    patches = PatchEmbedding(16, 3, 768)
    x = patches(images)                           # (B, 3, 224, 224) -> (B, 196, 768)   (ViT)

Absolute positions come from :mod:`attnlab.attention.positions` (its ``embed`` hook); RoPE and
ALiBi live in the attention layers instead, so ``position=None`` here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..attention import PositionalEncoding, create_position
from .norm import NormFactory, create_norm


class Embeddings(nn.Module):
    """Token embeddings plus optional segment (token type) and absolute position embeddings,
    then an optional norm and dropout (BERT's recipe).

    Submodules: ``token``, ``segment`` (or None), ``position`` (or None), ``norm`` (or None).

    Args:
        vocab_size: number of token ids.
        d_model: embedding width.
        max_len: positions for ``position="learned"``.
        position: "learned", "sinusoidal", None, or a :class:`PositionalEncoding` with an
            ``embed`` hook.
        type_vocab_size: number of segment ids; 0 for none.
        norm: None, a norm name ("layernorm", "rmsnorm") or a factory ``(dim, eps) -> Module``.
        eps: the norm's epsilon.
        dropout: dropout on the output.
        padding_idx: token id whose embedding gets no gradient (``nn.Embedding``'s).
        init_std: standard deviation of the normal initialisation.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        *,
        max_len: int = 512,
        position: str | PositionalEncoding | None = "learned",
        type_vocab_size: int = 0,
        norm: str | NormFactory | None = None,
        eps: float = 1e-5,
        dropout: float = 0.0,
        padding_idx: int | None = None,
        init_std: float = 0.02,
    ):
        super().__init__()
        self.vocab_size, self.d_model, self.type_vocab_size = vocab_size, d_model, type_vocab_size
        self.token = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        nn.init.normal_(self.token.weight, std=init_std)
        if padding_idx is not None:
            self.token.weight.data[padding_idx].zero_()
        self.segment = nn.Embedding(type_vocab_size, d_model) if type_vocab_size else None
        if self.segment is not None:
            nn.init.normal_(self.segment.weight, std=init_std)
        self.position = _build_position(position, max_len, d_model, init_std)
        self.norm = None if norm is None else create_norm(norm, d_model, eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
                positions: Tensor | None = None) -> Tensor:
        """Embed token ids.

        Args:
            input_ids: (B, L) token ids in ``[0, vocab_size)``.
            token_type_ids: (B, L) segment ids; zeros when None (needs ``type_vocab_size > 0``
                when given).
            positions: (L,) or (B, L) absolute positions; ``arange(L)`` when None.

        Returns:
            (B, L, d_model).
        """
        _check_ids("input_ids", input_ids, self.vocab_size, "vocab_size")
        x = self.token(input_ids)  # (B, L, d_model)
        if self.segment is not None:
            if token_type_ids is None:
                x = x + self.segment.weight[0]  # (B, L, d_model), every token in segment 0
            else:
                if token_type_ids.shape != input_ids.shape:
                    raise ValueError(
                        f"token_type_ids must have the shape of input_ids {tuple(input_ids.shape)}, "
                        f"got {tuple(token_type_ids.shape)}"
                    )
                _check_ids("token_type_ids", token_type_ids, self.type_vocab_size, "type_vocab_size")
                x = x + self.segment(token_type_ids)  # (B, L, d_model)
        elif token_type_ids is not None and bool((token_type_ids != 0).any()):
            raise ValueError("token_type_ids given but these embeddings have no segments (type_vocab_size=0)")
        if self.position is not None:
            x = self.position.embed(x, positions)  # (B, L, d_model)
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x)


class PatchEmbedding(nn.Module):
    """Cut an image into non-overlapping patches and project each to ``d_model`` (Dosovitskiy
    et al. 2021, ViT): a convolution with kernel = stride = patch size.

    Args:
        patch_size: side of a square patch, in pixels.
        in_channels: image channels.
        d_model: embedding width.
        bias: bias in the projection.
    """

    def __init__(self, patch_size: int, in_channels: int, d_model: int, bias: bool = True):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, d_model, kernel_size=patch_size, stride=patch_size, bias=bias)

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) images, H and W multiples of the patch size -> (B, N, d_model) with
        N = (H / p) * (W / p), patches in row-major order."""
        if images.dim() != 4 or images.shape[1] != self.proj.in_channels:
            raise ValueError(
                f"PatchEmbedding: images must be (B, {self.proj.in_channels}, H, W), got {tuple(images.shape)}"
            )
        H, W = images.shape[-2:]
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f"PatchEmbedding: image size {H}x{W} is not a multiple of patch_size={p}")
        x = self.proj(images)  # (B, d_model, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (B, N, d_model)


def _build_position(position, max_len: int, d_model: int, init_std: float) -> PositionalEncoding | None:
    if position is None:
        return None
    if position == "learned":
        enc = create_position("learned", max_len=max_len, d_model=d_model, init_std=init_std)
    elif position == "sinusoidal":
        enc = create_position("sinusoidal", d_model=d_model)
    elif isinstance(position, PositionalEncoding):
        enc = position
    else:
        raise ValueError(
            f"Embeddings: position must be 'learned', 'sinusoidal', None or a PositionalEncoding, "
            f"got {position!r} (RoPE, ALiBi and relative positions go to the attention layers)"
        )
    if "embed" not in enc.hooks:
        raise ValueError(f"Embeddings: position {enc.name or type(enc).__name__!r} has no 'embed' hook")
    return enc


def _check_ids(name: str, ids: Tensor, size: int, size_name: str) -> None:
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"{name} must be integer token ids, got {ids.dtype}")
    if ids.numel() == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    if hi >= size or lo < 0:
        bad = hi if hi >= size else lo
        raise ValueError(f"{name} contains id {bad}, outside [0, {size_name}={size}); "
                         "the tokenizer does not match this model?")


__all__ = ["Embeddings", "PatchEmbedding"]
