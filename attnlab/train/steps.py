"""One optimizer step of :class:`attnlab.train.trainer.Trainer`, and what ranks agree on around it.

Each step makes two small all-reduces (no-ops on one process), so that every rank takes the
same decisions although each has its own clock and its own signals:

1. before the step: ``[count, ran dry, SIGINT, SIGTERM, wish per stop reason]``. ``count`` is
   the step's loss normaliser on this rank (summed: the whole step's); a stop wish of any rank
   stops all of them, with the first reason of :data:`STOP_REASONS` that some rank has.
2. after the backward pass: ``[loss sum, time is up]``: the step's loss over all ranks (logged,
   and a non-finite one skips the update everywhere) and ``max_time`` as any rank's clock sees it.

A step whose loss or gradient norm is not finite is skipped: no update (with ``amp: fp16`` the
GradScaler lowers its scale), the step is counted in ``skipped_steps`` and said in the log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import signal
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .batching import plan_changes
from .checkpoint import TrainCheckpointError
from .config import TrainConfig
from .distributed import all_reduce_sum

__all__ = ["STOP_REASONS", "TrainState", "StepRunner", "stop_reason", "seed_everything", "check_plan",
           "apply_optim_config"]

STOP_REASONS = ("max_steps", "max_epochs", "max_time", "early_stopping")


@dataclasses.dataclass
class TrainState:
    """The loop's counters, saved in every checkpoint."""

    step: int = 0
    tokens: int = 0
    elapsed: float = 0.0
    best_value: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    last_eval_step: int = -1
    stop_reason: str | None = None
    skipped_steps: int = 0


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def stop_reason(cfg: TrainConfig, st: TrainState, epochs_done: float) -> str | None:
    """Why this rank would stop now, by its own counters and clock; None to go on."""
    if cfg.max_steps is not None and st.step >= cfg.max_steps:
        return "max_steps"
    if cfg.max_epochs is not None and epochs_done >= cfg.max_epochs:
        return "max_epochs"
    if cfg.max_time is not None and st.elapsed >= cfg.max_time:
        return "max_time"
    if cfg.patience is not None and st.bad_evals >= cfg.patience:
        return "early_stopping"
    return None


@dataclasses.dataclass
class Agreement:
    """What all ranks agreed before a step: its count, and whether to stop or to take a signal."""

    count: int
    stop: str | None
    signum: int | None


@dataclasses.dataclass
class StepOutcome:
    """After a step: the stop condition it reached on every rank (max_steps, max_epochs, max_time)."""

    stop: str | None


