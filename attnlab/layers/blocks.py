"""The transformer block: self-attention, optional cross-attention and a feed-forward network,
each in a residual branch, with the norm before (pre-norm) or after (post-norm) the branch.

    post-norm (Vaswani et al. 2017; BERT):  x = norm(x + dropout(sublayer(x)))
    pre-norm  (GPT-2, Llama):               x = x + dropout(sublayer(norm(x)))

A pre-norm stack needs a final norm after its last block; that belongs to the model.

    block = TransformerBlock(512, 8, 2048, norm="rmsnorm", activation="swiglu", position="rope")
    out = block(x, causal=True, output_attentions=True)
    out.hidden            # (B, L, 512)
    out.self_attention    # (B, 8, L, L)

Attention is :class:`attnlab.attention.MultiHeadAttention`: masks follow its convention (bool,
True = may attend). ``output_attentions`` works on every kernel: ``auto`` picks ``chunked``, which
returns exact weights, and a block built with a kernel that cannot return weights (``sdpa``,
``flex``) runs ``chunked`` for that call, with a warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor, nn

from ..attention import KVCache, MultiHeadAttention, PositionalEncoding, get_kernel
from ..attention.kernels import AttentionRequest
from ..attention.masks import MaskMod
from .feedforward import Activation, FeedForward
from .norm import NormFactory, create_norm


@dataclass
class BlockOutput:
    """What :class:`TransformerBlock` returns.

    Attributes:
        hidden: (B, L, d_model) output of the block.
        self_attention: (B, H, L, Lk) self-attention weights, or None unless requested
            (Lk counts cached keys).
        cross_attention: (B, H, L, Lm) cross-attention weights, or None.
    """

    hidden: Tensor
    self_attention: Tensor | None = None
    cross_attention: Tensor | None = None


class TransformerBlock(nn.Module):
    """One transformer layer, encoder or decoder.

    Submodules: ``self_attn``, ``attn_norm``; with cross-attention ``cross_attn``,
    ``cross_norm``; ``ffn`` (:class:`FeedForward`: ``up``, ``down``, ``gate``), ``ffn_norm``.

    Args:
        d_model: width of the residual stream.
        num_heads: query heads.
        ffn_dim: hidden width of the feed-forward network.
        num_kv_heads: key/value heads of self-attention (grouped-query attention); defaults to
            ``num_heads``.
        norm: "layernorm", "rmsnorm" (see :func:`attnlab.layers.norm_names`) or a factory
            ``(dim, eps) -> Module``.
        norm_first: pre-norm (True) or post-norm (False, as BERT and the original Transformer).
        activation: feed-forward activation: "relu", "gelu", "gelu_tanh", "swiglu", ... or a
            callable.
        dropout: dropout on each residual branch (and inside the feed-forward output).
        attn_dropout: dropout on the attention weights.
        cross_attention: add a cross-attention sublayer over ``memory`` (decoder of an
            encoder-decoder model).
        position: a positional encoding for self-attention, by name or instance; only its
            ``rotate`` (RoPE) and ``bias`` (ALiBi, relative) hooks apply here.
        bias: biases in the attention and feed-forward linear maps.
        eps: the norms' epsilon.
        kernel: attention kernel, "auto" or a registered name.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        ffn_dim: int,
        *,
        num_kv_heads: int | None = None,
        norm: str | NormFactory = "layernorm",
        norm_first: bool = True,
        activation: str | Activation = "gelu",
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        cross_attention: bool = False,
        position: str | PositionalEncoding | None = None,
        bias: bool = True,
        eps: float = 1e-5,
        kernel: str = "auto",
    ):
        super().__init__()
        self.d_model = d_model
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(
            d_model, num_heads, num_kv_heads=num_kv_heads, bias=bias, dropout=attn_dropout,
            position=position, kernel=kernel,
        )
        self.attn_norm = create_norm(norm, d_model, eps)
        if cross_attention:
            self.cross_attn = MultiHeadAttention(
                d_model, num_heads, bias=bias, dropout=attn_dropout, kernel=kernel,
            )
            self.cross_norm = create_norm(norm, d_model, eps)
        else:
            self.cross_attn = self.cross_norm = None
        self.ffn = FeedForward(d_model, ffn_dim, activation, dropout=dropout, bias=bias)
        self.ffn_norm = create_norm(norm, d_model, eps)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        *,
        mask: Tensor | None = None,
        mask_mod: MaskMod | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cross_cache: KVCache | None = None,
        output_attentions: bool = False,
        head_mask: Tensor | None = None,
        cross_head_mask: Tensor | None = None,
    ) -> BlockOutput:
        """Run the block.

        Args:
            x: (B, L, d_model).
            mask: self-attention mask, bool, True = may attend, broadcastable to (B, H, L, Lk)
                (Lk counts cached keys); a (B, Lk) mask is key padding.
            mask_mod: self-attention ``mask_mod(b, h, q_idx, kv_idx) -> bool``.
            causal: causal self-attention (cached keys all come before).
            cache: self-attention :class:`KVCache`, updated in place (incremental decoding).
            memory: (B, Lm, d_model) encoder states for cross-attention.
            memory_mask: bool, True = may attend: (B, Lm) key padding or broadcastable to
                (B, H, L, Lm).
            cross_cache: a static :class:`KVCache` for the projected memory; once filled,
                ``memory`` may be None.
            output_attentions: return the attention weights.
            head_mask: float (H,) or (B, H) multiplying each self-attention head's output
                (Michel et al. 2019); see :class:`MultiHeadAttention`.
            cross_head_mask: the same for the cross-attention heads.
        """
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"TransformerBlock: x must be (B, L, d_model={self.d_model}), got {tuple(x.shape)}")
        h = self.attn_norm(x) if self.norm_first else x
        sa = self.self_attn(
            h, mask=mask, mask_mod=mask_mod, causal=causal, cache=cache, return_weights=output_attentions,
            kernel=_weights_kernel(self.self_attn.kernel) if output_attentions else None, head_mask=head_mask,
        )
        x = self._residual(x, sa.out, self.attn_norm)  # (B, L, d_model)

        ca = None
        if self.cross_attn is not None:
            ca = self._cross(x, memory, memory_mask, cross_cache, output_attentions, cross_head_mask)
            x = self._residual(x, ca.out, self.cross_norm)  # (B, L, d_model)
        elif memory is not None or cross_cache is not None or cross_head_mask is not None:
            raise ValueError("TransformerBlock: memory was given but the block has no cross-attention "
                             "(build it with cross_attention=True)")

        h = self.ffn_norm(x) if self.norm_first else x
        x = self._residual(x, self.ffn(h), self.ffn_norm, dropout=False)  # (B, L, d_model)
        return BlockOutput(
            hidden=x, self_attention=sa.weights, cross_attention=None if ca is None else ca.weights,
        )

    def _residual(self, x: Tensor, branch: Tensor, norm: nn.Module, dropout: bool = True) -> Tensor:
        """``x + branch`` (pre-norm) or ``norm(x + branch)`` (post-norm), branch dropped out."""
        if dropout:
            branch = self.dropout(branch)  # the feed-forward drops out its own output
        return x + branch if self.norm_first else norm(x + branch)

    def _cross(self, x, memory, memory_mask, cross_cache, output_attentions, head_mask=None):
        reuse = cross_cache is not None and cross_cache.filled
        if memory is None and not reuse:
            raise ValueError("TransformerBlock: cross-attention needs memory= (B, Lm, d_model) "
                             "or a filled cross_cache=")
        if cross_cache is not None and not cross_cache.is_static:
            raise ValueError("TransformerBlock: cross_cache must be a static KVCache (KVCache(static=True))")
        h = self.cross_norm(x) if self.norm_first else x
        kpm = None
        B = x.shape[0]
        if memory_mask is not None and memory_mask.dim() == 2:
            Lm = cross_cache.length if reuse else memory.shape[1]
            if tuple(memory_mask.shape) != (B, Lm):
                raise ValueError(
                    f"TransformerBlock: a 2-D memory_mask must be (B, Lm) = {(B, Lm)}, "
                    f"got {tuple(memory_mask.shape)}"
                )
            kpm, memory_mask = memory_mask, None
        # Under a filled static cache the key is ignored; pass h so shapes check out.
        key = memory if memory is not None else h
        return self.cross_attn(
            h, key, key, mask=memory_mask, key_padding_mask=kpm, cache=cross_cache,
            return_weights=output_attentions,
            kernel=_weights_kernel(self.cross_attn.kernel) if output_attentions else None, head_mask=head_mask,
        )

    def prune_heads(self, heads) -> None:
        """Remove self-attention heads (original indices) from the weights; see
        :meth:`MultiHeadAttention.prune_heads`."""
        self.self_attn.prune_heads(heads)

    def extra_repr(self) -> str:
        return f"norm_first={self.norm_first}, cross_attention={self.cross_attn is not None}"


