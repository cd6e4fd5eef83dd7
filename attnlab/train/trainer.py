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

Stops at ``max_steps``, ``max_epochs``, ``max_time``, on early stopping, or on Ctrl-C or SIGTERM
(which save a checkpoint first and raise :class:`TrainingInterrupted`). Under torchrun every
decision to stop goes through the step's all-reduces (:mod:`attnlab.train.steps`), so all ranks
stop after the same step with the same reason, even though each has its own clock.

At a step that evaluates and checkpoints, the order is: evaluate, write the step checkpoint
(which records the evaluation's outcome), then swap ``best/``. A kill between the two writes
leaves a checkpoint whose ``best/`` a resume rewrites (:func:`attnlab.train.best.sync_best`).
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .batching import TokenBudgetBatcher
from .best import clean_leftovers, prune_best, save_best, sync_best
from .checkpoint import checkpoint_dir, latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from .config import TrainConfig
from .distributed import DistInfo, broadcast_object, gather_object, resolve_device
from .losses import Loss, TokenCrossEntropy
from .monitor import Monitor, NullMonitor
from .optim import build_optimizer, build_scheduler
from .rng import rng_state
from .signals import SIGNAL_NAMES, StopSignals
from .steps import StepRunner, TrainState, apply_optim_config, check_plan, seed_everything, stop_reason

__all__ = ["Trainer", "TrainResult", "TrainingInterrupted", "seed_everything", "resolve_device"]


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped training; a checkpoint of the last finished step was saved.

    Attributes:
        step: the last finished step. checkpoint: its checkpoint (rank 0 wrote it; the same path
        on every rank). run_dir: the run, for ``--resume``. signum: the signal. main: rank 0.
        exit_code: 128 + signum (130 for Ctrl-C, 143 for SIGTERM).
    """

    def __init__(self, step: int, checkpoint: Path | None, *, run_dir: Path | None = None,
                 signum: int = signal.SIGINT, main: bool = True):
        super().__init__(f"{SIGNAL_NAMES.get(signum, f'signal {signum}')}: interrupted at step {step}; "
                         f"checkpoint saved at {checkpoint}")
        self.step, self.checkpoint, self.signum, self.main = step, checkpoint, int(signum), main
        self.run_dir = run_dir if run_dir is not None else (checkpoint.parent.parent if checkpoint else None)
        self.exit_code = 128 + self.signum


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

    Raises:
        ValueError: the batcher has no batch (every example was filtered out, say).
    """

    def __init__(self, cfg: TrainConfig, model: nn.Module, batcher: TokenBudgetBatcher,
                 collate: Callable[[list[int]], dict], run_dir, *, loss: Loss | None = None,
                 evaluate: Callable[[nn.Module], dict] | None = None, dist: DistInfo | None = None,
                 config_dict: dict | None = None, callbacks: tuple = ()):
        if len(batcher) == 0:
            n = len(batcher.lengths)
            why = ("the training set is empty (every example filtered out? a length limit such as "
                   "data.max_len below every example does that)") if n == 0 else \
                f"{n} examples make fewer batches than the {batcher.world_size} processes (drop_last)"
            raise ValueError(f"no training batches: {why}")
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
        self.device = next(model.parameters()).device
        # fp16 needs loss scaling (its gradients underflow); a disabled scaler is a pass-through.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.ddp = None
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(model, device_ids=ids)
        self._iter = None
        self._last_metrics: dict = {}
        self._signals = StopSignals()
        self._saved_step: int | None = None  # the step of the newest step checkpoint of this run
        self._ckpt_best_step: int | None = None  # the best step that checkpoint records
        self._best_pending = False  # an evaluation improved; best/ is written after the checkpoint
        self._clock = (time.monotonic(), 0.0)  # (when the loop started, state.elapsed then)

    # ------------------------------------------------------------------ setup

    def _total_steps(self) -> int | None:
        steps = []
        if self.cfg.max_steps is not None:
            steps.append(self.cfg.max_steps)
        if self.cfg.max_epochs is not None:
            steps.append(math.ceil(len(self.batcher) * self.cfg.max_epochs / self.cfg.accum_steps))
        return min(steps) if steps else None

    def _resume(self) -> tuple[Path | None, list[Path], list[str]]:
        """Load the newest loadable checkpoint of the run dir, if there is one."""
        if latest_checkpoint(self.run_dir) is None:
            return None, [], []
        configured = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fallback is reported through the result
            info = load_checkpoint(self.run_dir, model=self.model, optimizer=self.optimizer,
                                   scheduler=self.scheduler, rank=self.dist.rank)
        extra = info["extra"] or {}
        check_plan(extra.get("plan"), self.batcher.plan(), info["path"])
        self.batcher.load_state_dict(extra["batcher"])
        self.state = TrainState(**extra["state"])
        self.state.stop_reason = None
        if extra.get("scaler"):
            self.scaler.load_state_dict(extra["scaler"])
        changed = apply_optim_config(self.optimizer, self.scheduler, configured)
        if self.dist.rank > 0 and self.dist.rank >= info["rng_ranks"]:
            # an older checkpoint holds rank 0's generators alone: make this rank's dropout differ
            torch.manual_seed(self.cfg.seed + 1_000_003 * self.dist.rank + self.state.step)
        self._saved_step, self._ckpt_best_step = self.state.step, self.state.best_step
        return info["path"], list(info.get("fallback_from", [])), changed

    # ------------------------------------------------------------------ loop

    def fit(self) -> TrainResult:
        """Train until a stop condition; resume first if the run dir has a checkpoint."""
        cfg = self.cfg
        if self.dist.is_main:
            clean_leftovers(self.run_dir)  # of a writer that was killed; no other writer runs now
        resumed, fallback, changed = self._resume()
        if resumed is None:
            seed_everything(cfg.seed + 1_000_003 * self.dist.rank)
        if self.dist.is_main:
            # Records after the step resumed from (all of them when there is no checkpoint) are
            # from a timeline the resume abandons.
            self.monitor = Monitor(self.run_dir, resume_step=self.state.step, tensorboard=cfg.tensorboard,
                                   wandb=cfg.wandb, wandb_project=cfg.wandb_project, config=self.config_dict,
                                   progress=cfg.progress)
            for bad in fallback:
                self.monitor.warn(f"checkpoint {bad} is corrupt; falling back to {resumed}")
            if resumed is not None:
                self.monitor.message(f"resuming from {resumed} (step {self.state.step})")
            for line in changed:
                self.monitor.message(f"resume: {line} (the config's value is used)")
            if resumed is not None:
                prune_checkpoints(self.run_dir, cfg.keep_last, keep=resumed)  # a prune a kill cut short
            problem = sync_best(self.run_dir, self.state.step, self.state.best_step, self._write_best)
            if problem:
                self.monitor.warn(problem)
            remaining = None if cfg.max_time is None else max(0.0, cfg.max_time - self.state.elapsed)
            self.monitor.start(self.state.step, self.total_steps, remaining)
        self._signals = StopSignals(say=self.monitor.message)
        try:
            with self._signals:
                reason = self._loop()
        finally:
            self.monitor.close()
        return TrainResult(
            step=self.state.step, epoch=self._epochs_done(), tokens=self.state.tokens,
            elapsed=self.state.elapsed, stop_reason=reason, best_value=self.state.best_value,
            best_step=self.state.best_step, last_metrics=self._last_metrics, resumed_from=resumed,
            fallback_from=fallback,
        )

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

    def _tick(self) -> float:
        """``state.elapsed``, brought up to now: wall time in the loop, evaluation and checkpoints
        included, summed over the run's sessions."""
        t0, before = self._clock
        self.state.elapsed = before + time.monotonic() - t0
        return self.state.elapsed

    def _loop(self) -> str:
        cfg, st = self.cfg, self.state
        net = self.ddp or self.model
        net.train()
        runner = StepRunner(self, net)
        save_every = cfg.save_every or cfg.eval_every
        self._clock = (time.monotonic(), st.elapsed)
        # Where the resumed run already stands (max_steps reached, patience spent, time up): each
        # rank's wish is summed in the first all-reduce, so all of them stop before any step.
        self._tick()
        wish = stop_reason(cfg, st, self._epochs_done())
        while True:
            before = self.batcher.state_dict()
            batches = []
            for _ in range(cfg.accum_steps) if wish is None else ():
                indices = self._next_indices()
                if indices is None:
                    break
                batches.append(self.collate(indices))
            agreed = runner.agree(batches, wish, self._signals.requested)
            if agreed.stop is not None:
                if batches:  # drawn by this rank only: put them back for the checkpoint
                    self.batcher.load_state_dict(before)
                    self._iter = None
                reason = agreed.stop
                break
            wish = None
            out = runner.step(batches, agreed.count, time_up=lambda: cfg.max_time is not None
                              and self._tick() >= cfg.max_time)
            final = out.stop
            if st.step % cfg.eval_every == 0 or final is not None:
                self._eval()
                net.train()
            if final is None and cfg.patience is not None and st.bad_evals >= cfg.patience:
                final = "early_stopping"
            if agreed.signum is not None or final is not None or st.step % save_every == 0:
                self._save()
            self._flush_best()
            if agreed.signum is not None:
                raise TrainingInterrupted(st.step, checkpoint_dir(self.run_dir, st.step), run_dir=self.run_dir,
                                          signum=agreed.signum, main=self.dist.is_main)
            if final is not None:
                reason = final
                break
        if st.last_eval_step != st.step:
            self._eval()
        if st.step and self._saved_step != st.step:
            self._save()
        self._flush_best()
        self._tick()
        st.stop_reason = reason
        return reason

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
            self._best_pending = True
        else:
            st.bad_evals += 1

    def _save(self) -> Path:
        """The step checkpoint; every rank takes part (rank 0 gathers their generator states)."""
        self._tick()
        states = gather_object(rng_state())
        path = checkpoint_dir(self.run_dir, self.state.step)
        if self.dist.is_main:
            extra = {"batcher": self.batcher.state_dict(), "plan": self.batcher.plan(),
                     "state": dataclasses.asdict(self.state), "scaler": self.scaler.state_dict()}
            path = save_checkpoint(self.run_dir, self.state.step, model=self.model, optimizer=self.optimizer,
                                   scheduler=self.scheduler, extra=extra, keep_last=self.cfg.keep_last,
                                   rng_states=states)
            if not self._best_pending:
                prune_best(self.run_dir, keep_from=self.state.best_step)
        self._saved_step, self._ckpt_best_step = self.state.step, self.state.best_step
        return path

    def _flush_best(self) -> None:
        """Write best/ for the last improvement, after the step checkpoint that records it."""
        if self._best_pending and self.dist.is_main:
            self._write_best()
        self._best_pending = False

    def _write_best(self) -> None:
        st = self.state
        keep = self._ckpt_best_step if self._ckpt_best_step is not None else st.best_step
        save_best(self.run_dir, st.best_step, self.model, self.cfg.metric, st.best_value, keep_from=keep)

