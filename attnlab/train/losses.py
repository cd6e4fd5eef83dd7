"""What the trainer minimises: a task's loss and what it is normalised by.

A loss is an object with

* ``unit``: what one step's loss is averaged over ("tokens", "examples" or "values");
* ``count(batch) -> int``: how many of them a batch holds, known before the forward pass, so
  the trainer can normalise by the count of a whole step (every accumulated batch on every
  process) and the gradient is the same however the step is split;
* ``__call__(model, batch) -> Tensor``: the SUMMED loss of the batch (a scalar).

    loss = TokenCrossEntropy(label_smoothing=0.1)        # seq2seq, language models, tagging
    loss = ClassCrossEntropy()                           # sequence / image classification
    loss = MeanSquaredError()                            # regression, forecasting

``batch`` is what the task's collate returns: the model's keyword arguments plus ``labels``.
The model is called without ``labels``, so a model's own convenience loss never runs and
label smoothing lives here, not in model forwards.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.loss import IGNORE_INDEX, token_loss

__all__ = ["Loss", "TokenCrossEntropy", "ClassCrossEntropy", "MeanSquaredError", "unwrap"]


class Loss(Protocol):
    unit: str

    def count(self, batch: dict) -> int: ...

    def __call__(self, model: nn.Module, batch: dict) -> Tensor: ...


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel (or the model itself)."""
    return getattr(model, "module", model)


def _inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "labels"}


class TokenCrossEntropy:
    """Cross-entropy summed over labelled tokens (``labels != IGNORE_INDEX``).

    The model is asked for its last hidden state without logits (``return_logits=False``) when it
    has an ``lm_head``: the projection then runs on labelled positions only, in chunks (see
    :func:`attnlab.models.loss.token_loss`). A model without one returns (B, T, V) logits.

    Args:
        label_smoothing: the epsilon of ``F.cross_entropy``.
    """

    unit = "tokens"

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = float(label_smoothing)

    def count(self, batch: dict) -> int:
        return int((batch["labels"] != IGNORE_INDEX).sum())

    def __call__(self, model: nn.Module, batch: dict) -> Tensor:
        labels = batch["labels"]  # (B, T)
        head = getattr(unwrap(model), "lm_head", None)
        if head is not None:
            out = model(**_inputs(batch), return_logits=False)
            return token_loss(out.last_hidden_state, head, labels, self.label_smoothing)[0]
        out = model(**_inputs(batch))
        return token_loss(out.logits, lambda x: x, labels, self.label_smoothing)[0]  # logits (B, T, V)


class ClassCrossEntropy:
    """Cross-entropy summed over examples: ``labels`` (B,) class ids against ``logits`` (B, C).

    Args:
        label_smoothing: the epsilon of ``F.cross_entropy``.
        weight: optional (C,) class weights.
    """

    unit = "examples"

    def __init__(self, label_smoothing: float = 0.0, weight: Tensor | None = None):
        self.label_smoothing = float(label_smoothing)
        self.weight = weight

    def count(self, batch: dict) -> int:
        return int(batch["labels"].shape[0])

    def __call__(self, model: nn.Module, batch: dict) -> Tensor:
        logits = model(**_inputs(batch)).logits  # (B, C)
        weight = None if self.weight is None else self.weight.to(logits.device)
        return F.cross_entropy(logits.float(), batch["labels"], weight=weight, reduction="sum",
                               label_smoothing=self.label_smoothing)


class MeanSquaredError:
    """Squared error summed over every value of ``labels`` (any shape; NaN = no target), the
    prediction read from the output's ``prediction`` (or ``logits``)."""

    unit = "values"

    def count(self, batch: dict) -> int:
        return int((~torch.isnan(batch["labels"])).sum())

    def __call__(self, model: nn.Module, batch: dict) -> Tensor:
        out = model(**_inputs(batch))
        pred = getattr(out, "prediction", None)
        pred = out.logits if pred is None else pred
        y = batch["labels"]
        keep = ~torch.isnan(y)
        return F.mse_loss(pred.float()[keep], y.float()[keep], reduction="sum")
