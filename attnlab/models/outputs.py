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
    """

    logits: Tensor
    loss: Tensor | None = None


__all__ = ["EncoderOutput", "SequenceClassifierOutput"]
