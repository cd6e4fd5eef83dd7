"""The run mechanics every recipe shares, written once; a task supplies only what differs.

A task module subclasses :class:`Recipe` and supplies:

* ``prepare(cfg, run_dir, log, fresh) -> data``: read the data, build (fresh) or load the
  tokenizers and label maps kept in the run directory; ``data.splits`` maps split names to
  examples;
* ``build_model(cfg, data) -> nn.Module`` (and ``init_weights`` for pretrained starts);
* ``train_examples(cfg, data, device) -> (lengths, collate)``: what the batcher cuts and how a
  batch of indices becomes model arguments plus ``labels``;
* ``loss(cfg)``: the :mod:`attnlab.train.losses` object, which says what it is normalised by;
* ``evaluate_split(model, data, split, cfg, final, run_dir) -> metrics``;
* ``predict_texts(model, data, inputs, cfg, **options) -> outputs``;
* optionally ``read_eval_file`` (``attnlab eval --data FILE``), ``after_train`` (figures) and
  ``explain_info`` (what ``attnlab explain`` needs to know).

What is here: the run directory, training through the :class:`~attnlab.train.Trainer`, the final
weights (best checkpoint, or an average of the last ones), the saved model, ``report.json``, and
loading a finished run for ``eval``/``predict``/``explain``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..io import write_json
from ..train.checkpoint import CHECKPOINTS, MODEL_FILE, _complete_checkpoints, _read_model_file, average_checkpoints
from ..train.rundir import MODEL_DIR, REPORT_FILE

__all__ = ["Recipe"]


class Recipe:
    """Base of every recipe. Subclasses set ``name``, ``description``, ``config_cls``."""

    name: str = ""
    description: str = ""
    config_cls: type = object
    final_splits: tuple[str, ...] = ("val", "test")  # scored after training, when present

    # --- what a task supplies

    def prepare(self, cfg, run_dir: Path, log: Callable[[str], None], fresh: bool):
        raise NotImplementedError

    def describe_data(self, data) -> str:
        return ", ".join(f"{k} {len(v):,}" for k, v in data.splits.items())

    def build_model(self, cfg, data) -> nn.Module:
        raise NotImplementedError

    def init_weights(self, cfg, model: nn.Module, log) -> nn.Module:
        """Load pretrained weights into a freshly built model (default: none); may wrap it."""
        return model

    def train_examples(self, cfg, data, device: torch.device):
        raise NotImplementedError

    def loss(self, cfg):
        raise NotImplementedError

    def evaluate_split(self, model: nn.Module, data, split: str, cfg, *, final: bool,
                       run_dir: Path | None = None) -> dict:
        raise NotImplementedError

    def final_metrics(self, model: nn.Module, data, split: str, cfg, run_dir: Path) -> dict:
        """The metrics of ``split`` in the report at the end of training."""
        return self.evaluate_split(model, data, split, cfg, final=True, run_dir=run_dir)

    def predict_texts(self, model: nn.Module, data, inputs: list[str], cfg, **options) -> list[str]:
        raise NotImplementedError

    def read_eval_file(self, cfg, path: Path, data) -> list:
        """The examples of a labelled file in the recipe's own format (``attnlab eval --data``);
        ``data`` is the trained run's (tokenizers, labels) for checks."""
        raise ValueError(f"recipe {self.name!r} cannot read a data file; use --split")

    def after_train(self, cfg, run_dir: Path, model: nn.Module, data, log) -> dict[str, str]:
        """Extra artifacts (figures) written after training; returns ``{name: path}``."""
        return {}

    def explain_info(self, cfg, run_dir: Path) -> dict:
        """What ``attnlab explain``/``serve`` need of a run: ``{"model", "tokenizer", "kind"}``
        (kind "classifier", "encoder" or "seq2seq"), plus ``data`` (seq2seq) or ``labels``."""
        raise ValueError(f"{run_dir}: explanations of {self.name!r} runs are not supported yet")

    def resolve(self, cfg):
        """The config as it is saved with a run: relative paths made absolute, so that ``eval``
        and ``predict`` work from any directory."""
        return cfg

    def callbacks(self, cfg, model: nn.Module) -> tuple:
        return ()

    def save_model(self, cfg, model: nn.Module, run_dir: Path) -> Path:
        """The final model of a run: ``model/`` (``save_pretrained``)."""
        return model.save_pretrained(run_dir / MODEL_DIR)

    def load_model_weights(self, cfg, model: nn.Module, run_dir: Path) -> nn.Module:
        """The trained weights of a run onto a built model: ``model/``, else ``best/``, else the
        newest step checkpoint."""
        from safetensors.torch import load_model

        from ..train.checkpoint import latest_checkpoint

        final = run_dir / MODEL_DIR / "model.safetensors"
        best = run_dir / CHECKPOINTS / "best" / MODEL_FILE
        last = latest_checkpoint(run_dir)
        if final.is_file():
            load_model(model, str(final))
        elif best.is_file():
            model.load_state_dict(_read_model_file(best))
        elif last is not None:
            model.load_state_dict(_read_model_file(last / MODEL_FILE))
        else:
            raise ValueError(f"{run_dir}: no trained weights yet (no model/, checkpoints/best or step checkpoint)")
        return model

    # --- the run

    def train(self, cfg, run_dir: Path, *, resume: bool, dist, log: Callable[[str], None]) -> dict:
        """Train (or resume) in ``run_dir``; on the main process, evaluate and write the report."""
        from ..train import Trainer, make_batcher, resolve_device
        from ..train.distributed import barrier

        tc = cfg.train
        if tc.threads:
            torch.set_num_threads(tc.threads)
        device = resolve_device(tc.device)
        if dist.enabled and device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)
        t0 = time.monotonic()
        if dist.is_main:
            data = self.prepare(cfg, run_dir, log, fresh=True)
        barrier()
        if not dist.is_main:
            data = self.prepare(cfg, run_dir, lambda _m: None, fresh=False)
        log(f"data: {self.describe_data(data)}")
        torch.manual_seed(tc.seed)  # the same initial weights on every rank
        model = self.init_weights(cfg, self.build_model(cfg, data), log).to(device)
        n_params = sum(p.numel() for p in model.parameters())
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log(f"model: {cfg.model.name}, {n_params:,} parameters"
            + ("" if n_train == n_params else f", {n_train:,} trainable ({100 * n_train / n_params:.2f}%)")
            + f", on {device}")
        lengths, collate = self.train_examples(cfg, data, device)
        batcher = make_batcher(tc, lengths, rank=dist.rank, world_size=dist.world_size)
        loss = self.loss(cfg)

        def evaluate(m: nn.Module) -> dict:
            return self.evaluate_split(m, data, "val", cfg, final=False)

        trainer = Trainer(tc, model, batcher, collate, run_dir, loss=loss, evaluate=evaluate, dist=dist,
                          config_dict=cfg.model_dump(mode="json"), callbacks=self.callbacks(cfg, model))
        result = trainer.fit()
        if not dist.is_main:
            return {}
        model.eval()
        with torch.no_grad():
            how = self.load_final_weights(cfg, run_dir, model, evaluate, result.best_value)
        self.save_model(cfg, model, run_dir)
        report: dict[str, Any] = {
            "recipe": self.name, "run_dir": str(run_dir), "model": cfg.model.name, "parameters": n_params,
            "trainable_parameters": n_train, "trainable_share": round(n_train / max(1, n_params), 6),
            "steps": result.step, "epochs": round(result.epoch, 3), f"train_{loss.unit}": result.tokens,
            "train_time_s": round(result.elapsed, 1), "stop_reason": result.stop_reason,
            "best_step": result.best_step, f"best_val_{tc.metric}": result.best_value, "final_weights": how,
        }
        for split in self.final_splits:
            if split not in data.splits:
                continue
            t_eval = time.monotonic()
            metrics = self.final_metrics(model, data, split, cfg, run_dir)
            metrics["eval_time_s"] = round(time.monotonic() - t_eval, 1)
            report[split] = metrics
            log(f"{split}: " + "  ".join(f"{k} {v}" for k, v in metrics.items() if not isinstance(v, (dict, list))))
        report["artifacts"] = self.after_train(cfg, run_dir, model, data, log)
        report["total_time_s"] = round(time.monotonic() - t0, 1)
        write_json(run_dir / REPORT_FILE, report)
        return report

    def load_final_weights(self, cfg, run_dir: Path, model: nn.Module, evaluate=None, best_value=None) -> str:
        """Load the weights the final evaluation uses and say which they are.

        With ``average_last`` > 1 (the ``decode``/``eval`` section), the average of the last N
        step checkpoints competes with ``best/`` on the validation metric (``evaluate``), and the
        better one is kept; otherwise ``best/`` is used (or the last weights when there is none).
        """
        tc = cfg.train
        n = self.average_last(cfg)
        ckpts = _complete_checkpoints(run_dir / CHECKPOINTS) if (run_dir / CHECKPOINTS).is_dir() else []
        best = run_dir / CHECKPOINTS / "best" / MODEL_FILE
        if n > 1 and len(ckpts) >= 2:
            chosen = ckpts[-n:]
            average_checkpoints(chosen, model)
            what = f"average of {', '.join(p.name for p in chosen)}"
            if evaluate is None or best_value is None or not best.is_file():
                return what
            value = float(evaluate(model)[tc.metric])
            if (value >= best_value) if tc.mode == "max" else (value <= best_value):
                return f"{what} (val {tc.metric} {value:.4g} vs best checkpoint {best_value:.4g})"
            model.load_state_dict(_read_model_file(best))
            return f"best (val {tc.metric} {best_value:.4g} vs average of last {len(chosen)} {value:.4g})"
        if best.is_file():
            model.load_state_dict(_read_model_file(best))
            return "best"
        return "last"

    def average_last(self, cfg) -> int:
        return 0

    # --- using a finished run

    def load_run(self, cfg, run_dir: Path, log=lambda _m: None):
        """``(model, data)`` of a trained run: its tokenizers/labels, no training data read."""
        run_dir = Path(run_dir)
        data = self.prepare(cfg, run_dir, log, fresh=False, read_data=False)
        model = self.build_model(cfg, data)
        return self.load_model_weights(cfg, model, run_dir).eval(), data

    def evaluate(self, cfg, run_dir: Path, split: str | None, log, data_file: Path | None = None) -> dict:
        """Metrics of a trained run on one of its splits, or on a labelled file of the recipe's format."""
        model, data = self.load_run(cfg, run_dir, log)
        if data_file is not None:
            split = Path(data_file).name
            data.splits = {split: self.read_eval_file(cfg, Path(data_file), data)}
        else:
            data.splits = self.prepare(cfg, run_dir, log, fresh=False).splits
            if split not in data.splits:
                raise ValueError(f"split {split!r} not available (have {', '.join(data.splits)})")
        return self.evaluate_split(model, data, split, cfg, final=True, run_dir=run_dir)

    def predict(self, cfg, run_dir: Path, inputs: list[str], log, **options) -> list[str]:
        """One output line per input, in order."""
        model, data = self.load_run(cfg, run_dir, log)
        return self.predict_texts(model, data, inputs, cfg, **options)
