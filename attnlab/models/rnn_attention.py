"""Recurrent models with attention: a seq2seq encoder-decoder and a BiLSTM tagger.

* :class:`RNNSeq2Seq`: a bidirectional GRU/LSTM encoder and a unidirectional decoder that
  attends over the encoder states at every step, with Bahdanau's additive attention
  (Bahdanau et al. 2015: the query is the previous decoder state, the context feeds the RNN) or
  Luong's multiplicative attention (Luong et al. 2015: the query is the new state, with input
  feeding of the attentional vector ``h̃ = tanh(W [c; h])``)::

      model = create("rnn-attention-tiny")
      out = model(input_ids, decoder_input_ids, attention_mask=mask, output_attentions=True)
      out.logits           # (B, T, V)
      out.attentions[0]    # (B, T, S): each step's weights over the source, 0 on padding
      ids = model.generate(input_ids, max_new_tokens=10, bos_id=1, eos_id=2)   # (B, <= 10)

* :class:`BiLSTMTagger`: a BiLSTM over the tokens, multi-head self-attention over its states
  (the SRL-style tagger; cf. Tan et al. 2018) and per-token logits from ``[h; attended]``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..attention import attend
from ..layers import BahdanauAttention, LuongAttention
from .checkpoint import PretrainedModel
from .loss import token_loss
from .outputs import Seq2SeqRNNOutput, TokenClassifierOutput
from .registry import ConfigError, ModelConfig

_CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


def _check_positive(name: str, cfg: ModelConfig, keys: tuple[str, ...]) -> None:
    for key in keys:
        val = getattr(cfg, key)
        if not isinstance(val, int) or isinstance(val, bool) or val < 1:
            raise ConfigError(f"{name}: {key} must be a positive int, got {val!r}")


def _example_ids(vocab_size: int, batch_size: int, seq_len: int, low: int) -> tuple[Tensor, Tensor]:
    ids = torch.randint(low, vocab_size, (batch_size, seq_len))  # (B, L)
    mask = torch.ones(batch_size, seq_len, dtype=torch.long)  # (B, L)
    mask[0, seq_len // 2:] = 0  # a padded first row
    return ids, mask


def _encode(rnn: nn.RNNBase, x: Tensor, mask: Tensor | None) -> Tensor:
    """Run a (bidirectional) RNN over (B, L, E) ``x``; padded steps are skipped and output zeros."""
    if mask is None:
        return rnn(x)[0]  # (B, L, D)
    lengths = mask.sum(dim=1).clamp(min=1).cpu()  # (B,)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, _ = rnn(packed)
    return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]  # (B, L, D)


# ============================================================================ seq2seq


@dataclasses.dataclass
class RNNSeq2SeqConfig(ModelConfig):
    """Sizes and choices of an :class:`RNNSeq2Seq`.

    Args:
        src_vocab_size: source token ids.
        tgt_vocab_size: target token ids.
        embed_dim: token embedding width (source and target).
        hidden_dim: decoder state width; the bidirectional encoder has ``hidden_dim`` per direction.
        num_layers: layers of the encoder and of the decoder RNN.
        cell: "gru" or "lstm".
        attention: "bahdanau" (additive) or "luong" (multiplicative, with input feeding).
        dropout: dropout on embeddings and before the output layer.
        pad_token_id: padding id of source and target.
    """

    family: ClassVar[str] = "rnn_seq2seq"
    attention_normalised: ClassVar[bool] = True

    src_vocab_size: int = 8000
    tgt_vocab_size: int = 8000
    embed_dim: int = 256
    hidden_dim: int = 512
    num_layers: int = 1
    cell: str = "gru"
    attention: str = "bahdanau"
    dropout: float = 0.1
    pad_token_id: int = 0

    def build(self) -> "RNNSeq2Seq":
        return RNNSeq2Seq(self)

    @classmethod
    def tiny(cls) -> dict[str, Any]:
        return dict(src_vocab_size=23, tgt_vocab_size=23, embed_dim=16, hidden_dim=32, num_layers=1)

    def example_inputs(self, batch_size: int = 2, seq_len: int = 6) -> dict[str, Any]:
        src, mask = _example_ids(self.src_vocab_size, batch_size, seq_len, low=1)
        tgt = torch.randint(1, self.tgt_vocab_size, (batch_size, seq_len))  # (B, T)
        return {"input_ids": src, "attention_mask": mask, "decoder_input_ids": tgt}

    def attention_shapes(self, batch_size: int = 2, seq_len: int = 6) -> list[tuple[int, ...]]:
        """Shapes of ``attentions`` for :meth:`example_inputs` (used by the registry's smoke test)."""
        return [(batch_size, seq_len, seq_len)]

    def validate(self) -> None:
        _check_positive("RNNSeq2SeqConfig", self, ("src_vocab_size", "tgt_vocab_size", "embed_dim", "hidden_dim",
                                                   "num_layers"))
        choices = (("cell", self.cell, tuple(_CELLS)), ("attention", self.attention, ("bahdanau", "luong")))
        for key, val, known in choices:
            if val not in known:
                raise ConfigError(f"RNNSeq2SeqConfig: {key}={val!r} is not one of {', '.join(known)}")


class RNNSeq2Seq(PretrainedModel):
    """Encoder-decoder RNN with attention over the source.

    Submodules: ``src_embed``, ``tgt_embed``, ``encoder`` (bidirectional RNN), ``bridge``
    (masked mean of encoder states -> initial decoder state), ``decoder`` (RNN run one step at
    a time), ``attn`` (:class:`BahdanauAttention` or :class:`LuongAttention`), ``combine``
    (Luong's ``W_c``, else None), ``out`` (``nn.Linear`` to the target vocabulary).

    Args:
        config: an :class:`RNNSeq2SeqConfig`.
    """

    def __init__(self, config: RNNSeq2SeqConfig):
        super().__init__()
        config.validate()
        self.config = config
        E, D, n = config.embed_dim, config.hidden_dim, config.num_layers
        rnn = _CELLS[config.cell]
        self.src_embed = nn.Embedding(config.src_vocab_size, E, padding_idx=config.pad_token_id)
        self.tgt_embed = nn.Embedding(config.tgt_vocab_size, E, padding_idx=config.pad_token_id)
        self.encoder = rnn(E, D, num_layers=n, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(2 * D, D)
        self.dropout = nn.Dropout(config.dropout)
        if config.attention == "bahdanau":
            self.attn = BahdanauAttention(query_dim=D, key_dim=2 * D, attn_dim=D)
            self.decoder = rnn(E + 2 * D, D, num_layers=n, batch_first=True)  # input [y; c]
            self.combine = None
            out_in = D + 2 * D + E  # [s; c; y] (Bahdanau's deep output, without maxout)
        else:
            self.attn = LuongAttention(query_dim=D, key_dim=2 * D, score="general")  # s W h: widths differ
            self.decoder = rnn(E + D, D, num_layers=n, batch_first=True)  # input [y; h̃_prev]
            self.combine = nn.Linear(2 * D + D, D, bias=False)  # h̃ = tanh(W_c [c; h])
            out_in = D
        self.out = nn.Linear(out_in, config.tgt_vocab_size)

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None):
        """Encoder states (B, S, 2D), the bool key mask (B, S) and the initial decoder state."""
        mask = None if attention_mask is None else attention_mask.bool()
        states = _encode(self.encoder, self.dropout(self.src_embed(input_ids)), mask)  # (B, S, 2D)
        if mask is None:
            pooled = states.mean(dim=1)  # (B, 2D)
        else:
            m = mask.unsqueeze(-1).to(states.dtype)  # (B, S, 1)
            pooled = (states * m).sum(1) / m.sum(1).clamp(min=1)  # (B, 2D)
        h0 = torch.tanh(self.bridge(pooled)).unsqueeze(0).repeat(self.config.num_layers, 1, 1)  # (n, B, D)
        state = (h0, torch.zeros_like(h0)) if self.config.cell == "lstm" else h0
        feed = states.new_zeros(states.shape[0], self.config.hidden_dim)  # Luong's h̃_0 (B, D)
        return states, mask, (state, feed)

    def step(self, y: Tensor, memory: Tensor, mask: Tensor | None, carry):
        """One decoder step: token ids ``y`` (B,) -> logits (B, V), weights (B, S), new carry."""
        state, feed = carry
        emb = self.dropout(self.tgt_embed(y))  # (B, E)
        if self.combine is None:  # Bahdanau: attend from the previous state, then step
            top = (state[0] if isinstance(state, tuple) else state)[-1]  # (B, D)
            res = self.attn(top, memory, mask=mask)  # context (B, 2D), weights (B, S)
            h, state = self.decoder(torch.cat((emb, res.context), -1).unsqueeze(1), state)
            h = h.squeeze(1)  # (B, D)
            features = torch.cat((h, res.context, emb), -1)  # (B, 3D + E)
        else:  # Luong: step (input feeding), then attend from the new state
            h, state = self.decoder(torch.cat((emb, feed), -1).unsqueeze(1), state)
            h = h.squeeze(1)  # (B, D)
            res = self.attn(h, memory, mask=mask)  # context (B, 2D), weights (B, S)
            features = feed = torch.tanh(self.combine(torch.cat((res.context, h), -1)))  # (B, D)
        return self.out(self.dropout(features)), res.weights, (state, feed)

    def forward(self, input_ids: Tensor, decoder_input_ids: Tensor, attention_mask: Tensor | None = None,
                output_attentions: bool = False, labels: Tensor | None = None) -> Seq2SeqRNNOutput:
        """Teacher-forced logits.

        Args:
            input_ids: (B, S) source ids.
            decoder_input_ids: (B, T) target ids shifted right (starting with BOS).
            attention_mask: (B, S), 1 = real source token, 0 = padding.
            output_attentions: also return the (B, T, S) attention weights.
            labels: (B, T) next-token targets, -100 at padding: adds ``loss``, ``loss_sum``, ``num_tokens``
                (plain cross-entropy; training losses such as label smoothing live in
                :mod:`attnlab.train.losses`).
        """
        if input_ids.dim() != 2 or decoder_input_ids.dim() != 2:
            raise ValueError(f"RNNSeq2Seq: input_ids and decoder_input_ids must be (B, L), got "
                             f"{tuple(input_ids.shape)} and {tuple(decoder_input_ids.shape)}")
        memory, mask, carry = self.encode(input_ids, attention_mask)
        logits, weights = [], []
        for t in range(decoder_input_ids.shape[1]):
            step_logits, w, carry = self.step(decoder_input_ids[:, t], memory, mask, carry)
            logits.append(step_logits)
            weights.append(w)
        out = Seq2SeqRNNOutput(
            logits=torch.stack(logits, 1),  # (B, T, V)
            attentions=(torch.stack(weights, 1),) if output_attentions else None,  # ((B, T, S),)
        )
        if labels is not None:
            out.loss_sum, out.num_tokens = token_loss(out.logits, lambda x: x, labels)
            out.loss = out.loss_sum / out.num_tokens.clamp(min=1)
        return out

    @torch.no_grad()
    def generate(self, input_ids: Tensor, max_new_tokens: int, bos_id: int, eos_id: int,
                 attention_mask: Tensor | None = None) -> Tensor:
        """Greedy decoding.

        Args:
            input_ids: (B, S) source ids.
            max_new_tokens: the most tokens to produce per row.
            bos_id: the first decoder input.
            eos_id: ends a row; later positions of a finished row are ``pad_token_id``.
            attention_mask: (B, S), 1 = real source token.

        Returns:
            (B, n) generated ids (BOS excluded, EOS included), n <= ``max_new_tokens``.
        """
        memory, mask, carry = self.encode(input_ids, attention_mask)
        y = torch.full((input_ids.shape[0],), bos_id, dtype=torch.long, device=input_ids.device)
        done = torch.zeros_like(y, dtype=torch.bool)
        out = []
        for _ in range(max_new_tokens):
            logits, _, carry = self.step(y, memory, mask, carry)
            y = logits.argmax(-1).masked_fill(done, self.config.pad_token_id)  # (B,)
            out.append(y)
            done = done | (y == eos_id)
            if done.all():
                break
        return torch.stack(out, 1) if out else input_ids.new_zeros(input_ids.shape[0], 0)


# ============================================================================ tagger


@dataclasses.dataclass
class BiLSTMTaggerConfig(ModelConfig):
    """Sizes of a :class:`BiLSTMTagger`.

    Args:
        vocab_size: token ids.
        num_tags: output tags.
        embed_dim: token embedding width.
        hidden_dim: LSTM width per direction (states are ``2 * hidden_dim``).
        num_layers: BiLSTM layers.
        num_heads: self-attention heads over the BiLSTM states (must divide ``2 * hidden_dim``).
        dropout: dropout on embeddings and before the output layer.
        pad_token_id: padding id.
    """

    family: ClassVar[str] = "bilstm_tagger"
    attention_normalised: ClassVar[bool] = True

    vocab_size: int = 20000
    num_tags: int = 20
    embed_dim: int = 100
    hidden_dim: int = 200
    num_layers: int = 2
    num_heads: int = 4
    dropout: float = 0.1
    pad_token_id: int = 0

    def build(self) -> "BiLSTMTagger":
        return BiLSTMTagger(self)

    @classmethod
    def tiny(cls) -> dict[str, Any]:
        return dict(vocab_size=23, num_tags=5, embed_dim=16, hidden_dim=16, num_layers=1, num_heads=2)

    def example_inputs(self, batch_size: int = 2, seq_len: int = 6) -> dict[str, Any]:
        ids, mask = _example_ids(self.vocab_size, batch_size, seq_len, low=1)
        return {"input_ids": ids, "attention_mask": mask}

    def attention_shapes(self, batch_size: int = 2, seq_len: int = 6) -> list[tuple[int, ...]]:
        """Shapes of ``attentions`` for :meth:`example_inputs` (used by the registry's smoke test)."""
        return [(batch_size, self.num_heads, seq_len, seq_len)]

    def validate(self) -> None:
        _check_positive("BiLSTMTaggerConfig", self, ("vocab_size", "num_tags", "embed_dim", "hidden_dim",
                                                     "num_layers", "num_heads"))
        if (2 * self.hidden_dim) % self.num_heads:
            raise ConfigError(f"BiLSTMTaggerConfig: 2 * hidden_dim={2 * self.hidden_dim} is not divisible by "
                              f"num_heads={self.num_heads}")


class BiLSTMTagger(PretrainedModel):
    """BiLSTM states, multi-head self-attention over them, per-token tag logits.

    Submodules: ``embed``, ``lstm`` (bidirectional), ``qkv`` (one ``nn.Linear`` to queries, keys
    and values), ``proj`` (attention output), ``out`` (``nn.Linear`` from ``[h; attended]``).

    Args:
        config: a :class:`BiLSTMTaggerConfig`.
    """

    def __init__(self, config: BiLSTMTaggerConfig):
        super().__init__()
        config.validate()
        self.config = config
        D = 2 * config.hidden_dim
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=config.pad_token_id)
        self.lstm = nn.LSTM(config.embed_dim, config.hidden_dim, num_layers=config.num_layers, batch_first=True,
                            bidirectional=True)
        self.qkv = nn.Linear(D, 3 * D)
        self.proj = nn.Linear(D, D)
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(2 * D, config.num_tags)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                output_attentions: bool = False) -> TokenClassifierOutput:
        """Tag every token.

        Args:
            input_ids: (B, L) token ids.
            attention_mask: (B, L), 1 = real token, 0 = padding (padding keys get zero weight;
                padding positions get logits that mean nothing).
            output_attentions: also return the (B, H, L, L) self-attention weights.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"BiLSTMTagger: input_ids must be (B, L), got {tuple(input_ids.shape)}")
        mask = None if attention_mask is None else attention_mask.bool()
        h = _encode(self.lstm, self.dropout(self.embed(input_ids)), mask)  # (B, L, D)
        B, L, D = h.shape
        H = self.config.num_heads
        q, k, v = self.qkv(h).view(B, L, 3, H, D // H).permute(2, 0, 3, 1, 4)  # each (B, H, L, D/H)
        res = attend(q, k, v, mask=None if mask is None else mask[:, None, None, :], return_weights=True)
        ctx = self.proj(res.out.transpose(1, 2).reshape(B, L, D))  # (B, L, D)
        logits = self.out(self.dropout(torch.cat((h, ctx), -1)))  # (B, L, num_tags)
        return TokenClassifierOutput(logits=logits, attentions=(res.weights,) if output_attentions else None)


__all__ = ["RNNSeq2Seq", "RNNSeq2SeqConfig", "BiLSTMTagger", "BiLSTMTaggerConfig"]
