"""Crash-safe training checkpoints in a run directory.

Layout::

    run_dir/checkpoints/step-00001000/       model.safetensors, trainer.pt, DONE (written last)
    run_dir/checkpoints/best-step-00000800/  model.safetensors, best.json
    run_dir/checkpoints/best -> best-step-00000800   (a relative symlink)

Every checkpoint is written into a `.tmp-*` directory next to its final place, fsynced, and
moved into place with one `os.replace`, so a SIGKILL at any moment leaves the previous
complete checkpoint loadable. Readers only trust directories that hold `DONE`. `best` is a
symlink swapped in one `os.replace` (:mod:`attnlab.train.best`). Each checkpoint holds the
generator states of every rank (:mod:`attnlab.train.rng`).

This module knows no model: it takes any `nn.Module`, optimizer and scheduler.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .rng import rng_state, set_rng_state

CHECKPOINTS = "checkpoints"
MODEL_FILE = "model.safetensors"
TRAINER_FILE = "trainer.pt"
DONE_FILE = "DONE"
BEST_DIR = "best"
BEST_FILE = "best.json"
TMP_PREFIX = ".tmp-"
_STEP_DIR = re.compile(r"^step-(\d{8,})$")
_ALIASES_KEY = "attnlab.aliases"  # safetensors metadata: json {alias: stored name} for tied weights


class TrainCheckpointError(ValueError):
    """A training checkpoint that cannot be found or loaded."""


# ---------------------------------------------------------------------------------------- writing


def save_checkpoint(run_dir, step: int, *, model: nn.Module, optimizer=None, scheduler=None,
                    extra: dict | None = None, keep_last: int = 3, rng_states: list[dict] | None = None) -> Path:
    """Write `run_dir/checkpoints/step-{step:08d}/` atomically and prune old checkpoints.

    Args:
        run_dir: the run directory; `checkpoints/` is created inside it.
        step: the global step; names the directory.
        model: its `state_dict` goes to `model.safetensors` (tied weights stored once).
        optimizer, scheduler: their `state_dict`s go to `trainer.pt` when given.
        extra: plain data (dicts, lists, numbers, strings, tensors) such as the data position.
        keep_last: how many complete step checkpoints to keep; the one just written is never pruned.
        rng_states: every rank's generator states (:func:`attnlab.train.rng.rng_state`), by rank;
            default: this process's alone.

    Returns:
        The path of the new checkpoint directory.
    """
    if keep_last < 1:
        raise ValueError(f"save_checkpoint: keep_last must be >= 1, got {keep_last}")
    ckpts = Path(run_dir) / CHECKPOINTS
    ckpts.mkdir(parents=True, exist_ok=True)
    name = checkpoint_dir(run_dir, step).name
    trainer_state = {
        "step": int(step),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_states[0] if rng_states else rng_state(),
        "rng_ranks": list(rng_states) if rng_states else None,
        "extra": extra,
    }

    def write(tmp: Path) -> None:
        _save_model_file(model, tmp / MODEL_FILE)
        with open(tmp / TRAINER_FILE, "wb") as f:
            torch.save(trainer_state, f)
            _fsync_file(f)
        _write_text(tmp / DONE_FILE, "")

    final = _write_atomically(ckpts, name, write)
    _prune(ckpts, keep_last, keep=final)
    return final


def checkpoint_dir(run_dir, step: int) -> Path:
    """Where the step-`step` checkpoint of a run is (or will be)."""
    return Path(run_dir) / CHECKPOINTS / f"step-{step:08d}"


def save_best(run_dir, step: int, model: nn.Module, metric_name: str, value: float, *,
              keep_from: int | None = None) -> Path:
    """Crash-safely make `run_dir/checkpoints/best/` this model; see :func:`attnlab.train.best.save_best`."""
    from .best import save_best as save

    return save(run_dir, step, model, metric_name, value, keep_from=keep_from)


def _write_atomically(parent: Path, name: str, write) -> Path:
    """Fill a temp dir with `write(tmp)`, fsync it, then `os.replace` it to `parent/name`."""
    tmp = parent / f"{TMP_PREFIX}{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    write(tmp)
    _fsync_dir(tmp)
    final = parent / name
    if final.exists():
        # os.replace cannot overwrite a non-empty directory: move the old one aside first. A kill
        # between the two renames leaves no `name/`, but never a half-written one.
        old = parent / f"{TMP_PREFIX}old-{name}-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(parent)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
        _fsync_dir(parent)
    return final


def prune_checkpoints(run_dir, keep_last: int, keep: Path | None = None) -> None:
    """Delete all but the newest `keep_last` complete step checkpoints (never `keep`): what a
    save does after writing, for a run whose last prune was killed."""
    ckpts = Path(run_dir) / CHECKPOINTS
    if ckpts.is_dir():
        _prune(ckpts, keep_last, keep)


def _prune(ckpts: Path, keep_last: int, keep: Path | None) -> None:
    for path in _complete_checkpoints(ckpts)[:-keep_last]:
        if path == keep:
            continue
        _remove(ckpts, path)


def _remove(ckpts: Path, path: Path) -> None:
    """Delete a checkpoint directory (or unlink a symlink). The directory is renamed first, so a
    kill mid-delete leaves a `.tmp-*` dir that readers ignore and the next start removes."""
    if path.is_symlink():
        path.unlink()
        return
    doomed = ckpts / f"{TMP_PREFIX}del-{path.name}-{os.getpid()}"
    os.replace(path, doomed)
    shutil.rmtree(doomed)


def _save_model_file(model: nn.Module, path: Path) -> None:
    """`save_file` of the state_dict; identical tied tensors are stored once, other shared views cloned."""
    tensors, aliases, seen = {}, {}, {}
    for key, t in model.state_dict().items():
        t = t.detach()
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if t.numel() > 0 and ident in seen:
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        tensors[key] = t.to("cpu").contiguous().clone()  # clone: no two entries share storage
    save_file(tensors, str(path), metadata={_ALIASES_KEY: json.dumps(aliases)})
    with open(path, "rb+") as f:
        _fsync_file(f)


# ---------------------------------------------------------------------------------------- reading


def latest_checkpoint(run_dir) -> Path | None:
    """The newest complete (`DONE`) step checkpoint of a run, or None when there is none."""
    ckpts = Path(run_dir) / CHECKPOINTS
    found = _complete_checkpoints(ckpts) if ckpts.is_dir() else []
    return found[-1] if found else None


def load_checkpoint(run_dir_or_ckpt, *, model: nn.Module, optimizer=None, scheduler=None,
                    restore_rng: bool = True, rank: int = 0) -> dict:
    """Load a checkpoint into `model` (and optimizer, scheduler) and restore the RNG states.

    Args:
        run_dir_or_ckpt: a run directory (its newest loadable checkpoint is used) or one
            `step-*` checkpoint directory (used as is, with no fallback).
        restore_rng: restore python `random`, numpy, torch CPU (and CUDA) generator states.
        rank: whose generator states to restore, when the checkpoint holds every rank's.

    Returns:
        `{"step", "extra", "path", "rng_ranks"}` (how many ranks' generator states the checkpoint
        holds: 0 in checkpoints of older versions, which hold rank 0's alone), plus
        `"fallback_from"` (the corrupt newer checkpoints, newest first) when the newest could not
        be read and an older one was loaded instead.

    Raises:
        TrainCheckpointError: the path is neither a run nor a checkpoint, or no checkpoint is loadable.
    """
    path = Path(run_dir_or_ckpt)
    if (path / DONE_FILE).is_file() or _STEP_DIR.match(path.name):
        if not (path / DONE_FILE).is_file():
            raise TrainCheckpointError(f"load_checkpoint: {path} is incomplete (no {DONE_FILE}); "
                                  "it was interrupted while being written")
        candidates, single = [path], True
    elif (path / CHECKPOINTS).is_dir():
        candidates, single = _complete_checkpoints(path / CHECKPOINTS)[::-1], False
        if not candidates:
            raise TrainCheckpointError(f"load_checkpoint: {path} has no complete checkpoint in {CHECKPOINTS}/")
    else:
        raise TrainCheckpointError(
            f"load_checkpoint: {path} is not a run directory (no {CHECKPOINTS}/) nor a checkpoint")

    bad: list[Path] = []
    for ckpt in candidates:
        try:
            weights = _read_model_file(ckpt / MODEL_FILE)
            state = torch.load(ckpt / TRAINER_FILE, map_location="cpu", weights_only=True)
        except Exception as e:  # any unreadable file means a corrupt checkpoint
            if single:
                raise TrainCheckpointError(f"load_checkpoint: {ckpt} is corrupt: {e}") from e
            warnings.warn(f"load_checkpoint: {ckpt} is corrupt ({type(e).__name__}); "
                          "falling back to the previous checkpoint", stacklevel=2)
            bad.append(ckpt)
            continue
        model.load_state_dict(weights)
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        ranks = state.get("rng_ranks") or []
        if restore_rng:
            set_rng_state(ranks[rank] if rank < len(ranks) else state["rng"])
        out = {"step": state["step"], "extra": state["extra"], "path": ckpt, "rng_ranks": len(ranks)}
        if bad:
            out["fallback_from"] = bad
        return out
    raise TrainCheckpointError(f"load_checkpoint: no loadable checkpoint in {path / CHECKPOINTS}; "
                          f"corrupt: {', '.join(p.name for p in bad)}")


def average_checkpoints(paths, model: nn.Module) -> None:
    """Load the element-wise mean of the model weights of several checkpoints into `model`.

    Args:
        paths: checkpoint directories (or `model.safetensors` files). Floating tensors are
            averaged in float64; other tensors (integer buffers) are taken from the last path.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("average_checkpoints: no paths given")
    total: dict[str, torch.Tensor] = {}
    for p in paths:
        weights = _read_model_file(p / MODEL_FILE if p.is_dir() else p)
        for key, t in weights.items():
            if t.is_floating_point():
                total[key] = total[key] + t.double() if key in total else t.double()
            else:
                total[key] = t
    ref = model.state_dict()
    mean = {k: (t / len(paths)).to(ref[k].dtype) if t.is_floating_point() else t
            for k, t in total.items()}
    model.load_state_dict(mean)


def _read_model_file(path: Path) -> dict[str, torch.Tensor]:
    """The state_dict saved by `_save_model_file`, with tied aliases filled back in."""
    weights = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        aliases = json.loads((f.metadata() or {}).get(_ALIASES_KEY, "{}"))
    for alias, stored in aliases.items():
        weights[alias] = weights[stored]
    return weights


def _complete_checkpoints(ckpts: Path) -> list[Path]:
    """Complete `step-*` dirs, oldest first; `.tmp-*` and unfinished dirs are ignored."""
    found = []
    for p in ckpts.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / DONE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


# ---------------------------------------------------------------------------------------- fs


def _write_text(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        _fsync_file(f)


def _fsync_file(f) -> None:
    f.flush()
    os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
