"""The training loop every recipe hands off to. It knows nothing of the model or the task.

The contract: ``collate(indices)`` turns a batch of example indices into keyword arguments of
the model plus ``labels``, and the task's ``loss`` (:mod:`attnlab.train.losses`) gives the
batch's SUMMED loss and what it is normalised by (``loss.count(batch)``: labelled tokens,
examples or values). Every optimizer step normalises by the count of the whole step (all
accumulated batches on all processes), so the gradient is the same whether a step's batches run
on one process or several::

    trainer = Trainer(cfg.train, model, batcher, collate, run_dir, loss=ClassCrossEntropy(),
                      evaluate=evaluate)
    result = trainer.fit()              # resumes from run_dir's newest checkpoint if any

``callbacks`` are called as ``callback(model, step)`` after every optimizer step (AdaLoRA's
rank budget update is one).

Stops at ``max_steps``, ``max_epochs``, ``max_time``, on early stopping, or on Ctrl-C (which
saves a checkpoint first and raises :class:`TrainingInterrupted`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import signal
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .batching import TokenBudgetBatcher
from .checkpoint import latest_checkpoint, load_checkpoint, save_best, save_checkpoint
from .config import TrainConfig
from .losses import Loss, TokenCrossEntropy
from .distributed import DistInfo, all_reduce_sum, broadcast_object
from .monitor import Monitor, NullMonitor
from .optim import build_optimizer, build_scheduler

__all__ = ["Trainer", "TrainResult", "TrainingInterrupted", "seed_everything", "resolve_device"]


class TrainingInterrupted(Exception):
    """Ctrl-C stopped training; a checkpoint of the last finished step was saved."""

    def __init__(self, step: int, checkpoint: Path | None):
        super().__init__(f"interrupted at step {step}; checkpoint saved at {checkpoint}")
        self.step, self.checkpoint = step, checkpoint


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


@dataclasses.dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    step: int
    epoch: float
    tokens: int
    elapsed: float
    stop_reason: str
    best_value: float | None
    best_step: int | None
    last_metrics: dict
    resumed_from: Path | None
    fallback_from: list[Path]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """"auto" is CUDA when available, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is available")
    return torch.device(name)


