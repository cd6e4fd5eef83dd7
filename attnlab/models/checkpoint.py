"""Reading and writing weights: attnlab's own checkpoints and the tensors of foreign ones.

attnlab's format is a directory with

* ``config.json``: ``{"model_type": "attnlab", "family": ..., "config": {...fields...}}``;
* ``model.safetensors``: the state dict (tied parameters stored once).

    model.save_pretrained("out/")            # any PretrainedModel
    load_pretrained("out/")                  # attnlab.models.load_pretrained, exact round trip

For converters of other formats (Hugging Face BERT, GPT-2) this module reads the tensors of a
checkpoint (safetensors, sharded or not, or ``pytorch_model.bin`` through
``torch.load(weights_only=True)``) and copies mapped tensors into a model.

Every refusal is one :class:`CheckpointError` line that names the file, says what is wrong and,
where there is something to do, what: an empty, truncated or Git LFS pointer file, a pickle that
would run code (the global it names, never a suggestion to unpickle it anyway), missing or
unexpected weights (a few named, and the count), a weight of the wrong shape or dtype.
"""

from __future__ import annotations

import json
import pickletools
import warnings
import zipfile
from pathlib import Path

import torch
from torch import Tensor, nn

from ..io import atomic_path, write_text
from .registry import ConfigError, ModelConfig, config_class

ATTNLAB_MODEL_TYPE = "attnlab"
CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_FILE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFETENSORS_FILE, SAFETENSORS_INDEX, BIN_FILE, BIN_INDEX)
REFETCH = "fetch it again"


class CheckpointError(ValueError):
    """A model checkpoint that cannot be loaded; the base of every refusal of ``load_pretrained``."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No such checkpoint directory, or a file it needs (config.json, weights, a shard) is absent."""


class CheckpointNotADirectoryError(CheckpointError, NotADirectoryError):
    """A file was given where the checkpoint directory was expected."""


class CheckpointConfigError(CheckpointError, ConfigError):
    """A checkpoint's config.json holds a config that attnlab rejects (key or value named)."""


class PretrainedModel(nn.Module):
    """Base class of attnlab models that have a typed ``config`` and save themselves."""

    config: ModelConfig

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed),
        each atomically.

        Args:
            directory: target directory; existing files of the same names are overwritten.
        """
        from safetensors.torch import save_model

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"model_type": ATTNLAB_MODEL_TYPE, "family": self.config.family, "config": self.config.to_dict()}
        # Each file atomically; the weights first, so a new directory gets config.json only once
        # its weights are complete.
        with atomic_path(out / SAFETENSORS_FILE) as tmp:
            save_model(self, str(tmp), metadata={"format": "pt", "attnlab_family": self.config.family})
        write_text(out / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
        return out


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; an unreadable file is one line with its line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON (not UTF-8 text at byte {e.start}); {REFETCH}") from None
    if not text.strip():
        raise CheckpointError(f"{path} is empty; {REFETCH}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                              "fix it or fetch it again") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, found a {type(data).__name__}")
    return data


def load_attnlab(directory: Path, meta: dict) -> nn.Module:
    """Rebuild an attnlab model from its ``config.json`` (already parsed) and weights."""
    cfg_file = directory / CONFIG_FILE
    if "family" not in meta or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{cfg_file}: an attnlab config needs 'family' and a 'config' object")
    try:
        cls = config_class(meta["family"])
    except ValueError as e:
        raise CheckpointError(f"{cfg_file}: {e}") from None
    try:
        cfg = cls.from_dict(meta["config"])
    except ConfigError as e:
        raise CheckpointConfigError(f"{cfg_file}: {e}") from None
    weights = directory / SAFETENSORS_FILE
    if not weights.is_file():
        raise CheckpointNotFoundError(f"{directory}: attnlab checkpoint has config.json but no {SAFETENSORS_FILE}")
    tensors = _read_safetensors(weights)
    model = cfg.build()
    copy_weights(model, tensors, _own_names(model, tensors), f"{weights}: does not match its config.json",
                 strict=True)
    return model.eval()


def _own_names(model: nn.Module, tensors: dict[str, Tensor]) -> dict[str, str]:
    """Model name -> file name for attnlab's format, where tied entries are stored under one name."""
    state = model.state_dict()
    groups: dict[tuple, list[str]] = {}
    for name, t in state.items():
        if t.numel():
            groups.setdefault((t.untyped_storage().data_ptr(), t.storage_offset(), t.shape, t.stride()),
                              []).append(name)
    stored = {}
    for names in groups.values():
        stored.update({n: next((m for m in names if m in tensors), n) for n in names})
    return {name: stored.get(name, name) for name in state}


