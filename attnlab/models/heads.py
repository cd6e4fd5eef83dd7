"""Task heads that sit on a model's hidden states, and the poolings they use.

    head = SequenceClassificationHead(d_model, num_labels=3, pooling="mean")
    logits = head(out.last_hidden_state, attention_mask)     # (B, 3)
    tags = TokenClassificationHead(d_model, num_labels=9)(out.last_hidden_state)   # (B, L, 9)
    y = RegressionHead(d_model, num_outputs=7 * 96, pooling="mean")(h, mask)       # (B, 672)

Language modelling and generation heads live with their models (the decoder's tied LM head,
the encoder-decoder's output projection); image classification is the ViT/CNN classifier.

Poolings are registered by name: ``cls`` (the first token) and ``mean`` (over real tokens, the
sentence-transformers recipe).
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from ..registry import Registry

Pooling = Callable[[Tensor, "Tensor | None"], Tensor]
POOLINGS: Registry[Pooling] = Registry("pooling")


def register_pooling(name: str):
    """Decorator: register ``pool(hidden (B, L, D), attention_mask (B, L) | None) -> (B, D)``.

    Raises:
        ValueError: another pooling is already registered under ``name``.
    """
    return POOLINGS.register(name)


def get_pooling(name: str) -> Pooling:
    """The pooling registered under ``name``; ConfigError (a ValueError) naming the known ones otherwise."""
    return POOLINGS.get(name)


@register_pooling("cls")
def cls_pool(hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """The first token's state: (B, L, D) -> (B, D)."""
    return hidden[:, 0]


@register_pooling("mean")
def mean_pool(hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Mean over real tokens: (B, L, D), mask (B, L) 1 = real -> (B, D).

    Like sentence-transformers, a row without real tokens divides by a clamped 1e-9 count.
    """
    if attention_mask is None:
        return hidden.mean(dim=1)
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, L, 1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)  # (B, D)


class SequenceClassificationHead(nn.Module):
    """Pool the sequence, then dropout and a linear map to logits.

    Args:
        hidden: width of the hidden states.
        num_labels: number of classes.
        pooling: "cls" or "mean" (see :func:`get_pooling`).
        dropout: dropout before the classifier.
    """

    def __init__(self, hidden: int, num_labels: int, pooling: str = "cls", dropout: float = 0.0):
        super().__init__()
        self.pooling = pooling
        self.pool = get_pooling(pooling)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_labels)

    def forward(self, hidden_states: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, L, hidden) states and (B, L) mask -> (B, num_labels) logits."""
        pooled = self.pool(hidden_states, attention_mask)  # (B, hidden)
        return self.classifier(self.dropout(pooled))  # (B, num_labels)

    def extra_repr(self) -> str:
        return f"pooling={self.pooling!r}"


class TokenClassificationHead(nn.Module):
    """Per-token logits (NER, tagging): dropout and a linear map on every position.

    Args:
        hidden: width of the hidden states.
        num_labels: number of tags.
        dropout: dropout before the classifier.
    """

    def __init__(self, hidden: int, num_labels: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_labels)

    def forward(self, hidden_states: Tensor) -> Tensor:
        """(B, L, hidden) -> (B, L, num_labels) logits."""
        return self.classifier(self.dropout(hidden_states))


class RegressionHead(nn.Module):
    """Pool the sequence, then a small MLP to real-valued outputs (regression, forecasting).

    Args:
        hidden: width of the hidden states.
        num_outputs: output size, e.g. horizon x channels for forecasting.
        pooling: "cls" or "mean" (see :func:`get_pooling`).
        dropout: dropout before the output layer.
    """

    def __init__(self, hidden: int, num_outputs: int, pooling: str = "mean", dropout: float = 0.0):
        super().__init__()
        self.pooling = pooling
        self.pool = get_pooling(pooling)
        self.proj = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, num_outputs))

    def forward(self, hidden_states: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, L, hidden) states and (B, L) mask -> (B, num_outputs)."""
        return self.proj(self.pool(hidden_states, attention_mask))

    def extra_repr(self) -> str:
        return f"pooling={self.pooling!r}"


__all__ = [
    "SequenceClassificationHead", "TokenClassificationHead", "RegressionHead",
    "cls_pool", "mean_pool", "get_pooling", "register_pooling",
]