class Trainer:
    """One training loop for every recipe.

    Args:
        cfg: the ``train`` section of the config.
        model: the model (already on its device); wrapped in DistributedDataParallel when the
            process group has more than one process.
        batcher: this process's :class:`TokenBudgetBatcher` (built with its rank/world size).
        collate: maps a list of example indices to the model's keyword arguments (tensors on the
            model's device), with ``labels``.
        run_dir: where checkpoints, metrics and TensorBoard files go.
        loss: the task's loss (default: token cross-entropy with ``cfg.label_smoothing``).
        evaluate: ``evaluate(model) -> {metric: value}`` on the validation set, run by rank 0
            with the unwrapped model in eval mode; must include ``cfg.metric``.
        dist: this process's place in the process group.
        config_dict: the resolved config, for W&B.
        callbacks: ``callback(model, step)`` after every optimizer step.
    """

    def __init__(self, cfg: TrainConfig, model: nn.Module, batcher: TokenBudgetBatcher,
                 collate: Callable[[list[int]], dict], run_dir, *, loss: Loss | None = None,
                 evaluate: Callable[[nn.Module], dict] | None = None, dist: DistInfo | None = None,
                 config_dict: dict | None = None, callbacks: tuple = ()):
        self.cfg = cfg
        self.model = model
        self.loss = loss or TokenCrossEntropy(cfg.label_smoothing)
        self.callbacks = tuple(callbacks)
        self.batcher = batcher
        self.collate = collate
        self.run_dir = Path(run_dir)
        self.evaluate = evaluate
        self.dist = dist or DistInfo()
        self.config_dict = config_dict
        self.optimizer = build_optimizer(model, cfg.optim)
        self.total_steps = self._total_steps()
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, self.total_steps)
        self.state = TrainState()
        self.monitor: NullMonitor = NullMonitor()
        self._stop_requested = False
        self._iter = None
        self._last_metrics: dict = {}
        self.device = next(model.parameters()).device
        self.ddp = None
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(model, device_ids=ids)

    # ------------------------------------------------------------------ setup

    def _total_steps(self) -> int | None:
        steps = []
        if self.cfg.max_steps is not None:
            steps.append(self.cfg.max_steps)
        if self.cfg.max_epochs is not None:
            steps.append(math.ceil(len(self.batcher) * self.cfg.max_epochs / self.cfg.accum_steps))
        return min(steps) if steps else None

    def _resume(self) -> tuple[Path | None, list[Path]]:
        """Load the newest loadable checkpoint of the run dir, if there is one."""
        if latest_checkpoint(self.run_dir) is None:
            return None, []
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fallback is reported through the result
            info = load_checkpoint(self.run_dir, model=self.model, optimizer=self.optimizer,
                                   scheduler=self.scheduler)
        extra = info["extra"] or {}
        self.batcher.load_state_dict(extra["batcher"])
        self.state = TrainState(**extra["state"])
        self.state.stop_reason = None
        if self.dist.rank > 0:  # every rank restored rank 0's generators: make dropout differ again
            torch.manual_seed(self.cfg.seed + 1_000_003 * self.dist.rank + self.state.step)
        return info["path"], list(info.get("fallback_from", []))

    # ------------------------------------------------------------------ loop

    def fit(self) -> TrainResult:
        """Train until a stop condition; resume first if the run dir has a checkpoint."""
        cfg = self.cfg
        resumed, fallback = self._resume()
        if resumed is None:
            seed_everything(cfg.seed + 1_000_003 * self.dist.rank)
        if self.dist.is_main:
            self.monitor = Monitor(self.run_dir, resume_step=self.state.step if resumed else None,
                                   tensorboard=cfg.tensorboard, wandb=cfg.wandb, wandb_project=cfg.wandb_project,
                                   config=self.config_dict, progress=cfg.progress)
            for bad in fallback:
                self.monitor.warn(f"checkpoint {bad} is corrupt; falling back to {resumed}")
            if resumed is not None:
                self.monitor.message(f"resuming from {resumed} (step {self.state.step})")
            remaining = None if cfg.max_time is None else max(0.0, cfg.max_time - self.state.elapsed)
            self.monitor.start(self.state.step, self.total_steps, remaining)
        previous = signal.getsignal(signal.SIGINT)
        handler_installed = False
        try:
            signal.signal(signal.SIGINT, self._on_sigint)
            handler_installed = True
        except ValueError:  # not the main thread: no Ctrl-C handling
            pass
        try:
            reason = self._loop()
        finally:
            if handler_installed:
                signal.signal(signal.SIGINT, previous)
            self.monitor.close()
        return TrainResult(
            step=self.state.step, epoch=self._epochs_done(), tokens=self.state.tokens,
            elapsed=self.state.elapsed, stop_reason=reason, best_value=self.state.best_value,
            best_step=self.state.best_step, last_metrics=self._last_metrics, resumed_from=resumed,
            fallback_from=fallback,
        )

    def _on_sigint(self, signum, frame) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        self.monitor.message("Ctrl-C: saving a checkpoint after this step (press again to abort)")

    def _epochs_done(self) -> float:
        n = max(1, len(self.batcher))
        return self.batcher.epoch + self.batcher.position / n

    def _next_indices(self) -> list[int] | None:
        """The next batch of this rank, crossing epochs; None once ``max_epochs`` are done."""
        while True:
            if self.cfg.max_epochs is not None and self._epochs_done() >= self.cfg.max_epochs:
                return None
            if self._iter is None:
                self._iter = iter(self.batcher)
            try:
                return next(self._iter)
            except StopIteration:
                self._iter = None

    def _stop_reason(self) -> str | None:
        cfg, st = self.cfg, self.state
        if cfg.max_steps is not None and st.step >= cfg.max_steps:
            return "max_steps"
        if cfg.max_epochs is not None and self._epochs_done() >= cfg.max_epochs:
            return "max_epochs"
        if cfg.max_time is not None and st.elapsed >= cfg.max_time:
            return "max_time"
        if cfg.patience is not None and st.bad_evals >= cfg.patience:
            return "early_stopping"
        return None

    def _loop(self) -> str:
        cfg, st = self.cfg, self.state
        net = self.ddp or self.model
        net.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        # Loss and count (tokens, examples...) since the last log line; this rank's loss is summed
        # over ranks only when a line is logged (every rank logs at the same steps).
        window_tokens, window_t0 = 0, time.monotonic()
        window_loss = torch.zeros((), dtype=torch.float64)
        while True:
            reason = self._stop_reason()
            t_step = time.monotonic()
            batches = []
            for _ in range(cfg.accum_steps) if reason is None else ():
                indices = self._next_indices()
                if indices is None:
                    break
                batches.append(self.collate(indices))
            # One all-reduce per step: the loss's count, whether any rank ran dry, and Ctrl-C.
            local = sum(self.loss.count(b) for b in batches)
            flags = torch.tensor([local, int(not batches), int(self._stop_requested)], dtype=torch.float64)
            all_reduce_sum(flags)
            total_tokens, dry, interrupted = int(flags[0]), bool(flags[1]), bool(flags[2])
            if dry or reason is not None:
                reason = reason or "max_epochs"
                break
            for i, batch in enumerate(batches):
                sync = self.ddp is None or i == len(batches) - 1
                ctx = contextlib.nullcontext() if sync else self.ddp.no_sync()
                with ctx, self._autocast():
                    loss_sum = self.loss(net, batch)
                    # DDP averages gradients over ranks: scale so the result is the mean over
                    # the step's count on all ranks.
                    loss = loss_sum * (self.dist.world_size / max(1, total_tokens))
                loss.backward()
                window_loss += loss_sum.detach().double().cpu()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip else float("inf"))
            lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            st.step += 1
            for callback in self.callbacks:
                callback(self.model, st.step)
            st.tokens += total_tokens
            window_tokens += total_tokens
            st.elapsed += time.monotonic() - t_step
            if st.step % cfg.log_every == 0 or st.step == 1:
                now = time.monotonic()
                self.monitor.log_train(st.step, {
                    "loss": float(all_reduce_sum(window_loss)) / max(1, window_tokens), "lr": lr,
                    "grad_norm": float(grad_norm),
                    f"{self.loss.unit}_per_s": window_tokens / max(1e-9, now - window_t0),
                    "epoch": round(self._epochs_done(), 3), "elapsed": round(st.elapsed, 1),
                })
                window_tokens, window_t0 = 0, now
                window_loss = torch.zeros((), dtype=torch.float64)
            if interrupted:
                path = self._save()
                raise TrainingInterrupted(st.step, path)
            final = self._stop_reason() is not None
            if st.step % cfg.eval_every == 0 or final:
                t_eval = time.monotonic()
                self._eval()
                st.elapsed += time.monotonic() - t_eval
                net.train()
            save_every = cfg.save_every or cfg.eval_every
            if st.step % save_every == 0 or final:
                self._save()
        if st.last_eval_step != st.step:
            self._eval()
        if st.step and (self._latest_step() != st.step):
            self._save()
        st.stop_reason = reason
        return reason

    def _latest_step(self) -> int | None:
        path = latest_checkpoint(self.run_dir)
        return None if path is None else int(path.name.split("-")[1])

    def _autocast(self):
        if self.cfg.amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    # ------------------------------------------------------------------ eval and checkpoints

    def _eval(self) -> None:
        st = self.state
        st.last_eval_step = st.step
        if self.evaluate is None:
            return
        metrics = None
        if self.dist.is_main:
            self.model.eval()
            with torch.no_grad():
                metrics = self.evaluate(self.model)
            self.model.train()
        metrics = broadcast_object(metrics)
        self._last_metrics = metrics
        if self.cfg.metric not in metrics:
            raise ValueError(f"train.metric={self.cfg.metric!r} is not among the evaluation metrics "
                             f"{sorted(metrics)}")
        self.monitor.log_eval(st.step, "val", metrics)
        value = float(metrics[self.cfg.metric])
        better = st.best_value is None or (value > st.best_value if self.cfg.mode == "max" else value < st.best_value)
        if better:
            st.best_value, st.best_step, st.bad_evals = value, st.step, 0
            if self.dist.is_main:
                save_best(self.run_dir, st.step, self.model, self.cfg.metric, value)
        else:
            st.bad_evals += 1

    def _save(self) -> Path | None:
        if not self.dist.is_main:
            return None
        extra = {"batcher": self.batcher.state_dict(), "state": dataclasses.asdict(self.state)}
        return save_checkpoint(self.run_dir, self.state.step, model=self.model, optimizer=self.optimizer,
                               scheduler=self.scheduler, extra=extra, keep_last=self.cfg.keep_last)
