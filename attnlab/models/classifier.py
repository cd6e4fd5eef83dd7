"""A sequence classifier: a BERT-style :class:`~attnlab.models.encoder.Encoder` plus a
:class:`~attnlab.models.heads.SequenceClassificationHead` (Devlin et al. 2019, section 4.1).

    model = create("classifier-tiny", num_labels=3)
    out = model(input_ids, attention_mask=mask, output_attentions=True)
    out.logits               # (B, 3)
    out.attentions           # num_layers x (B, H, L, L), the encoder's

Submodules: ``encoder`` (the encoder, every weight of a pretrained checkpoint goes there) and
``head`` (new for each task). ``pooling`` picks what the head reads: "cls" (the first token's
state), "mean" (mean over real tokens, as sentence-transformers) or "pooler" (BERT's pooler,
tanh(dense(h_CLS)), as Hugging Face's ``BertForSequenceClassification``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .checkpoint import PretrainedModel
from .encoder import Encoder, EncoderConfig
from .heads import SequenceClassificationHead
from .outputs import SequenceClassifierOutput
from .registry import ConfigError

POOLINGS = ("cls", "mean", "pooler")


@dataclasses.dataclass
class ClassifierConfig(EncoderConfig):
    """An :class:`EncoderConfig` plus the head.

    Args:
        num_labels: classes.
        pooling: "cls", "mean" or "pooler" (needs ``pooler=True``).
        head_dropout: dropout before the classifier (None: the encoder's ``dropout``).
        label_names: the class names in label order (a checkpoint's ``id2label``), or None.
        (every other field: see :class:`EncoderConfig`.)
    """

    family: ClassVar[str] = "classifier"

    num_labels: int = 2
    pooling: str = "cls"
    head_dropout: float | None = None
    label_names: list[str] | None = None

    def build(self) -> "SequenceClassifier":
        return SequenceClassifier(self)

    @classmethod
    def tiny(cls) -> dict[str, Any]:
        return {**EncoderConfig.tiny(), "num_labels": 3, "pooling": "cls", "pooler": False}

    def validate(self) -> None:
        super().validate()
        if self.num_labels < 1:
            raise ConfigError(f"ClassifierConfig: num_labels must be >= 1, got {self.num_labels}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"ClassifierConfig: pooling={self.pooling!r} is not one of {', '.join(POOLINGS)}")
        if self.pooling == "pooler" and not self.pooler:
            raise ConfigError("ClassifierConfig: pooling='pooler' needs pooler=True")
        if self.label_names is not None and len(self.label_names) != self.num_labels:
            raise ConfigError(f"ClassifierConfig: label_names has {len(self.label_names)} names "
                              f"but num_labels={self.num_labels}")

    def encoder_config(self) -> EncoderConfig:
        """The encoder's part of this config."""
        names = {f.name for f in dataclasses.fields(EncoderConfig)}
        return EncoderConfig(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})

    @classmethod
    def from_encoder(cls, encoder: EncoderConfig, **head) -> "ClassifierConfig":
        """A classifier config around an existing encoder's config, with head fields ``head``."""
        new = cls(**dataclasses.asdict(encoder), **head)
        new.validate()
        return new


class SequenceClassifier(PretrainedModel):
    """Encoder, pooling and a linear classifier.

    Args:
        config: a :class:`ClassifierConfig`.
    """

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.encoder = Encoder(config.encoder_config())
        dropout = config.dropout if config.head_dropout is None else config.head_dropout
        # The head pools the hidden states itself ("cls"/"mean"); "pooler" hands it the pooler's
        # output as a one-token sequence, so the head reads it with "cls".
        self.head = SequenceClassificationHead(config.d_model, config.num_labels,
                                               pooling="cls" if config.pooling == "pooler" else config.pooling,
                                               dropout=dropout)
        nn.init.normal_(self.head.classifier.weight, std=config.init_std)
        nn.init.zeros_(self.head.classifier.bias)

    @property
    def embeddings(self) -> nn.Module:
        """The encoder's embeddings (what input attributions such as IG read)."""
        return self.encoder.embeddings

    @property
    def layers(self) -> nn.ModuleList:
        return self.encoder.layers

    def prune_heads(self, heads: dict[int, list[int]]) -> None:
        """Remove attention heads from the encoder (see :meth:`Encoder.prune_heads`)."""
        self.encoder.prune_heads(heads)
        self.config = dataclasses.replace(self.config, pruned_heads=self.encoder.config.pruned_heads)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        head_mask: Tensor | None = None,
    ) -> SequenceClassifierOutput:
        """Class logits of a batch.

        Args:
            input_ids: (B, L) token ids.
            attention_mask: (B, L), 1 = real token, 0 = padding.
            token_type_ids: (B, L) segment ids.
            labels: (B,) class ids: adds the mean cross-entropy as ``loss`` (training goes
                through the trainer's loss instead, see :mod:`attnlab.train.losses`).
            output_attentions, output_hidden_states, head_mask: as :meth:`Encoder.forward`.
        """
        enc = self.encoder(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                           output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                           head_mask=head_mask)
        if self.config.pooling == "pooler":
            logits = self.head(enc.pooler_output[:, None])  # (B, num_labels)
        else:
            logits = self.head(enc.last_hidden_state, attention_mask)  # (B, num_labels)
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(logits=logits, loss=loss, hidden_states=enc.hidden_states,
                                        attentions=enc.attentions)


__all__ = ["ClassifierConfig", "SequenceClassifier", "POOLINGS"]
