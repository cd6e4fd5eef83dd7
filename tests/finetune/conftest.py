"""Shared fixtures of the fine-tuning tests: a small sequence classifier of our own (an encoder as
``model.encoder`` plus ``model.head``), built the same way for every seed, and a toy task."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnlab.models import SequenceClassificationHead, SequenceClassifierOutput, create


class TinyClassifier(nn.Module):
    """An attnlab encoder and a classification head; what the finetune API must handle without
    knowing the class.

    Args:
        encoder: an :class:`attnlab.models.Encoder`.
        num_labels: classes.
    """

    def __init__(self, encoder: nn.Module, num_labels: int = 2):
        super().__init__()
        self.encoder = encoder
        self.head = SequenceClassificationHead(encoder.config.d_model, num_labels, pooling="mean")

    def forward(self, input_ids, attention_mask=None, labels=None, output_attentions=False):
        out = self.encoder(input_ids, attention_mask=attention_mask, output_attentions=output_attentions)
        logits = self.head(out.last_hidden_state, attention_mask)  # (B, num_labels)
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return SequenceClassifierOutput(logits=logits, loss=loss)


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Fine-tuning tests run tiny matmuls on one thread (see tests/conftest.py)."""


@pytest.fixture
def build():
    """``build(seed=0, encoder=None)``: a TinyClassifier on encoder-tiny (dropout off), the same
    weights for the same seed; ``encoder`` wraps a given encoder instead."""

    def make(seed: int = 0, encoder: nn.Module | None = None) -> TinyClassifier:
        torch.manual_seed(seed)
        return TinyClassifier(create("encoder-tiny") if encoder is None else encoder).eval()

    return make


@pytest.fixture
def batch():
    """A padded batch for encoder-tiny: input_ids (4, 8), attention_mask (4, 8), labels (4,)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 97, (4, 8), generator=g)  # (B, L)
    mask = torch.ones(4, 8, dtype=torch.long)  # (B, L)
    mask[1, 5:] = 0
    mask[3, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 0, 1])}


@pytest.fixture
def toy_task():
    """A separable task: class 0 draws its tokens from ids 1-40, class 1 from ids 57-96.
    Returns a dict batch of 16 sequences of length 8."""
    g = torch.Generator().manual_seed(2)
    labels = torch.arange(16) % 2  # (16,)
    low = torch.randint(1, 41, (16, 8), generator=g)
    ids = torch.where(labels[:, None] == 0, low, low + 56)  # (16, 8)
    return {"input_ids": ids, "attention_mask": torch.ones(16, 8, dtype=torch.long), "labels": labels}
