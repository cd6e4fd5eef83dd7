"""`checkpoints/best/`: the best weights on the validation metric, replaced crash-safely.

    run_dir/checkpoints/best-step-00000800/  model.safetensors, best.json
    run_dir/checkpoints/best -> best-step-00000800   (a relative symlink)

A new best is written as a complete `best-step-*` directory (a temp dir, fsynced, renamed), then
the `best` symlink is swapped to it with one `os.replace`, so `best/` is never missing nor
partial. Where the filesystem has no symlinks, `best/` is a directory replaced by two renames
(a kill between them leaves no `best/`).

A resume goes back to a step checkpoint, and `best` must follow: :func:`sync_best` points it
back at the best the checkpoint records (older `best-step-*` directories are kept from that
step on for this), or rewrites it from the checkpoint itself. `.tmp-*` leftovers of a killed
writer are removed by :func:`clean_leftovers`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from torch import nn

from .checkpoint import (BEST_DIR, BEST_FILE, CHECKPOINTS, MODEL_FILE, TMP_PREFIX, _fsync_dir, _remove,
                         _save_model_file, _write_atomically, _write_text)

__all__ = ["save_best", "read_best", "prune_best", "sync_best", "clean_leftovers"]

_BEST_TARGET = re.compile(r"^best-step-(\d{8,})(?:-\w+)?$")


def save_best(run_dir, step: int, model: nn.Module, metric_name: str, value: float, *,
              keep_from: int | None = None) -> Path:
    """Make `run_dir/checkpoints/best/` this model with a `best.json` record, crash-safely.

    The weights go to a new complete directory `best-step-{step:08d}/`; then the `best` symlink
    is swapped to it with one `os.replace`, so a kill at any moment leaves the previous or the
    new best, whole. Deciding whether `value` is better than the previous best is the caller's job.

    Args:
        keep_from: keep the `best-step-*` directories of this step and later (a resume may point
            `best` back to the best that the newest step checkpoint records); default: keep only
            the new one.

    Returns:
        `run_dir/checkpoints/best`.
    """
    ckpts = Path(run_dir) / CHECKPOINTS
    ckpts.mkdir(parents=True, exist_ok=True)
    record = {"step": int(step), "metric": metric_name, "value": float(value)}

    def write(tmp: Path) -> None:
        _save_model_file(model, tmp / MODEL_FILE)
        _write_text(tmp / BEST_FILE, json.dumps(record) + "\n")

    name, k = f"best-step-{step:08d}", 1
    while (ckpts / name).exists():  # the same step again: never overwrite what `best` may point to
        k += 1
        name = f"best-step-{step:08d}-{k}"
    _write_atomically(ckpts, name, write)
    _point_best(ckpts, name)
    prune_best(run_dir, step if keep_from is None else keep_from)
    return ckpts / BEST_DIR


def read_best(run_dir) -> dict | None:
    """The `best.json` record of `run_dir/checkpoints/best/` (step, metric, value), or None."""
    path = Path(run_dir) / CHECKPOINTS / BEST_DIR / BEST_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def prune_best(run_dir, keep_from: int | None) -> None:
    """Delete the `best-step-*` directories before step `keep_from` that `best` does not point to."""
    ckpts = Path(run_dir) / CHECKPOINTS
    current = _best_target(ckpts)
    for path, step in _best_targets(ckpts):
        if path.name != current and (keep_from is None or step < keep_from):
            _remove(ckpts, path)


def sync_best(run_dir, step: int, best_step: int | None, write_current=None) -> str | None:
    """Make `best/` agree with a run resumed from its step-`step` checkpoint, whose state says the
    best evaluation so far was at `best_step` (None: none yet).

    `best/` may be ahead of the checkpoint (written at a later evaluation that a kill abandoned)
    or behind it (a kill between the step checkpoint and the `best` swap). `best` is pointed back
    at `best-step-{best_step}`, or, when the checkpoint itself is the best, `write_current()`
    rewrites it (by calling :func:`save_best`); the directories of steps after `step`, and of
    steps before `best_step`, are deleted.

    Returns:
        None when `best/` is consistent now, else a line saying what could not be recovered.
    """
    ckpts = Path(run_dir) / CHECKPOINTS
    if not ckpts.is_dir():
        return None
    record, warning = read_best(run_dir), None
    link = ckpts / BEST_DIR
    kept = [p for p, s in _best_targets(ckpts) if s == best_step]
    if record is not None and record.get("step") == best_step:
        pass
    elif best_step is None:
        if link.is_symlink() or link.exists():  # from a timeline that the resume abandoned
            _remove(ckpts, link)
    elif kept:
        _point_best(ckpts, kept[-1].name)
    elif best_step == step and write_current is not None:
        write_current()
    else:
        if link.is_symlink() or link.exists():
            _remove(ckpts, link)
        warning = (f"{link} (step {record and record.get('step')}) is not from the resumed run, whose "
                   f"best (step {best_step}) is no longer on disk: removed until the next better evaluation")
    current = _best_target(ckpts)
    for path, s in _best_targets(ckpts):
        if s > step and path.name != current:
            _remove(ckpts, path)
    prune_best(run_dir, best_step)  # and what a killed prune left
    return warning


def clean_leftovers(run_dir) -> list[Path]:
    """Delete the `.tmp-*` entries a killed writer left in `run_dir/checkpoints/`; returns them.

    Only safe while no other process writes to the run (the trainer calls it at start)."""
    ckpts = Path(run_dir) / CHECKPOINTS
    found = sorted(p for p in ckpts.iterdir() if p.name.startswith(TMP_PREFIX)) if ckpts.is_dir() else []
    for path in found:
        if path.is_symlink() or not path.is_dir():
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)
    return found


def _best_targets(ckpts: Path) -> list[tuple[Path, int]]:
    found = []
    for p in ckpts.iterdir():
        m = _BEST_TARGET.match(p.name)
        if m and p.is_dir() and not p.is_symlink():
            found.append((p, int(m.group(1))))
    return sorted(found, key=lambda x: (x[1], x[0].name))


def _best_target(ckpts: Path) -> str | None:
    link = ckpts / BEST_DIR
    return os.readlink(link) if link.is_symlink() else None


def _point_best(ckpts: Path, name: str) -> None:
    """Swap `ckpts/best` to the complete directory `ckpts/name` with one `os.replace`."""
    link = ckpts / BEST_DIR
    tmp = ckpts / f"{TMP_PREFIX}link-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    try:
        os.symlink(name, tmp, target_is_directory=True)  # relative: the run dir may move
    except (OSError, NotImplementedError):
        _replace_dir(ckpts, name)
        return
    if link.is_dir() and not link.is_symlink():
        # A `best/` directory of an older version: kept as a `best-step-*` directory. This one
        # migration has a moment without `best/`.
        legacy = read_best(ckpts.parent) or {}
        aside = ckpts / f"best-step-{int(legacy.get('step', 0)):08d}-legacy"
        if aside.exists():
            aside = ckpts / f"{TMP_PREFIX}old-best-{os.getpid()}"
        os.replace(link, aside)
    os.replace(tmp, link)
    _fsync_dir(ckpts)


def _replace_dir(ckpts: Path, name: str) -> None:
    """Without symlinks: `best/` becomes a copy of `name/`, replaced by two renames."""

    def write(tmp: Path) -> None:
        for f in (ckpts / name).iterdir():
            shutil.copyfile(f, tmp / f.name)
    _write_atomically(ckpts, BEST_DIR, write)