# ----------------------------------------------------------------------------- foreign tensors


def weights_file(directory: Path) -> Path:
    """The file :func:`read_state_dict` reads in ``directory``: the first of :data:`WEIGHT_FILES`."""
    d = Path(directory)
    for name in WEIGHT_FILES:
        if (d / name).is_file():
            return d / name
    has = f" {CONFIG_FILE} but" if (d / CONFIG_FILE).is_file() else ""
    raise CheckpointNotFoundError(f"load_pretrained: {d} has{has} no weights; "
                                  f"expected one of {', '.join(WEIGHT_FILES)}")


def read_state_dict(directory: Path) -> dict[str, Tensor]:
    """All tensors of a checkpoint directory, by their names in the file.

    Looks for ``model.safetensors``, ``model.safetensors.index.json`` (shards),
    ``pytorch_model.bin`` or ``pytorch_model.bin.index.json``, in that order. Pickled files are
    read with ``torch.load(weights_only=True)`` only.

    Raises:
        CheckpointError: no weights (a :class:`CheckpointNotFoundError`), or a file that is
            empty, truncated, a Git LFS pointer, not a state dict, or a pickle that would run code.
    """
    path = weights_file(directory)
    if path.name == SAFETENSORS_INDEX:
        return _read_shards(path, _read_safetensors)
    if path.name == BIN_INDEX:
        return _read_shards(path, _read_bin)
    return _read_safetensors(path) if path.suffix == ".safetensors" else _read_bin(path)


