"""Typed output records of attnlab models (never positional tuples)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class EncoderOutput:
    """What an encoder returns.

    Attributes:
        last_hidden_state: (B, L, d_model) output of the last layer (after the final norm of a
            pre-norm stack).
        pooler_output: (B, d_model) pooled first token, if the model has a pooler.
        hidden_states: (embeddings, layer 1, ..., layer N), each (B, L, d_model), if requested.
        attentions: one (B, H, L, L) tensor of self-attention weights per layer, if requested.
    """

    last_hidden_state: Tensor
    pooler_output: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


@dataclass
class SequenceClassifierOutput:
    """What a sequence classifier returns.

    Attributes:
        logits: (B, num_labels).
        loss: scalar cross-entropy, if labels were given.
        hidden_states: the encoder's (embeddings, layer 1, ..., layer N), if requested.
        attentions: the encoder's (B, H, L, L) self-attention weights per layer, if requested.
    """

    logits: Tensor
    loss: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


@dataclass
class ImageClassifierOutput:
    """What an image classifier (ViT, the CBAM CNN) returns.

    Attributes:
        logits: (B, num_classes).
        attentions: per-layer maps, if requested: (B, H, N, N) self-attention weights for a ViT
            (N patches, plus the class token if any); (B, 1, h, w) CBAM spatial maps per stage
            for the CNN (sigmoid gates in [0, 1], not distributions).
    """

    logits: Tensor
    attentions: tuple[Tensor, ...] | None = None


@dataclass
class Seq2SeqRNNOutput:
    """What an RNN encoder-decoder with attention returns.

    Attributes:
        logits: (B, T, V) next-token logits at every decoder position.
        attentions: ``((B, T, S),)``: each decoder step's weights over the source, if requested.
        loss, loss_sum, num_tokens: as in :class:`Seq2SeqOutput`, if labels were given.
    """

    logits: Tensor
    attentions: tuple[Tensor, ...] | None = None
    loss: Tensor | None = None
    loss_sum: Tensor | None = None
    num_tokens: Tensor | None = None


@dataclass
class TokenClassifierOutput:
    """What a token classifier (tagger) returns.

    Attributes:
        logits: (B, L, num_tags).
        attentions: ``((B, H, L, L),)`` self-attention weights over the tokens, if requested.
    """

    logits: Tensor
    attentions: tuple[Tensor, ...] | None = None


__all__ = [
    "EncoderOutput", "SequenceClassifierOutput", "ImageClassifierOutput", "Seq2SeqRNNOutput",
    "TokenClassifierOutput",
]


@dataclass
class Seq2SeqOutput:
    """What an encoder-decoder model returns.

    Attributes:
        logits: (B, T, V) next-token logits at every target position.
        last_hidden_state: (B, T, d_model) the decoder's output (after its final norm): what the
            output projection reads.
        encoder_last_hidden_state: (B, S, d_model) the encoder's output (the cross-attention memory).
        encoder_attentions: one (B, H, S, S) self-attention map per encoder layer, if requested.
        decoder_attentions: one (B, H, T, T) causal self-attention map per decoder layer, if requested.
        cross_attentions: one (B, H, T, S) map per decoder layer over the source, if requested.
        encoder_hidden_states, decoder_hidden_states: (embeddings, layer 1, ..., layer N) of each
            stack, the last after the final norm, if requested.
        loss: the mean next-token cross-entropy over labelled positions, if labels were given
            (then ``logits`` is None: the projection ran on the labelled positions only).
        loss_sum, num_tokens: the summed loss and the number of labelled tokens (``loss`` is
            their ratio), for trainers that normalise over a whole accumulated batch.

    ``attentions`` and ``hidden_states`` are the decoder's (the stack that makes the logits), so
    code written for a decoder-only model reads an encoder-decoder the same way.
    """

    logits: Tensor | None
    last_hidden_state: Tensor | None = None
    encoder_last_hidden_state: Tensor | None = None
    encoder_attentions: tuple[Tensor, ...] | None = None
    decoder_attentions: tuple[Tensor, ...] | None = None
    cross_attentions: tuple[Tensor, ...] | None = None
    encoder_hidden_states: tuple[Tensor, ...] | None = None
    decoder_hidden_states: tuple[Tensor, ...] | None = None
    loss: Tensor | None = None
    loss_sum: Tensor | None = None
    num_tokens: Tensor | None = None

    @property
    def attentions(self) -> tuple[Tensor, ...] | None:
        return self.decoder_attentions

    @property
    def hidden_states(self) -> tuple[Tensor, ...] | None:
        return self.decoder_hidden_states


__all__ += ["Seq2SeqOutput"]