class StepRunner:
    """Runs the steps of a trainer's loop and keeps the log window (loss and count since the last line)."""

    def __init__(self, trainer, net: torch.nn.Module):
        self.tr = trainer
        self.net = net
        self.params = [p for p in trainer.model.parameters() if p.requires_grad]
        dev = trainer.device
        self.reduce_device = dev if dev.type == "cuda" else torch.device("cpu")  # NCCL reduces CUDA tensors
        self._window_reset(time.monotonic())

    def _window_reset(self, now: float) -> None:
        self.w_loss, self.w_count, self.w_tokens, self.w_t0 = 0.0, 0, 0, now

    def agree(self, batches: list[dict], wish: str | None, signum: int | None) -> Agreement:
        """The all-reduce before a step (see the module's docstring)."""
        local = sum(self.tr.loss.count(b) for b in batches)
        flags = [local, int(wish is None and not batches), int(signum == signal.SIGINT),
                 int(signum == signal.SIGTERM), *(int(wish == r) for r in STOP_REASONS)]
        summed = all_reduce_sum(torch.tensor(flags, dtype=torch.float64, device=self.reduce_device)).tolist()
        count, dry, sigint, sigterm, wishes = int(summed[0]), summed[1] > 0, summed[2], summed[3], summed[4:]
        stop = next((r for r, n in zip(STOP_REASONS, wishes) if n > 0), "max_epochs" if dry else None)
        got = signal.SIGTERM if sigterm else signal.SIGINT if sigint else None
        return Agreement(count, stop, got)

    def _autocast(self):
        amp = self.tr.cfg.amp
        if amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        return torch.autocast(self.tr.device.type, dtype=dtype)

    def step(self, batches: list[dict], total: int, time_up: Callable[[], bool]) -> StepOutcome:
        """Forward and backward over the step's batches, the update (unless not finite), the
        callbacks and the log line."""
        tr, cfg, st = self.tr, self.tr.cfg, self.tr.state
        scaler, world = tr.scaler, tr.dist.world_size
        local = torch.zeros((), dtype=torch.float64)
        for i, batch in enumerate(batches):
            sync = tr.ddp is None or i == len(batches) - 1
            ctx = contextlib.nullcontext() if sync else tr.ddp.no_sync()
            with ctx, self._autocast():
                loss_sum = tr.loss(self.net, batch)
                # DDP averages gradients over ranks: scale so the result is the mean over the
                # step's count on all ranks.
                loss = loss_sum * (world / max(1, total))
            scaler.scale(loss).backward()
            local += loss_sum.detach().double().cpu()
        reduced = torch.stack([local, torch.tensor(float(time_up()), dtype=torch.float64)])
        step_loss, times_up = all_reduce_sum(reduced.to(self.reduce_device)).tolist()
        scaler.unscale_(tr.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip or float("inf")))
        finite = math.isfinite(step_loss) and math.isfinite(grad_norm)
        lr = tr.optimizer.param_groups[0]["lr"]
        if finite:
            scaler.step(tr.optimizer)
        scaler.update()
        with warnings.catch_warnings():
            # "lr_scheduler.step() before optimizer.step()" when the first update was skipped
            warnings.simplefilter("ignore", UserWarning)
            tr.scheduler.step()
        tr.optimizer.zero_grad(set_to_none=True)
        st.step += 1
        st.tokens += total
        if not finite:
            st.skipped_steps += 1
            scale = f"; fp16 loss scale now {scaler.get_scale():g}" if scaler.is_enabled() else ""
            tr.monitor.warn(f"step {st.step}: loss {step_loss:g}, gradient norm {grad_norm:g}: not finite, "
                            f"update skipped ({st.skipped_steps} so far{scale})")
        for callback in tr.callbacks:
            callback(tr.model, st.step)
        self.w_tokens += total
        if finite:
            self.w_loss, self.w_count = self.w_loss + step_loss, self.w_count + total
        if st.step % cfg.log_every == 0 or st.step == 1:
            self._log(lr, grad_norm)
        epochs = tr._epochs_done()
        if cfg.max_steps is not None and st.step >= cfg.max_steps:
            return StepOutcome("max_steps")
        if cfg.max_epochs is not None and epochs >= cfg.max_epochs:
            return StepOutcome("max_epochs")
        return StepOutcome("max_time" if times_up > 0 else None)

    def _log(self, lr: float, grad_norm: float) -> None:
        tr, st = self.tr, self.tr.state
        now = time.monotonic()
        record = {
            "loss": self.w_loss / self.w_count if self.w_count else float("nan"), "lr": lr,
            "grad_norm": grad_norm, f"{tr.loss.unit}_per_s": self.w_tokens / max(1e-9, now - self.w_t0),
            "epoch": round(tr._epochs_done(), 3), "elapsed": round(tr._tick(), 1),
        }
        if st.skipped_steps:
            record["skipped_steps"] = st.skipped_steps
        tr.monitor.log_train(st.step, record)
        self._window_reset(now)


def check_plan(saved: dict | None, now: dict, path: Path) -> None:
    """Refuse to resume when the batches would not be those of the interrupted run.

    Raises:
        TrainCheckpointError: one line naming what changed.
    """
    changes = plan_changes(saved, now) if saved is not None else []
    if changes:
        raise TrainCheckpointError(
            f"cannot resume from {path}: its batches came from other data or batching ({', '.join(changes)}); "
            "resume with the same data, train.max_tokens / train.batch_size, train.seed and number of "
            "processes, or start a new run")


_OPTIM_KEYS = {"initial_lr": "train.optim.lr", "weight_decay": "train.optim.weight_decay",
               "betas": "train.optim.betas", "eps": "train.optim.eps"}


def apply_optim_config(optimizer: torch.optim.Optimizer, scheduler, configured: list[dict]) -> list[str]:
    """After ``optimizer.load_state_dict``: the config's hyperparameters win over the checkpoint's
    (only the moments and step counts are the checkpoint's), so an override given with
    ``--resume`` (``train.optim.lr=5e-4``) applies; the schedule continues from its step with the
    new peak.

    Args:
        configured: the param groups (without ``params``) of the optimizer as the config built
            it, before the checkpoint was loaded.

    Returns:
        ``"train.optim.lr 0.001 -> 0.0005"`` for each setting that differs from the checkpoint's.
    """
    changes: dict[str, str] = {}
    for group, want in zip(optimizer.param_groups, configured):
        for key, value in want.items():
            if key == "lr":
                continue
            old = group.get(key)
            same = tuple(old) == tuple(value) if isinstance(value, (tuple, list)) else old == value
            if not same:
                if key in _OPTIM_KEYS:
                    changes[_OPTIM_KEYS[key]] = f"{_OPTIM_KEYS[key]} {old} -> {value}"
                group[key] = value
    scheduler.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)  # what LambdaLR.step() computes
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
    return list(changes.values())
