"""The encoder-decoder Transformer (Vaswani et al. 2017, "Attention Is All You Need").

An encoder of self-attention blocks reads the source; a decoder of causal self-attention plus
cross-attention blocks predicts the target one token at a time::

    model = create("encoder-decoder-tiny")            # or EncoderDecoder(EncoderDecoderConfig(...))
    out = model(src_ids, tgt_in, attention_mask=src_mask)   # out.logits (B, T, V)
    ids = model.generate(src_ids, attention_mask=src_mask, max_new_tokens=20, num_beams=4)

Embeddings are scaled by sqrt(d_model) before positions are added (section 3.4); the source
and target may share one embedding matrix (``share_vocab``) and the output projection may reuse
the target embeddings (``tie_output``). ``norm_first=False`` is the paper's post-norm block.

Source positions count real tokens only, so a padded row computes what it would alone, whichever
side it is padded on. ``generate`` (the shared :mod:`generation` loop) wants left padding.
Decoding starts from ``bos_id``; self-attention keys/values are cached per step, and the
encoder's keys/values are projected once into static cross-attention caches.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..attention import LayerCaches, create_position, kernel_names
from ..layers import TransformerBlock, activation_names, create_norm
from ..layers.blocks import layer_head_masks
from .checkpoint import PretrainedModel
from .generation import GenerationMixin
from .loss import token_loss
from .outputs import Seq2SeqOutput
from .registry import ConfigError, ModelConfig


@dataclasses.dataclass
class EncoderDecoderConfig(ModelConfig):
    """Sizes and parts of an :class:`EncoderDecoder`; the defaults are the paper's base model.

    Args:
        src_vocab_size: number of source token ids.
        tgt_vocab_size: number of target token ids (equal to ``src_vocab_size`` when shared).
        share_vocab: one embedding matrix for source and target.
        d_model: width of the residual stream.
        num_encoder_layers, num_decoder_layers: blocks in each stack.
        num_heads: attention heads (self- and cross-attention).
        ffn_dim: feed-forward hidden width.
        max_len: the longest sequence (learned positions have this many vectors).
        position: "sinusoidal" (the paper) or "learned", added to the embeddings.
        norm_first: pre-norm blocks (True) or the paper's post-norm (False).
        activation: feed-forward activation ("relu" in the paper).
        dropout: dropout on embeddings and residual branches.
        attn_dropout: dropout on attention weights.
        eps: the layer norms' epsilon.
        tie_output: the output projection reuses the target embedding matrix.
        pad_id, bos_id, eos_id: special target (and source) token ids.
        kernel: attention kernel, "auto" or a registered name.
    """

    family: ClassVar[str] = "encoder_decoder"

    src_vocab_size: int = 37000
    tgt_vocab_size: int = 37000
    share_vocab: bool = True
    d_model: int = 512
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    num_heads: int = 8
    ffn_dim: int = 2048
    max_len: int = 512
    position: str = "sinusoidal"
    norm_first: bool = True
    activation: str = "relu"
    dropout: float = 0.1
    attn_dropout: float = 0.0
    eps: float = 1e-5
    tie_output: bool = True
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    kernel: str = "auto"

    @property
    def num_layers(self) -> int:
        """Depth of the decoder, the stack that makes the logits (what generic code reads)."""
        return self.num_decoder_layers

    def build(self) -> "EncoderDecoder":
        return EncoderDecoder(self)

    @classmethod
    def tiny(cls) -> dict[str, Any]:
        return dict(src_vocab_size=97, tgt_vocab_size=97, d_model=32, num_encoder_layers=2,
                    num_decoder_layers=2, num_heads=4, ffn_dim=64, max_len=64)

    def example_inputs(self, batch_size: int = 2, seq_len: int = 6) -> dict[str, Any]:
        """Source and target of ``seq_len`` tokens; row 0 of both is right-padded from the middle."""
        src = torch.randint(3, self.src_vocab_size, (batch_size, seq_len))  # (B, S)
        tgt = torch.randint(3, self.tgt_vocab_size, (batch_size, seq_len))  # (B, T)
        tgt[:, 0] = self.bos_id
        mask = torch.ones(batch_size, seq_len, dtype=torch.long)  # (B, L)
        mask[0, seq_len // 2:] = 0
        src[mask == 0], tgt[mask == 0] = self.pad_id, self.pad_id
        return {"input_ids": src, "decoder_input_ids": tgt, "attention_mask": mask,
                "decoder_attention_mask": mask.clone()}

    def validate(self) -> None:
        sizes = ("src_vocab_size", "tgt_vocab_size", "d_model", "num_encoder_layers", "num_decoder_layers",
                 "num_heads", "ffn_dim", "max_len")
        for key in sizes:
            val = getattr(self, key)
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ConfigError(f"EncoderDecoderConfig: {key} must be a positive int, got {val!r}")
        if self.d_model % self.num_heads:
            raise ConfigError(
                f"EncoderDecoderConfig: d_model={self.d_model} is not divisible by num_heads={self.num_heads}"
            )
        if self.share_vocab and self.src_vocab_size != self.tgt_vocab_size:
            raise ConfigError(
                f"EncoderDecoderConfig: share_vocab needs src_vocab_size == tgt_vocab_size, got "
                f"{self.src_vocab_size} and {self.tgt_vocab_size}"
            )
        vocab = min(self.src_vocab_size, self.tgt_vocab_size)
        for key in ("pad_id", "bos_id", "eos_id"):
            val = getattr(self, key)
            if not isinstance(val, int) or not 0 <= val < vocab:
                raise ConfigError(f"EncoderDecoderConfig: {key}={val!r} is outside [0, {vocab})")
        choices = (
            ("position", self.position, ["sinusoidal", "learned"]),
            ("activation", self.activation, activation_names()),
            ("kernel", self.kernel, ["auto", *kernel_names()]),
        )
        for key, val, known in choices:
            if val not in known:
                raise ConfigError(f"EncoderDecoderConfig: {key}={val!r} is not one of {', '.join(known)}")


class EncoderDecoder(GenerationMixin, PretrainedModel):
    """Encoder-decoder Transformer.

    Submodules: ``src_embed`` / ``tgt_embed`` (``nn.Embedding``, the same module when
    ``share_vocab``), ``src_position`` / ``tgt_position``, ``encoder`` and ``decoder``
    (``nn.ModuleList`` of :class:`TransformerBlock`), ``encoder_norm`` / ``decoder_norm`` (pre-norm
    only, else None), ``lm_head`` (``nn.Linear``, no bias).

    Args:
        config: an :class:`EncoderDecoderConfig`.
    """

    def __init__(self, config: EncoderDecoderConfig):
        super().__init__()
        config.validate()
        c = self.config = config
        self.src_embed = nn.Embedding(c.src_vocab_size, c.d_model, padding_idx=c.pad_id)
        self.tgt_embed = (self.src_embed if c.share_vocab
                          else nn.Embedding(c.tgt_vocab_size, c.d_model, padding_idx=c.pad_id))
        self.src_position = _position(c)
        self.tgt_position = _position(c)
        self.dropout = nn.Dropout(c.dropout)

        def block(cross: bool) -> TransformerBlock:
            return TransformerBlock(
                c.d_model, c.num_heads, c.ffn_dim, norm_first=c.norm_first, activation=c.activation,
                dropout=c.dropout, attn_dropout=c.attn_dropout, cross_attention=cross, eps=c.eps,
                kernel=c.kernel,
            )

        self.encoder = nn.ModuleList(block(False) for _ in range(c.num_encoder_layers))
        self.decoder = nn.ModuleList(block(True) for _ in range(c.num_decoder_layers))
        # A pre-norm stack ends un-normalised; post-norm blocks already end in a norm.
        self.encoder_norm = create_norm("layernorm", c.d_model, c.eps) if c.norm_first else None
        self.decoder_norm = create_norm("layernorm", c.d_model, c.eps) if c.norm_first else None
        self.lm_head = nn.Linear(c.d_model, c.tgt_vocab_size, bias=False)
        self._init_weights()
        if c.tie_output:
            self.lm_head.weight = self.tgt_embed.weight

    def _init_weights(self) -> None:
        """Xavier-uniform matrices and zero biases in the blocks; embeddings N(0, d_model^-1/2),
        so that after the sqrt(d_model) scale they have unit variance (as fairseq's Transformer)."""
        for stack in (self.encoder, self.decoder):
            for name, p in stack.named_parameters():
                if p.dim() == 2:
                    nn.init.xavier_uniform_(p)
                elif name.endswith("bias") and "norm" not in name:
                    nn.init.zeros_(p)
        std = self.config.d_model ** -0.5
        for emb in {self.src_embed, self.tgt_embed}:
            nn.init.normal_(emb.weight, std=std)
            with torch.no_grad():
                emb.weight[self.config.pad_id].zero_()
        nn.init.normal_(self.lm_head.weight, std=std)

    # ------------------------------------------------------------------ encoder

    def encode(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        head_mask: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor, ...] | None, tuple[Tensor, ...] | None]:
        """Run the encoder.

        Args:
            input_ids: (B, S) source ids.
            attention_mask: (B, S) 1/True for real tokens, 0 for padding (either side); None = none.
            output_attentions: also return each layer's (B, H, S, S) weights.
            output_hidden_states: also return (embeddings, layer 1, ..., layer N), each (B, S, d).
            head_mask: float (num_encoder_layers, H) or (H,) scaling each encoder head's output.

        Returns:
            ``(memory, attentions, hidden_states)``: memory (B, S, d_model), the others or None.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"EncoderDecoder: input_ids must be (B, S), got {tuple(input_ids.shape)}")
        key_mask, positions = _source_padding(attention_mask, input_ids)
        x = self._embed(self.src_embed, self.src_position, input_ids, positions)  # (B, S, d)
        maps = [] if output_attentions else None
        hidden = [x] if output_hidden_states else None
        for block, hm in zip(self.encoder, layer_head_masks(head_mask, len(self.encoder), "EncoderDecoder")):
            out = block(x, mask=key_mask, output_attentions=output_attentions, head_mask=hm)
            x = out.hidden  # (B, S, d)
            if maps is not None:
                maps.append(out.self_attention)  # (B, H, S, S)
            if hidden is not None:
                hidden.append(x)
        if self.encoder_norm is not None:
            x = self.encoder_norm(x)
            if hidden is not None:
                hidden[-1] = x
        return x, _tuple(maps), _tuple(hidden)

    # ------------------------------------------------------------------ decoder

    def decode(
        self,
        decoder_input_ids: Tensor,
        memory: Tensor | None,
        memory_mask: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        cache: LayerCaches | None = None,
        cross_cache: LayerCaches | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_logits: bool = True,
        head_mask: Tensor | None = None,
        cross_attn_head_mask: Tensor | None = None,
    ) -> Seq2SeqOutput:
        """Run the decoder over target tokens (the encoder fields of the result are left None).

        Args:
            decoder_input_ids: (B, n) target ids: all of them, or only the new ones with a cache.
            memory: (B, S, d_model) encoder output; may be None once ``cross_cache`` is filled.
            memory_mask: (B, S) bool, True for real source tokens; None = no padding.
            decoder_attention_mask: (B, n) 1 for real target tokens, 0 for right padding; only
                without a cache.
            cache: self-attention :class:`LayerCaches` (dynamic), updated in place.
            cross_cache: cross-attention :class:`LayerCaches` (static), filled on first use.
            output_attentions, output_hidden_states: as in :meth:`forward`.
            return_logits: project onto the vocabulary (False leaves ``logits`` None).
            head_mask: float (num_decoder_layers, H) or (H,) scaling each decoder self-attention
                head's output (Michel et al. 2019).
            cross_attn_head_mask: the same for the cross-attention heads.
        """
        if decoder_input_ids.dim() != 2:
            raise ValueError(
                f"EncoderDecoder: decoder_input_ids must be (B, T), got {tuple(decoder_input_ids.shape)}"
            )
        B, n = decoder_input_ids.shape
        past = cache.length if cache is not None else 0
        tgt_mask = None
        if decoder_attention_mask is not None:
            if cache is not None:
                raise ValueError("EncoderDecoder: decoder_attention_mask is not supported with a cache")
            if tuple(decoder_attention_mask.shape) != (B, n):
                raise ValueError(f"EncoderDecoder: decoder_attention_mask must be {(B, n)}, "
                                 f"got {tuple(decoder_attention_mask.shape)}")
            if not bool(decoder_attention_mask.bool().all()):
                tgt_mask = decoder_attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        positions = torch.arange(past, past + n, device=decoder_input_ids.device)  # (n,)
        x = self._embed(self.tgt_embed, self.tgt_position, decoder_input_ids, positions)  # (B, n, d)
        self_maps, cross_maps = ([], []) if output_attentions else (None, None)
        hidden = [x] if output_hidden_states else None
        n_layers = len(self.decoder)
        self_masks = layer_head_masks(head_mask, n_layers, "EncoderDecoder")
        cross_masks = layer_head_masks(cross_attn_head_mask, n_layers, "EncoderDecoder")
        for i, block in enumerate(self.decoder):
            out = block(
                x, mask=tgt_mask, causal=True, cache=None if cache is None else cache[i],
                memory=memory, memory_mask=memory_mask, cross_cache=None if cross_cache is None else cross_cache[i],
                output_attentions=output_attentions, head_mask=self_masks[i], cross_head_mask=cross_masks[i],
            )
            x = out.hidden  # (B, n, d)
            if self_maps is not None:
                self_maps.append(out.self_attention)  # (B, H, n, past + n)
                cross_maps.append(out.cross_attention)  # (B, H, n, S)
            if hidden is not None:
                hidden.append(x)
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
            if hidden is not None:
                hidden[-1] = x
        return Seq2SeqOutput(
            logits=self.lm_head(x) if return_logits else None,  # (B, n, V)
            last_hidden_state=x,
            decoder_attentions=_tuple(self_maps),
            cross_attentions=_tuple(cross_maps),
            decoder_hidden_states=_tuple(hidden),
        )

    def forward(
        self,
        input_ids: Tensor,
        decoder_input_ids: Tensor,
        attention_mask: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        labels: Tensor | None = None,
        return_logits: bool = True,
        head_mask: Tensor | None = None,
        decoder_head_mask: Tensor | None = None,
        cross_attn_head_mask: Tensor | None = None,
    ) -> Seq2SeqOutput:
        """Next-token logits for every target position (teacher forcing), or the loss.

        Args:
            input_ids: (B, S) source ids.
            decoder_input_ids: (B, T) target ids, starting with ``bos_id`` (the target shifted right).
            attention_mask: (B, S) 1 for real source tokens, 0 for padding.
            decoder_attention_mask: (B, T) 1 for real target tokens, 0 for (right) padding.
            output_attentions: also return encoder, decoder and cross-attention weights.
            output_hidden_states: also return every layer's output of both stacks.
            labels: (B, T) next-token targets, ``IGNORE_INDEX`` (-100) at padding: the output then
                carries ``loss`` / ``loss_sum`` / ``num_tokens`` and no ``logits``, the projection
                having run on labelled positions only. Right-padded targets need no
                ``decoder_attention_mask``: under the causal mask no real position sees them.
                (Plain cross-entropy; training losses such as label smoothing live in
                :mod:`attnlab.train.losses`.)
            return_logits: project onto the vocabulary; False leaves ``logits`` None, for a
                loss that projects only the positions it needs (``last_hidden_state`` + ``lm_head``).
            head_mask: float (num_encoder_layers, H) or (H,) scaling each encoder head's output
                before the output projection (Michel et al. 2019; Hugging Face's names).
            decoder_head_mask: the same for the decoder's self-attention heads.
            cross_attn_head_mask: the same for the decoder's cross-attention heads.
        """
        memory, enc_maps, enc_hidden = self.encode(
            input_ids, attention_mask, output_attentions, output_hidden_states, head_mask=head_mask,
        )
        out = self.decode(
            decoder_input_ids, memory, _memory_mask(attention_mask), decoder_attention_mask,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            return_logits=return_logits and labels is None, head_mask=decoder_head_mask, cross_attn_head_mask=cross_attn_head_mask,
        )
        if labels is not None:
            out.loss_sum, out.num_tokens = token_loss(out.last_hidden_state, self.lm_head, labels)
            out.loss = out.loss_sum / out.num_tokens.clamp(min=1)
        out.encoder_last_hidden_state = memory  # (B, S, d)
        out.encoder_attentions, out.encoder_hidden_states = enc_maps, enc_hidden
        return out

    def _embed(self, table: nn.Embedding, position, ids: Tensor, positions: Tensor) -> Tensor:
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= table.num_embeddings):
            raise ValueError(f"EncoderDecoder: token ids must lie in [0, {table.num_embeddings}), "
                             f"got {int(ids.min())}..{int(ids.max())}")
        x = table(ids) * math.sqrt(self.config.d_model)  # (B, L, d), section 3.4
        return self.dropout(position.embed(x, positions))  # (B, L, d)

    # ------------------------------------------------------------------ generation

    def begin_decoding(self, input_ids: Tensor, attention_mask: Tensor | None, use_cache: bool) -> "Seq2SeqState":
        """Encode the source once; decoding starts from ``bos_id`` (see :mod:`generation`)."""
        return Seq2SeqState(self, input_ids, attention_mask, use_cache)


class Seq2SeqState:
    """Decoding state of an :class:`EncoderDecoder`: the encoder output, the target so far and
    (with ``use_cache``) a self-attention KV cache plus static cross-attention caches.

    Args:
        model: the encoder-decoder.
        input_ids: (B, S) source ids.
        attention_mask: (B, S) 1 for real source tokens; None if no padding.
        use_cache: cache keys/values; without, every step reruns the decoder on the whole prefix.
    """

    def __init__(self, model: EncoderDecoder, input_ids: Tensor, attention_mask: Tensor | None, use_cache: bool):
        self.model = model
        self.memory, _, _ = model.encode(input_ids, attention_mask)  # (B, S, d)
        self.memory_mask = _memory_mask(attention_mask)  # (B, S) or None
        B = input_ids.shape[0]
        self.tokens = input_ids.new_full((B, 1), model.config.bos_id)  # (B, 1)
        n = len(model.decoder)
        self.cache = LayerCaches(n) if use_cache else None
        self.cross_cache = LayerCaches(n, static=True) if use_cache else None
        self._seen = self.tokens[:, :0]  # (B, 0)

    def advance(self, new_tokens: Tensor) -> Tensor:
        self._seen = torch.cat([self._seen, new_tokens], dim=1)  # (B, T)
        if self.cache is None:
            out = self.model.decode(self._seen, self.memory, self.memory_mask)
        else:
            memory = None if self.cross_cache[0].filled else self.memory  # projected once
            out = self.model.decode(new_tokens, memory, self.memory_mask, cache=self.cache,
                                    cross_cache=self.cross_cache)
        return out.logits[:, -1]  # (B, V)

    def reorder(self, indices: Tensor) -> None:
        self._seen = self._seen.index_select(0, indices)
        self.tokens = self.tokens.index_select(0, indices)
        self.memory = self.memory.index_select(0, indices)
        if self.memory_mask is not None:
            self.memory_mask = self.memory_mask.index_select(0, indices)
        if self.cache is not None:
            self.cache.reorder(indices)
            self.cross_cache.reorder(indices)


def _position(c: EncoderDecoderConfig):
    if c.position == "learned":
        return create_position("learned", max_len=c.max_len, d_model=c.d_model, init_std=c.d_model ** -0.5)
    return create_position("sinusoidal", d_model=c.d_model)


def _source_padding(attention_mask: Tensor | None, input_ids: Tensor) -> tuple[Tensor | None, Tensor]:
    """Key-padding mask (B, 1, 1, S) or None, and positions counted over real tokens (B, S)."""
    B, S = input_ids.shape
    if attention_mask is None:
        return None, torch.arange(S, device=input_ids.device)  # (S,)
    if tuple(attention_mask.shape) != (B, S):
        raise ValueError(f"EncoderDecoder: attention_mask must be {(B, S)}, got {tuple(attention_mask.shape)}")
    real = attention_mask.bool()  # (B, S)
    positions = (real.long().cumsum(-1) - 1).clamp(min=0)  # (B, S)
    return (None if bool(real.all()) else real[:, None, None, :]), positions


def _memory_mask(attention_mask: Tensor | None) -> Tensor | None:
    """(B, S) bool key padding for cross-attention, or None when nothing is padded."""
    if attention_mask is None or bool(attention_mask.bool().all()):
        return None
    return attention_mask.bool()


def _tuple(xs: list | None) -> tuple | None:
    return None if xs is None else tuple(xs)


__all__ = ["EncoderDecoder", "EncoderDecoderConfig", "Seq2SeqState"]