def layer_head_masks(head_mask: Tensor | None, num_layers: int, where: str = "model") -> list[Tensor | None]:
    """One head mask per layer from a model-level one (Hugging Face's convention).

    Args:
        head_mask: None, (H,) for every layer, or (num_layers, H) / (num_layers, B, H), float,
            0 removes a head.
        num_layers: layers in the stack.
        where: the caller, for error messages.
    """
    if head_mask is None:
        return [None] * num_layers
    if head_mask.dim() == 1:
        return [head_mask] * num_layers
    if head_mask.shape[0] != num_layers:
        raise ValueError(f"{where}: head_mask must be (H,) or (num_layers={num_layers}, H), "
                         f"got {tuple(head_mask.shape)}")
    return list(head_mask.unbind(0))


WEIGHTS_KERNEL = "chunked"  # exact weights, linear extra memory


def _weights_kernel(kernel: str) -> str | None:
    """The kernel to run when weights are requested: None keeps the module's own, unless that
    kernel cannot return weights; then :data:`WEIGHTS_KERNEL`, with a warning."""
    if kernel == "auto" or not _cannot_return_weights(kernel):
        return None
    warnings.warn(
        f"kernel {kernel!r} cannot return attention weights; output_attentions=True runs "
        f"{WEIGHTS_KERNEL!r} for this call", stacklevel=4,
    )
    return WEIGHTS_KERNEL


@lru_cache(maxsize=None)
def _cannot_return_weights(kernel: str) -> bool:
    """Whether ``kernel`` refuses a request only because it asks for weights (probed once)."""
    k = get_kernel(kernel)
    t = torch.zeros(1, 1, 1, 1)
    probe = dict(q=t, k=t, v=t, mask=None, bias=None, score_mod=None, mask_mod=None, scale=1.0, dropout_p=0.0)
    return (k.unsupported(AttentionRequest(**probe, return_weights=True)) is not None
            and k.unsupported(AttentionRequest(**probe, return_weights=False)) is None)


__all__ = ["TransformerBlock", "BlockOutput", "layer_head_masks"]