def _check_file(path: Path) -> int:
    """The size of a weights file that is neither empty nor a Git LFS pointer."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); the download or copy was interrupted, {REFETCH}")
    with open(path, "rb") as f:
        if f.read(24) == b"version https://git-lfs.":
            raise CheckpointError(f"{path} is a Git LFS pointer, not the weights; run `git lfs pull` in {path.parent}")
    return size


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    size = _check_file(path)
    with open(path, "rb") as f:  # the header: 8 bytes of length, then JSON with each tensor's data_offsets
        n = int.from_bytes(f.read(8), "little")
        if 8 + n > size:
            raise CheckpointError(f"{path} is truncated or not a safetensors file: its header claims {n:,} bytes "
                                  f"but the file has {size:,}; {REFETCH}")
        try:
            header = json.loads(f.read(n))
            need = 8 + n + max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError):
            raise CheckpointError(f"{path} is not a safetensors file (its header is not a tensor table); "
                                  f"{REFETCH}") from None
    if need > size:
        raise CheckpointError(f"{path} is truncated: {size:,} of {need:,} bytes; the download or copy was "
                              f"interrupted, {REFETCH}")
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001 - SafetensorError and dtype/ABI errors name no file
        raise CheckpointError(f"{path} is not a readable safetensors file ({_first_line(e)}); {REFETCH}") from None


def _read_bin(path: Path) -> dict[str, Tensor]:
    _check_file(path)
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"
    if zipped and not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is truncated (a zip archive without its end); {REFETCH}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing them
            warnings.simplefilter("ignore")
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling errors come in many types
        raise CheckpointError(_refusal(path, e, zipped)) from None
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path} holds a {type(sd).__name__}, not a state dict of tensors")
    bad = [k for k, v in sd.items() if not isinstance(v, Tensor)]
    if len(bad) == 1:
        raise CheckpointError(f"{path} is not a flat state dict: its entry {bad[0]!r} is a {type(sd[bad[0]]).__name__}, "
                              "not a tensor; save model.state_dict() itself")
    if bad:
        raise CheckpointError(f"{path} is not a flat state dict: {len(bad)} entries are not tensors ({_few(bad)}); "
                              "save model.state_dict() itself")
    return sd


def _refusal(path: Path, error: Exception, zipped: bool) -> str:
    """One line for a pickle ``torch.load(weights_only=True)`` refused: the globals it would call."""
    try:
        blocked = (torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) if zipped
                   else [g for g in _pickle_globals(path) if not g.startswith(_TENSOR_GLOBALS)])
    except Exception:  # noqa: BLE001 - a file too broken to disassemble
        blocked = []
    if blocked:
        return f"{path} wants to run {', '.join(sorted(blocked)[:3])}; refused. Convert a trusted copy to safetensors"
    if isinstance(error, (EOFError, RuntimeError, OSError)):
        return f"{path} cannot be read ({_first_line(error)}); it may be truncated or corrupt, {REFETCH}"
    return f"{path} cannot be unpickled safely ({_first_line(error)}); refused. Convert a trusted copy to safetensors"


# What a plain state dict saved by torch (legacy format) names; anything else would run code.
_TENSOR_GLOBALS = ("torch.", "collections.OrderedDict", "_codecs.encode")


def _pickle_globals(path: Path) -> list[str]:
    """The globals named by the pickles in ``path`` (a legacy torch file holds several), found by
    disassembly: nothing is imported or called. STACK_GLOBAL's two names are the last two strings
    pushed (directly or from the memo)."""
    found, pushed, memo = [], [], {}
    with open(path, "rb") as f:
        try:
            while f.peek(1):
                last = None
                for op, arg, _ in pickletools.genops(f):
                    if op.name in ("GLOBAL", "INST"):
                        found.append(arg.replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(pushed) >= 2:
                        found.append(f"{pushed[-2]}.{pushed[-1]}")
                    elif isinstance(arg, str) and ("UNICODE" in op.name or "STRING" in op.name):
                        pushed.append(arg)
                    elif op.name in ("BINGET", "LONG_BINGET", "GET") and memo.get(arg):
                        pushed.append(memo[arg])
                    elif op.name == "MEMOIZE":
                        memo[len(memo)] = last
                    elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
                        memo[arg] = last
                    if op.name not in ("MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"):
                        last = arg if isinstance(arg, str) else None
        except Exception:  # noqa: BLE001 - tensor bytes after the pickles, or a broken pickle: keep what was found
            pass
    return found


def _read_shards(index: Path, read) -> dict[str, Tensor]:
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index} has no weight_map; {REFETCH}")
    files = sorted(set(weight_map.values()))
    absent = [name for name in files if not (index.parent / name).is_file()]
    if absent:
        raise CheckpointNotFoundError(f"{index} lists {len(absent)} of {len(files)} shards that are not in "
                                      f"{index.parent}: {_few(absent)}; {REFETCH}")
    sd: dict[str, Tensor] = {}
    for name in files:
        sd.update(read(index.parent / name))
    return sd


def check_sizes(config_file: Path, checks: list[tuple[str, int, int | None, str]]) -> None:
    """Refuse a config.json whose sizes disagree with the weights, naming the field and the weight.

    Args:
        config_file: the config.json, for the message.
        checks: ``(config field, its value, the size the weights have or None, which weight says so)``.
    """
    for field, configured, found, evidence in checks:
        if found is not None and found != configured:
            raise CheckpointError(f"{config_file} has {field}={configured} but the weights have {found} ({evidence}); "
                                  "use the config.json that came with these weights")


def layer_count(tensors: dict[str, Tensor], stem: str) -> tuple[int | None, str]:
    """How many layers ``stem0.``, ``stem1.``, ... the tensors hold, and a note saying which."""
    found = {int(k[len(stem):].split(".", 1)[0]) for k in tensors
             if k.startswith(stem) and k[len(stem):].split(".", 1)[0].isdigit()}
    if not found:
        return None, ""
    return max(found) + 1, f"{stem}0 to {stem}{max(found)}"


def dim_of(tensors: dict[str, Tensor], name: str, dim: int) -> tuple[int | None, str]:
    """Size ``dim`` of tensor ``name`` (None when absent), and a note naming it and its shape."""
    t = tensors.get(name)
    if t is None or t.dim() <= dim:
        return None, ""
    return t.shape[dim], f"{name} has shape {tuple(t.shape)}"


def copy_weights(model: nn.Module, tensors: dict[str, Tensor], sources: dict[str, str], where: str,
                 strict: bool = False) -> None:
    """Copy checkpoint tensors into ``model``'s parameters and buffers.

    Args:
        model: the target module.
        tensors: the checkpoint's tensors by checkpoint name.
        sources: target name (in ``model.state_dict()``) -> checkpoint name, for every target
            that must be filled.
        where: the checkpoint, for error messages.
        strict: refuse checkpoint tensors that no target reads.

    Raises:
        CheckpointError: a target without its checkpoint tensor, a model entry that no source
            fills, a tensor no target reads (``strict``), a shape mismatch (both names and both
            shapes) or an integer tensor for a floating-point target (a few named, and the count).
    """
    state = model.state_dict()
    unfilled = [t for t in state if t not in sources]
    if unfilled:
        raise CheckpointError(f"{where}: the converter fills no weight for {_few(unfilled)} ({len(unfilled)})")
    strays = [tgt for tgt in sources if tgt not in state]
    if strays:
        raise CheckpointError(f"{where}: converter targets {_few(strays)}, which the model does not have")
    missing = [src if src == tgt else f"{src} (for {tgt})" for tgt, src in sources.items() if src not in tensors]
    if missing:
        raise CheckpointError(f"{where}: missing weights: {_few(missing)} ({len(missing)} of {len(sources)} missing)")
    if strict:
        read = set(sources.values())
        unexpected = [k for k in tensors if k not in read]
        if unexpected:
            raise CheckpointError(f"{where}: unexpected weights: {_few(unexpected)} "
                                  f"({len(unexpected)} the model does not have)")
    shapes = [(tgt, src) for tgt, src in sources.items() if tuple(state[tgt].shape) != tuple(tensors[src].shape)]
    if shapes:
        (tgt, src), more = shapes[0], len(shapes) - 1
        raise CheckpointError(
            f"{where}: weight {src} has shape {tuple(tensors[src].shape)} in the checkpoint but the model's {tgt} "
            f"has shape {tuple(state[tgt].shape)}" + (f" ({more} more of the wrong shape)" if more else "")
        )
    dtypes = [(tgt, src) for tgt, src in sources.items()
              if state[tgt].is_floating_point() != tensors[src].is_floating_point()]
    if dtypes:
        (tgt, src), more = dtypes[0], len(dtypes) - 1
        raise CheckpointError(
            f"{where}: weight {src} has dtype {_dtype(tensors[src])} but the model's {tgt} is {_dtype(state[tgt])}"
            + (f" ({more} more of the wrong kind)" if more else "") + "; integer or quantized weights are not supported"
        )
    with torch.no_grad():
        for tgt, src in sources.items():
            state[tgt].copy_(tensors[src])


def _few(names: list[str], n: int = 3) -> str:
    """The first ``n`` names, and how many more."""
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _dtype(t: Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _first_line(error: BaseException) -> str:
    """An exception as one short line: its first non-empty line that gives no advice about weights_only."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip() and "weights_only" not in ln]
    return lines[0][:200] if lines else type(error).__name__


__all__ = [
    "PretrainedModel", "CheckpointError", "CheckpointNotFoundError", "CheckpointNotADirectoryError",
    "CheckpointConfigError", "load_attnlab", "read_json", "read_state_dict", "weights_file", "copy_weights",
    "check_sizes", "layer_count", "dim_of", "ATTNLAB_MODEL_TYPE", "CONFIG_FILE", "WEIGHT_FILES",
]
