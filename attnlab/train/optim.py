"""AdamW with weight-decay groups, and warmup-then-decay learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from .config import OptimConfig, ScheduleConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; 1-D ones (biases, norm gains) get no weight decay.

    Args:
        model: the model (tied parameters are counted once).
        cfg: learning rate, betas, epsilon and weight decay.
    """
    decay, no_decay = [], []
    for p in model.parameters():  # parameters() yields a tied tensor once
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    params = decay + no_decay
    # The fused kernel: one pass over each tensor instead of a dozen. Measured on a 2-core CPU:
    # 8 ms instead of 228 ms for a 30522 x 384 embedding, 7% of a MiniLM fine-tuning step.
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params) \
        and len({p.device for p in params}) == 1
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                             fused=fused)


def lr_factor(step: int, cfg: ScheduleConfig, total_steps: int | None) -> float:
    """The multiplier of the peak learning rate used for optimizer step ``step + 1``.

    Args:
        step: optimizer steps already taken (0 for the first step).
        cfg: the schedule.
        total_steps: the run's length in steps (needed by cosine and linear).
    """
    s = step + 1
    w = cfg.warmup_steps
    if w and s <= w:
        return s / w
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "inverse_sqrt":
        return math.sqrt(w / s) if w else 1.0 / math.sqrt(s)
    if total_steps is None:
        raise ValueError(f"schedule {cfg.name!r} needs train.max_steps or train.max_epochs")
    progress = min(1.0, (s - w) / max(1, total_steps - w))
    lo = cfg.min_lr_ratio
    if cfg.name == "cosine":
        return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * progress))
    return lo + (1 - lo) * (1 - progress)  # linear


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int | None) -> LambdaLR:
    """A ``LambdaLR`` following :func:`lr_factor`; call ``step()`` after each optimizer step."""
    if cfg.name in ("cosine", "linear") and total_steps is None:
        raise ValueError(f"schedule {cfg.name!r} needs train.max_steps or train.max_epochs")
    return LambdaLR(optimizer, lambda step: lr_factor(step, cfg, total_steps))
