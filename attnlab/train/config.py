"""The trainer's typed config: the ``train:`` section of every recipe config."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from ..config import Config

__all__ = ["OptimConfig", "ScheduleConfig", "TrainConfig", "parse_duration"]


def parse_duration(value) -> float | None:
    """Seconds from a number (seconds) or a string such as ``"90s"``, ``"55m"``, ``"1.5h"``."""
    if value is None or isinstance(value, (int, float)):
        return None if value is None else float(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(value))
    if not m:
        raise ValueError(f"expected seconds or a duration like 90s, 55m, 1.5h, got {value!r}")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


class OptimConfig(Config):
    """AdamW. Biases, norm weights and other 1-D parameters get no weight decay.

    Args:
        lr: peak learning rate (reached at the end of warmup).
        betas: Adam's betas (0.9, 0.98 as in the original Transformer).
        eps: Adam's epsilon.
        weight_decay: decoupled weight decay of the matrices and embeddings.
    """

    lr: float = Field(1e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-9, gt=0)
    weight_decay: float = Field(0.0, ge=0)


class ScheduleConfig(Config):
    """Learning rate: linear warmup from 0, then a decay.

    Args:
        name: "inverse_sqrt" (the original Transformer's: lr * sqrt(warmup / step) after warmup),
            "cosine" or "linear" (down to ``min_lr_ratio * lr`` at the last step; they need
            ``max_steps`` or ``max_epochs``), or "constant".
        warmup_steps: optimizer steps of linear warmup.
        min_lr_ratio: where cosine and linear end, as a fraction of the peak.
    """

    name: Literal["inverse_sqrt", "cosine", "linear", "constant"] = "inverse_sqrt"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)


class TrainConfig(Config):
    """Everything the training loop needs; it knows nothing of the model or the task.

    Args:
        seed: seeds python, numpy and torch; with it a run is reproducible.
        max_tokens: token budget of one batch (padded size, per process).
        batch_size: examples per batch (per process) instead of a token budget (null: use
            ``max_tokens``).
        group_by_length: with ``batch_size``, cut batches from a length-sorted order (less
            padding; the batch order is still shuffled), else from a random permutation.
        accum_steps: batches accumulated into one optimizer step.
        max_steps: stop after this many optimizer steps.
        max_epochs: stop after this many passes over the training data.
        max_time: stop after this much wall time (seconds, or "55m", "1.5h"), evaluation included.
        label_smoothing: epsilon of the cross-entropy.
        grad_clip: clip the global gradient norm to this (null: no clipping, norm still logged).
        optim: the optimizer.
        schedule: the learning-rate schedule.
        eval_every: evaluate every this many steps (and at the end).
        log_every: log loss, lr, grad norm and tokens/s every this many steps.
        save_every: checkpoint every this many steps (default: at every evaluation).
        keep_last: step checkpoints kept (plus ``best/``).
        metric: the validation metric that picks ``best/`` and drives early stopping.
        mode: "max" if a higher ``metric`` is better, else "min".
        patience: stop after this many evaluations without improvement (null: never).
        amp: autocast dtype: "none" (the default; bf16 is ~250x slower than fp32 on CPUs
            without bf16 units), "bf16" or "fp16" (for CUDA; with a GradScaler, whose steps that
            overflow are skipped).
        device: "auto" (CUDA when available), "cpu" or "cuda".
        threads: torch intra-op threads (null: torch's default).
        tensorboard: write TensorBoard event files in the run dir.
        wandb: also log to Weights & Biases (needs ``wandb`` installed and logged in).
        wandb_project: the W&B project name.
        progress: "auto" (a live bar on a terminal, plain log lines otherwise), "bar" or "lines".
    """

    seed: int = 0
    max_tokens: int = Field(4096, ge=1)
    batch_size: int | None = Field(None, ge=1)
    group_by_length: bool = True
    accum_steps: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)
    max_epochs: int | None = Field(None, ge=1)
    max_time: float | None = Field(None, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip: float | None = Field(1.0, gt=0)
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    eval_every: int = Field(500, ge=1)
    log_every: int = Field(50, ge=1)
    save_every: int | None = Field(None, ge=1)
    keep_last: int = Field(3, ge=1)
    metric: str = "loss"
    mode: Literal["max", "min"] = "min"
    patience: int | None = Field(None, ge=1)
    amp: Literal["none", "bf16", "fp16"] = "none"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1)
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "attnlab"
    progress: Literal["auto", "bar", "lines"] = "auto"

    @field_validator("max_time", mode="before")
    @classmethod
    def _duration(cls, value):
        return parse_duration(value)
