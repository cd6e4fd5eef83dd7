"""A BERT-style bidirectional encoder (Devlin et al. 2019): embeddings, a stack of
:class:`~attnlab.layers.TransformerBlock` (post-norm by default, as BERT) and an optional pooler.

    model = create("encoder-tiny")
    out = model(input_ids, attention_mask=mask, output_attentions=True)
    out.last_hidden_state    # (B, L, d_model)
    out.attentions           # num_layers x (B, H, L, L)

``attention_mask`` (B, L), 1 = real token, becomes a key-padding mask: padding keys get zero
weight; padding queries are computed but meaningless.

``head_mask`` (num_layers, H) scales each head's output (Michel et al. 2019); ``prune_heads``
removes heads from the weights and records them in ``config.pruned_heads``, so a pruned model
saves and loads like any other.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..attention import kernel_names
from ..layers import Embeddings, TransformerBlock, activation_names, create_norm, norm_names
from ..layers.blocks import layer_head_masks
from .checkpoint import PretrainedModel
from .outputs import EncoderOutput
from .registry import ConfigError, ModelConfig


@dataclasses.dataclass
class EncoderConfig(ModelConfig):
    """Sizes and choices of an :class:`Encoder`.

    Args:
        vocab_size: token ids.
        d_model: hidden width.
        num_layers: transformer blocks.
        num_heads: attention heads.
        ffn_dim: feed-forward hidden width.
        max_len: learned positions.
        type_vocab_size: segment ids (0 for none).
        position: "learned" or "sinusoidal" absolute positions, or a name for attention
            ("rope", "alibi", "relative").
        norm: "layernorm" or "rmsnorm".
        norm_first: pre-norm blocks (and a final norm); BERT is post-norm.
        embed_norm: a norm after the embeddings (BERT).
        activation: feed-forward activation.
        dropout: hidden dropout.
        attn_dropout: attention-weight dropout.
        eps: norms' epsilon.
        pooler: add BERT's pooler (dense + tanh on the first token).
        pad_token_id: padding token id.
        init_std: normal init of embeddings and linear weights.
        kernel: attention kernel ("auto" or a registered name).
        pruned_heads: {layer: [original head indices]} removed by :meth:`Encoder.prune_heads`
            (None: none); the model is built with them removed.
    """

    family: ClassVar[str] = "encoder"

    vocab_size: int = 30522
    d_model: int = 768
    num_layers: int = 12
    num_heads: int = 12
    ffn_dim: int = 3072
    max_len: int = 512
    type_vocab_size: int = 2
    position: str = "learned"
    norm: str = "layernorm"
    norm_first: bool = False
    embed_norm: bool = True
    activation: str = "gelu"
    dropout: float = 0.1
    attn_dropout: float = 0.1
    eps: float = 1e-12
    pooler: bool = True
    pad_token_id: int = 0
    init_std: float = 0.02
    kernel: str = "auto"
    pruned_heads: dict[int, list[int]] | None = None

    def build(self) -> "Encoder":
        return Encoder(self)

    @classmethod
    def tiny(cls) -> dict[str, Any]:
        return dict(vocab_size=97, d_model=32, num_layers=2, num_heads=4, ffn_dim=64, max_len=64)

    def example_inputs(self, batch_size: int = 2, seq_len: int = 6) -> dict[str, Any]:
        ids = torch.randint(1, self.vocab_size, (batch_size, seq_len))  # (B, L)
        mask = torch.ones(batch_size, seq_len, dtype=torch.long)  # (B, L)
        mask[0, seq_len // 2:] = 0  # a padded first row
        return {"input_ids": ids, "attention_mask": mask}

    def validate(self) -> None:
        if self.d_model % self.num_heads:
            raise ConfigError(f"EncoderConfig: d_model={self.d_model} is not divisible by num_heads={self.num_heads}")
        for key, val, known in (("norm", self.norm, norm_names()), ("activation", self.activation, activation_names()),
                                ("kernel", self.kernel, ["auto", *kernel_names()])):
            if val not in known:
                raise ConfigError(f"EncoderConfig: {key}={val!r} is not one of {', '.join(known)}")
        for key in ("vocab_size", "d_model", "num_layers", "num_heads", "ffn_dim", "max_len"):
            if getattr(self, key) < 1:
                raise ConfigError(f"EncoderConfig: {key} must be >= 1, got {getattr(self, key)}")
        for layer, heads in (self.pruned_heads or {}).items():
            if not 0 <= layer < self.num_layers or not all(0 <= h < self.num_heads for h in heads) \
                    or len(set(heads)) >= self.num_heads:
                raise ConfigError(f"EncoderConfig: pruned_heads[{layer}]={heads} does not fit "
                                  f"num_layers={self.num_layers}, num_heads={self.num_heads} (a layer keeps >= 1 head)")


class Pooler(nn.Module):
    """BERT's pooler: ``tanh(dense(h[:, 0]))``.

    Args:
        d_model: hidden width.
    """

    def __init__(self, d_model: int):
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, d_model)


class Encoder(PretrainedModel):
    """Embeddings, ``num_layers`` bidirectional blocks and an optional pooler.

    Submodules: ``embeddings`` (:class:`~attnlab.layers.Embeddings`), ``layers``
    (``TransformerBlock`` list), ``final_norm`` (pre-norm only), ``pooler`` (or None).

    Args:
        config: an :class:`EncoderConfig`.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        config.validate()
        self.config = config
        absolute = config.position in ("learned", "sinusoidal")
        self.embeddings = Embeddings(
            config.vocab_size, config.d_model, max_len=config.max_len,
            position=config.position if absolute else None, type_vocab_size=config.type_vocab_size,
            norm=config.norm if config.embed_norm else None, eps=config.eps, dropout=config.dropout,
            padding_idx=None, init_std=config.init_std,
        )
        self.layers = nn.ModuleList(
            TransformerBlock(
                config.d_model, config.num_heads, config.ffn_dim, norm=config.norm, norm_first=config.norm_first,
                activation=config.activation, dropout=config.dropout, attn_dropout=config.attn_dropout,
                position=None if absolute else config.position, eps=config.eps, kernel=config.kernel,
            )
            for _ in range(config.num_layers)
        )
        self.final_norm = create_norm(config.norm, config.d_model, config.eps) if config.norm_first else None
        self.pooler = Pooler(config.d_model) if config.pooler else None
        self._init_linear(config.init_std)
        for layer, heads in (config.pruned_heads or {}).items():
            self.layers[layer].prune_heads(heads)

    def prune_heads(self, heads: dict[int, list[int]]) -> None:
        """Remove self-attention heads from the weights and record them in ``config.pruned_heads``.

        Args:
            heads: {layer: [original head indices]}; already pruned heads are skipped.
        """
        for layer, hs in heads.items():
            self.layers[layer].prune_heads(hs)
        done = {i: list(layer.self_attn.pruned_heads) for i, layer in enumerate(self.layers)}
        self.config = dataclasses.replace(self.config, pruned_heads={i: h for i, h in done.items() if h} or None)

    def _init_linear(self, std: float) -> None:
        """BERT's init for linear maps: N(0, std) weights, zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        head_mask: Tensor | None = None,
    ) -> EncoderOutput:
        """Encode a batch.

        Args:
            input_ids: (B, L) token ids.
            attention_mask: (B, L), 1 (or True) = real token, 0 = padding.
            token_type_ids: (B, L) segment ids; zeros when None.
            output_attentions: return every layer's (B, H, L, L) weights.
            output_hidden_states: return the embeddings and every layer's output.
            head_mask: float (num_layers, H) or (H,) multiplying each head's output before the
                output projection (1 keeps, 0 removes; Michel et al. 2019); attentions unchanged.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"Encoder: input_ids must be (B, L), got {tuple(input_ids.shape)}")
        mask = None
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(
                    f"Encoder: attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
                    f"got {tuple(attention_mask.shape)}"
                )
            keep = attention_mask.bool()  # (B, L), True = real key
            # No padding: no mask, so the fused kernels take their unmasked (faster) path.
            mask = None if bool(keep.all()) else keep[:, None, None, :]  # (B, 1, 1, L)

        x = self.embeddings(input_ids, token_type_ids)  # (B, L, d_model)
        hidden = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        head_masks = layer_head_masks(head_mask, len(self.layers), "Encoder")
        for layer, hm in zip(self.layers, head_masks):
            out = layer(x, mask=mask, output_attentions=output_attentions, head_mask=hm)
            x = out.hidden  # (B, L, d_model)
            if attentions is not None:
                attentions.append(out.self_attention)  # (B, H, L, L)
            if hidden is not None:
                hidden.append(x)
        if self.final_norm is not None:
            x = self.final_norm(x)
            if hidden is not None:
                hidden[-1] = x
        return EncoderOutput(
            last_hidden_state=x,
            pooler_output=None if self.pooler is None else self.pooler(x),
            hidden_states=None if hidden is None else tuple(hidden),
            attentions=None if attentions is None else tuple(attentions),
        )


__all__ = ["Encoder", "EncoderConfig", "Pooler"]
