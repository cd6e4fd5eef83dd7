"""A BiLSTM text classifier with attention pooling, the classic baseline before pretrained
Transformers (Yang et al. 2016's word attention; Zhou et al. 2016): embeddings, a BiLSTM,
``a = softmax_i(v . tanh(W h_i))`` over the real tokens, ``logits = out(sum_i a_i h_i)``.

    model = create("bilstm-classifier", vocab_size=16000, num_labels=2)
    out = model(input_ids, attention_mask=mask, output_attentions=True)
    out.logits               # (B, 2)
    out.attentions           # ((B, 1, 1, L),): the pooling weights, rows sum to 1
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .checkpoint import PretrainedModel
from .outputs import SequenceClassifierOutput
from .registry import ConfigError, ModelConfig
from .rnn_attention import _check_positive, _encode, _example_ids


@dataclasses.dataclass
class BiLSTMClassifierConfig(ModelConfig):
    """Sizes of a :class:`BiLSTMClassifier`.

    Args:
        vocab_size: token ids.
        num_labels: classes.
        embed_dim: token embedding width.
        hidden_dim: LSTM width per direction (states are ``2 * hidden_dim``).
        num_layers: BiLSTM layers.
        attn_dim: width of the pooling attention's hidden layer (W).
        dropout: dropout on the embeddings, between LSTM layers and before the classifier.
        pad_token_id: padding id.
        label_names: class names, index = class id (None: unnamed).
    """

    family: ClassVar[str] = "bilstm_classifier"
    attention_normalised: ClassVar[bool] = True

    vocab_size: int = 16000
    num_labels: int = 2
    embed_dim: int = 300
    hidden_dim: int = 256
    num_layers: int = 1
    attn_dim: int = 128
    dropout: float = 0.5
    pad_token_id: int = 0
    label_names: list[str] | None = None

    def build(self) -> "BiLSTMClassifier":
        return BiLSTMClassifier(self)

    @classmethod
    def tiny(cls) -> dict[str, Any]:
        return dict(vocab_size=23, num_labels=3, embed_dim=16, hidden_dim=16, attn_dim=8)

    def example_inputs(self, batch_size: int = 2, seq_len: int = 6) -> dict[str, Any]:
        ids, mask = _example_ids(self.vocab_size, batch_size, seq_len, low=1)
        return {"input_ids": ids, "attention_mask": mask}

    def attention_shapes(self, batch_size: int = 2, seq_len: int = 6) -> list[tuple[int, ...]]:
        """Shapes of ``attentions`` for :meth:`example_inputs` (used by the registry's smoke test)."""
        return [(batch_size, 1, 1, seq_len)]

    def validate(self) -> None:
        _check_positive("BiLSTMClassifierConfig", self, ("vocab_size", "num_labels", "embed_dim", "hidden_dim",
                                                         "num_layers", "attn_dim"))
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"BiLSTMClassifierConfig: dropout must be in [0, 1), got {self.dropout}")
        if self.label_names is not None and len(self.label_names) != self.num_labels:
            raise ConfigError(f"BiLSTMClassifierConfig: {len(self.label_names)} label_names for "
                              f"num_labels={self.num_labels}")


class BiLSTMClassifier(PretrainedModel):
    """Embeddings, a BiLSTM, attention pooling and a linear classifier.

    Submodules: ``embeddings.token`` (``nn.Embedding``: what input attributions read), ``lstm``,
    ``attn`` (W, ``nn.Linear``), ``context`` (v, ``nn.Linear`` without bias), ``classifier``.

    Args:
        config: a :class:`BiLSTMClassifierConfig`.
    """

    def __init__(self, config: BiLSTMClassifierConfig):
        super().__init__()
        config.validate()
        self.config = config
        D = 2 * config.hidden_dim
        self.embeddings = nn.ModuleDict({"token": nn.Embedding(config.vocab_size, config.embed_dim,
                                                               padding_idx=config.pad_token_id)})
        self.lstm = nn.LSTM(config.embed_dim, config.hidden_dim, num_layers=config.num_layers, batch_first=True,
                            bidirectional=True, dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.attn = nn.Linear(D, config.attn_dim)
        self.context = nn.Linear(config.attn_dim, 1, bias=False)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(D, config.num_labels)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                output_attentions: bool = False) -> SequenceClassifierOutput:
        """Class logits of a batch.

        Args:
            input_ids: (B, L) token ids.
            attention_mask: (B, L), 1 = real token, 0 = padding (gets zero pooling weight).
            token_type_ids: ignored (accepted so tokenizer outputs can be passed as they are).
            output_attentions: also return the (B, 1, 1, L) pooling weights.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"BiLSTMClassifier: input_ids must be (B, L), got {tuple(input_ids.shape)}")
        mask = None if attention_mask is None else attention_mask.bool()
        h = _encode(self.lstm, self.dropout(self.embeddings.token(input_ids)), mask)  # (B, L, D)
        scores = self.context(torch.tanh(self.attn(h))).squeeze(-1)  # (B, L)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(-1)  # (B, L)
        pooled = torch.einsum("bl,bld->bd", weights, h)  # (B, D)
        logits = self.classifier(self.dropout(pooled))  # (B, num_labels)
        return SequenceClassifierOutput(logits=logits,
                                        attentions=(weights[:, None, None, :],) if output_attentions else None)


__all__ = ["BiLSTMClassifier", "BiLSTMClassifierConfig"]
