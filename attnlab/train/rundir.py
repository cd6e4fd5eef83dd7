"""Run directories: ``runs/<recipe>-<timestamp>/`` and the files every run keeps there.

    config.yaml        the resolved config          tokenizer/       the tokenizer files
    checkpoints/       last K steps + best/         metrics.jsonl    one JSON per log/eval step
    events.out.tfevents.*  TensorBoard              report.json      the final metrics
    model/             the final model (config.json + model.safetensors)
    predictions/       decoded outputs per split
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path


__all__ = [
    "CONFIG_FILE", "REPORT_FILE", "TOKENIZER_DIR", "MODEL_DIR", "PREDICTIONS_DIR", "RunDirError",
    "new_run_dir", "check_run_dir",
]

CONFIG_FILE = "config.yaml"
REPORT_FILE = "report.json"
TOKENIZER_DIR = "tokenizer"
MODEL_DIR = "model"
PREDICTIONS_DIR = "predictions"


class RunDirError(ValueError):
    """A path that should be a run directory is not one."""


def new_run_dir(root, recipe: str) -> Path:
    """A fresh ``root/<recipe>-<YYYYmmdd-HHMMSS>`` (with ``-2``, ``-3``... if taken), created.

    Args:
        root: the parent folder (``runs`` by default in the CLI).
        recipe: the recipe or preset name.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = f"{recipe}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    for k in range(1, 1000):
        path = root / (base if k == 1 else f"{base}-{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RunDirError(f"{root}: could not create a new run directory for {recipe}")


def check_run_dir(path) -> Path:
    """``path`` if it is a run directory (holds ``config.yaml``), else a one-line error."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path}: no such run directory")
    if not (path / CONFIG_FILE).is_file():
        raise RunDirError(f"{path} is not a run directory (no {CONFIG_FILE}); "
                          "pass a directory made by `attnlab train`")
    return path
