"""A GPT-style decoder-only language model (Radford et al. 2019, GPT-2).

Token embeddings plus positions, a stack of pre-norm causal :class:`TransformerBlock` s, a final
norm and a language-model head, optionally tied to the token embeddings::

    model = create("decoder")                      # the tiny preset; or Decoder(DecoderConfig(...))
    out = model(input_ids)                         # out.logits (B, L, 1000)
    ids = model.generate(input_ids, max_new_tokens=32)
    model = load_pretrained("path/to/gpt2")        # a Hugging Face GPT-2 (see hf_gpt2.py)

Positions are learned absolute vectors by default (GPT-2); "sinusoidal" is the other embedding
kind, and "rope" or "alibi" move positions into attention instead. With left padding, positions
count real tokens only, so a padded row computes what it would alone.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..attention import LayerCaches, kernel_names
from ..layers import Embeddings, TransformerBlock, activation_names, create_norm, norm_names
from ..layers.blocks import layer_head_masks
from .loss import token_loss
from .checkpoint import PretrainedModel
from .generation import GenerationMixin
from .registry import ConfigError, ModelConfig

# Positional encodings added to the token embeddings; any other name goes to the attention layers.
_EMBEDDING_POSITIONS = ("learned", "sinusoidal")


@dataclasses.dataclass
class DecoderConfig(ModelConfig):
    """Sizes and parts of a :class:`Decoder`; the defaults are GPT-2 small's.

    Args:
        vocab_size: number of token ids.
        d_model: width of the residual stream.
        num_layers: number of blocks.
        num_heads: query heads per block.
        ffn_dim: feed-forward hidden width.
        max_len: the longest sequence (learned positions have this many vectors).
        num_kv_heads: key/value heads (grouped-query attention); None means ``num_heads``.
        position: "learned", "sinusoidal" (added to embeddings), "rope" or "alibi" (in attention).
        norm: "layernorm" or "rmsnorm".
        activation: feed-forward activation ("gelu_tanh" is GPT-2's "gelu_new").
        dropout: dropout on embeddings and residual branches.
        attn_dropout: dropout on attention weights.
        bias: biases in the attention and feed-forward maps.
        eps: the norms' epsilon.
        tie_embeddings: the LM head reuses the token embedding matrix.
        init_std: standard deviation of the normal initialisation.
        kernel: attention kernel, "auto" or a registered name.
        pruned_heads: {layer: [original head indices]} removed by :meth:`Decoder.prune_heads`
            (None: none); the model is built with them removed.
    """

    family: ClassVar[str] = "decoder"

    vocab_size: int = 50257
    d_model: int = 768
    num_layers: int = 12
    num_heads: int = 12
    ffn_dim: int = 3072
    max_len: int = 1024
    num_kv_heads: int | None = None
    position: str = "learned"
    norm: str = "layernorm"
    activation: str = "gelu_tanh"
    dropout: float = 0.1
    attn_dropout: float = 0.1
    bias: bool = True
    eps: float = 1e-5
    tie_embeddings: bool = True
    init_std: float = 0.02
    kernel: str = "auto"
    pruned_heads: dict[int, list[int]] | None = None

    def build(self) -> "Decoder":
        return Decoder(self)

    @classmethod
    def tiny(cls) -> dict[str, Any]:
        return dict(vocab_size=97, d_model=32, num_layers=2, num_heads=4, ffn_dim=64, max_len=64)

    def example_inputs(self, batch_size: int = 2, seq_len: int = 6) -> dict[str, Any]:
        ids = torch.randint(0, self.vocab_size, (batch_size, seq_len))  # (B, L)
        mask = torch.ones(batch_size, seq_len, dtype=torch.long)  # (B, L)
        mask[0, seq_len // 2:] = 0  # a padded first row (generate() wants left padding instead)
        return {"input_ids": ids, "attention_mask": mask}

    def validate(self) -> None:
        for key in ("vocab_size", "d_model", "num_layers", "num_heads", "ffn_dim", "max_len"):
            val = getattr(self, key)
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ConfigError(f"DecoderConfig: {key} must be a positive int, got {val!r}")
        if self.d_model % self.num_heads:
            raise ConfigError(f"DecoderConfig: d_model={self.d_model} is not divisible by num_heads={self.num_heads}")
        if self.num_kv_heads is not None and (self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads):
            raise ConfigError(
                f"DecoderConfig: num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
            )
        positions = [*_EMBEDDING_POSITIONS, "rope", "alibi"]
        choices = (
            ("norm", self.norm, norm_names()), ("activation", self.activation, activation_names()),
            ("kernel", self.kernel, ["auto", *kernel_names()]), ("position", self.position, positions),
        )
        for key, val, known in choices:
            if val not in known:
                raise ConfigError(f"DecoderConfig: {key}={val!r} is not one of {', '.join(known)}")


@dataclasses.dataclass
class CausalLMOutput:
    """What a causal language model returns.

    Attributes:
        logits: (B, L, V) next-token logits at every input position.
        cache: the :class:`LayerCaches` passed in (updated in place), or None.
        attentions: one (B, H, L, Lk) self-attention map per layer, or None unless requested
            (Lk counts cached keys).
        last_hidden_state: (B, L, d_model) output of the last block after the final norm: what
            the LM head reads.
        hidden_states: (embeddings, layer 1, ..., layer N), each (B, L, d_model), the last one
            after the final norm, or None unless requested.
        loss, loss_sum, num_tokens: the mean and summed next-token cross-entropy and the number
            of labelled tokens, if labels were given (``logits`` is then None).
    """

    logits: Tensor | None
    cache: LayerCaches | None = None
    attentions: tuple[Tensor, ...] | None = None
    last_hidden_state: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    loss: Tensor | None = None
    loss_sum: Tensor | None = None
    num_tokens: Tensor | None = None


class Decoder(GenerationMixin, PretrainedModel):
    """Decoder-only causal language model.

    Submodules: ``embed`` (:class:`Embeddings`), ``blocks`` (``nn.ModuleList`` of
    :class:`TransformerBlock`), ``norm`` (final norm), ``lm_head`` (``nn.Linear``, no bias).

    Args:
        config: a :class:`DecoderConfig`.
    """

    def __init__(self, config: DecoderConfig):
        super().__init__()
        config.validate()
        c = self.config = config
        in_embeddings = c.position in _EMBEDDING_POSITIONS
        self.embed = Embeddings(
            c.vocab_size, c.d_model, max_len=c.max_len, position=c.position if in_embeddings else None,
            dropout=c.dropout, init_std=c.init_std,
        )
        self.blocks = nn.ModuleList(
            TransformerBlock(
                c.d_model, c.num_heads, c.ffn_dim, num_kv_heads=c.num_kv_heads, norm=c.norm, norm_first=True,
                activation=c.activation, dropout=c.dropout, attn_dropout=c.attn_dropout,
                position=None if in_embeddings else c.position, bias=c.bias, eps=c.eps, kernel=c.kernel,
            )
            for _ in range(c.num_layers)
        )
        self.norm = create_norm(c.norm, c.d_model, c.eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self._init_weights()
        if c.tie_embeddings:
            self.lm_head.weight = self.embed.token.weight
        for layer, heads in (c.pruned_heads or {}).items():
            self.blocks[layer].prune_heads(heads)

    def prune_heads(self, heads: dict[int, list[int]]) -> None:
        """Remove self-attention heads from the weights and record them in ``config.pruned_heads``.

        Args:
            heads: {layer: [original head indices]}; grouped-query attention is refused.
        """
        for layer, hs in heads.items():
            self.blocks[layer].prune_heads(hs)
        done = {i: list(b.self_attn.pruned_heads) for i, b in enumerate(self.blocks)}
        self.config = dataclasses.replace(self.config, pruned_heads={i: h for i, h in done.items() if h} or None)

    def _init_weights(self) -> None:
        """GPT-2's scheme: N(0, init_std) everywhere, zero biases, and the projections that end a
        residual branch scaled by 1/sqrt(2 * num_layers)."""
        std = self.config.init_std
        for block in self.blocks:
            for name, p in block.named_parameters():
                if p.dim() == 2:
                    branch_end = name.endswith(("out_proj.weight", "down.weight"))
                    nn.init.normal_(p, std=std / math.sqrt(2 * self.config.num_layers) if branch_end else std)
                elif name.endswith("bias") and "norm" not in name:
                    nn.init.zeros_(p)
        nn.init.normal_(self.lm_head.weight, std=std)

    def new_cache(self, capacity: int = 64) -> LayerCaches:
        """An empty KV cache for incremental decoding: one per block."""
        return LayerCaches(len(self.blocks), capacity)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        cache: LayerCaches | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        position_ids: Tensor | None = None,
        head_mask: Tensor | None = None,
        labels: Tensor | None = None,
        return_logits: bool = True,
    ) -> CausalLMOutput:
        """Next-token logits for every position.

        Args:
            input_ids: (B, n) token ids: the whole sequence, or only the new tokens with a cache.
            attention_mask: (B, past + n) 1/True for real tokens, 0 for (left) padding, covering
                the cached tokens too; None means no padding.
            cache: :class:`LayerCaches` from :meth:`new_cache`, updated in place.
            output_attentions: also return each layer's (B, H, n, past + n) attention weights.
            output_hidden_states: also return the embeddings and every layer's output.
            position_ids: (n,) or (B, n) positions; by default counted over real tokens,
                continuing after the cache.
            head_mask: float (num_layers, H) or (H,) multiplying each head's output before the
                output projection (Michel et al. 2019).
            labels: (B, n) next-token targets aligned with the positions (already shifted),
                ``IGNORE_INDEX`` (-100) where there is none: adds ``loss``, ``loss_sum`` and
                ``num_tokens`` and leaves ``logits`` None (the projection runs on labelled
                positions only). Plain cross-entropy; label smoothing lives in
                :mod:`attnlab.train.losses`.
            return_logits: project onto the vocabulary; False leaves ``logits`` None.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"Decoder: input_ids must be (B, n), got {tuple(input_ids.shape)}")
        B, n = input_ids.shape
        past = cache.length if cache is not None else 0
        if cache is not None and len(cache) != len(self.blocks):
            raise ValueError(f"Decoder: cache has {len(cache)} layers, the model {len(self.blocks)}")
        key_mask, default_pos = _padding(attention_mask, B, past, n, input_ids.device)
        if position_ids is None:
            position_ids = default_pos  # (n,) or (B, n)

        x = self.embed(input_ids, positions=position_ids if self.embed.position is not None else None)
        hidden = [x] if output_hidden_states else None
        maps = [] if output_attentions else None
        head_masks = layer_head_masks(head_mask, len(self.blocks), "Decoder")
        for i, block in enumerate(self.blocks):
            out = block(
                x, mask=key_mask, causal=True, cache=None if cache is None else cache[i],
                output_attentions=output_attentions, head_mask=head_masks[i],
            )
            x = out.hidden  # (B, n, d_model)
            if maps is not None:
                maps.append(out.self_attention)  # (B, H, n, past + n)
            if hidden is not None:
                hidden.append(x)
        x = self.norm(x)  # (B, n, d_model)
        if hidden is not None:
            hidden[-1] = x
        out = CausalLMOutput(
            logits=self.lm_head(x) if return_logits and labels is None else None,  # (B, n, V)
            cache=cache,
            attentions=None if maps is None else tuple(maps),
            last_hidden_state=x,
            hidden_states=None if hidden is None else tuple(hidden),
        )
        if labels is not None:
            out.loss_sum, out.num_tokens = token_loss(x, self.lm_head, labels)
            out.loss = out.loss_sum / out.num_tokens.clamp(min=1)
        return out


def _padding(attention_mask: Tensor | None, B: int, past: int, n: int, device) -> tuple[Tensor | None, Tensor]:
    """The key-padding mask (B, 1, 1, past + n) or None, and the default positions of the n new
    tokens: ``arange(past, past + n)``, or counted over real tokens when there is padding."""
    if attention_mask is None:
        return None, torch.arange(past, past + n, device=device)  # (n,)
    if tuple(attention_mask.shape) != (B, past + n):
        raise ValueError(
            f"Decoder: attention_mask must be (B, past + n) = {(B, past + n)} (it covers cached "
            f"tokens), got {tuple(attention_mask.shape)}"
        )
    real = attention_mask.bool()  # (B, past + n)
    pos = (real.long().cumsum(-1) - 1).clamp(min=0)[:, past:]  # (B, n)
    if bool(real.all()):
        return None, pos
    return real[:, None, None, :], pos  # (B, 1, 1, past + n)


__all__ = ["Decoder", "DecoderConfig", "CausalLMOutput"]
