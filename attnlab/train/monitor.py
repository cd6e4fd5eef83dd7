"""What a training run reports: ``metrics.jsonl``, TensorBoard, W&B, and the live progress.

Only the main process (rank 0) makes a :class:`Monitor`; other ranks get :class:`NullMonitor`.
Progress is a ``rich`` bar on a terminal and plain periodic lines otherwise (CI, nohup, pipes).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..io import write_text

__all__ = ["Monitor", "NullMonitor", "METRICS_FILE", "read_metrics"]

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir) -> list[dict]:
    """The records of ``metrics.jsonl`` (a torn last line, left by a kill, is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def _drop_torn_line(path: Path) -> None:
    """Cut a partial last line (no newline: a kill mid-write), so that an append starts a line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, 2)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)


def _fmt_metrics(metrics: dict) -> str:
    return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())


def _fmt_time(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class NullMonitor:
    """The monitor of non-main ranks: records nothing."""

    def start(self, step: int, total: int | None, max_time: float | None) -> None: ...
    def log_train(self, step: int, record: dict) -> None: ...
    def log_eval(self, step: int, split: str, metrics: dict) -> None: ...
    def message(self, text: str) -> None: ...
    def warn(self, text: str) -> None: ...
    def close(self) -> None: ...


class Monitor(NullMonitor):
    """Writes every record to ``metrics.jsonl`` and TensorBoard, and shows progress.

    Args:
        run_dir: the run directory.
        resume_step: on resume, records after this step (written after the checkpoint that is
            resumed from; 0 when there is none: every record) are dropped from ``metrics.jsonl``
            and TensorBoard, so a resumed run's logs read as if it had never stopped. Without
            it, records are appended (a torn last line, left by a kill mid-write, is cut first).
        tensorboard: write TensorBoard event files into ``run_dir``.
        wandb: also log to Weights & Biases.
        wandb_project: the W&B project.
        config: the resolved config (a dict), for W&B.
        progress: "auto", "bar" or "lines".
        stream: where progress goes (default stdout).
    """

    def __init__(self, run_dir, *, resume_step: int | None = None, tensorboard: bool = True,
                 wandb: bool = False, wandb_project: str = "attnlab", config: dict | None = None,
                 progress: str = "auto", stream=None):
        self.run_dir = Path(run_dir)
        self.stream = stream or sys.stdout
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / METRICS_FILE
        if resume_step is not None and path.exists():
            kept = [r for r in read_metrics(self.run_dir) if r.get("step", 0) <= resume_step]
            write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        else:
            _drop_torn_line(path)
        self._file = open(path, "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # TensorBoard drops the earlier files' events from purge_step on: the checkpoint's
            # own step (its train and val points) stays.
            self._tb = SummaryWriter(str(self.run_dir), purge_step=None if resume_step is None else resume_step + 1)
        self._wandb = None
        if wandb:
            try:
                import wandb as wandb_lib
            except ImportError as e:
                raise ValueError("train.wandb=true needs the wandb package (pip install wandb)") from e
            self._wandb = wandb_lib.init(project=wandb_project, dir=str(self.run_dir), config=config,
                                         name=self.run_dir.name, resume="allow", id=self.run_dir.name)
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = progress == "bar" or (progress == "auto" and tty)
        self._progress = None
        self._task = None
        self._last_eval = ""
        self._t0 = time.monotonic()
        self._start_step = 0
        self.total = None
        self.max_time = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, step: int, total: int | None, max_time: float | None) -> None:
        """Begin showing progress at ``step`` of ``total`` steps (None if unknown)."""
        self.total, self.max_time = total, max_time
        self._t0, self._start_step = time.monotonic(), step
        if self.bar:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                console=Console(file=self.stream), transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("train", total=total, completed=step, info="")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()

    # ------------------------------------------------------------------ records

    def _write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def log_train(self, step: int, record: dict) -> None:
        """A training record: loss, lr, grad_norm, ``<unit>_per_s`` (tokens_per_s,
        examples_per_s, ...), epoch, elapsed."""
        self._write({"step": step, "split": "train", **record})
        rate = next((k for k in record if k.endswith("_per_s")), None)
        for key in ("loss", "lr", "grad_norm", rate):
            if key in record and self._tb is not None:
                self._tb.add_scalar(f"train/{key}", record[key], step)
        if self._wandb is not None:
            self._wandb.log({f"train/{k}": v for k, v in record.items()}, step=step)
        short = {"tokens_per_s": "tok/s", "examples_per_s": "ex/s"}.get(rate, (rate or "").replace("_per_s", "/s"))
        info = f"loss {record['loss']:.4f}  lr {record['lr']:.2e}" + (f"  {record[rate]:,.0f} {short}" if rate else "")
        if self._progress is not None:
            self._progress.update(self._task, completed=step, info=f"{info}  {self._last_eval}")
        else:
            self.message(f"step {step}{'' if self.total is None else f'/{self.total}'}  "
                         f"epoch {record.get('epoch', 0)}  {info}  "
                         f"elapsed {_fmt_time(record.get('elapsed'))}  ETA {_fmt_time(self._eta(step))}")

    def log_eval(self, step: int, split: str, metrics: dict) -> None:
        """Evaluation metrics at ``step``."""
        self._write({"step": step, "split": split, **metrics})
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and self._tb is not None:
                self._tb.add_scalar(f"{split}/{key}", value, step)
        if self._wandb is not None:
            self._wandb.log({f"{split}/{k}": v for k, v in metrics.items()}, step=step)
        self._last_eval = f"{split}: {_fmt_metrics(metrics)}"
        if self._progress is not None:
            self._progress.update(self._task, completed=step)
        self.message(f"step {step}  {self._last_eval}")

    def message(self, text: str) -> None:
        """A line above the bar (or in the log)."""
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            print(text, file=self.stream, flush=True)

    def warn(self, text: str) -> None:
        """A warning, on stderr."""
        print(f"warning: {text}", file=sys.stderr, flush=True)

    def _eta(self, step: int) -> float | None:
        spent = time.monotonic() - self._t0
        done = step - self._start_step
        etas = []
        if self.total is not None and done > 0:
            etas.append(spent / done * (self.total - step))
        if self.max_time is not None:
            etas.append(max(0.0, self.max_time - spent))
        return min(etas) if etas else None
