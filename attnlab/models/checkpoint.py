"""Reading and writing weights: attnlab's own checkpoints and the tensors of foreign ones.

attnlab's format is a directory with

* ``config.json``: ``{"model_type": "attnlab", "family": ..., "config": {...fields...}}``;
* ``model.safetensors``: the state dict (tied parameters stored once).

    model.save_pretrained("out/")            # any PretrainedModel
    load_pretrained("out/")                  # attnlab.models.load_pretrained, exact round trip

For converters of other formats (Hugging Face BERT, GPT-2) this module reads the tensors of a
checkpoint (safetensors, sharded or not, or ``pytorch_model.bin`` through
``torch.load(weights_only=True)``) and copies mapped tensors into a model with clear errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from ..io import atomic_path, write_text
from .registry import ModelConfig, config_class

ATTNLAB_MODEL_TYPE = "attnlab"
CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_FILE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFETENSORS_FILE, SAFETENSORS_INDEX, BIN_FILE, BIN_INDEX)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: unsupported, incomplete or of the wrong shapes."""


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


def load_attnlab(directory: Path, meta: dict) -> nn.Module:
    """Rebuild an attnlab model from its ``config.json`` (already parsed) and weights."""
    from safetensors.torch import load_model

    if "family" not in meta or "config" not in meta:
        raise CheckpointError(f"{directory / CONFIG_FILE}: an attnlab config needs 'family' and 'config' keys")
    cfg = config_class(meta["family"]).from_dict(meta["config"])
    model = cfg.build()
    weights = directory / SAFETENSORS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{directory}: attnlab checkpoint has config.json but no {SAFETENSORS_FILE}")
    try:
        load_model(model, str(weights), strict=True)
    except RuntimeError as e:  # missing/unexpected keys or shape mismatch, as one line
        raise CheckpointError(f"{weights}: does not match its config.json: {' '.join(str(e).split())}") from None
    return model.eval()


# ----------------------------------------------------------------------------- foreign tensors


def read_state_dict(directory: Path) -> dict[str, Tensor]:
    """All tensors of a checkpoint directory, by their names in the file.

    Looks for ``model.safetensors``, ``model.safetensors.index.json`` (shards),
    ``pytorch_model.bin`` or ``pytorch_model.bin.index.json``, in that order. Pickled files are
    read with ``torch.load(weights_only=True)`` only.
    """
    d = Path(directory)
    if (d / SAFETENSORS_FILE).is_file():
        return _read_safetensors(d / SAFETENSORS_FILE)
    if (d / SAFETENSORS_INDEX).is_file():
        return _read_shards(d, SAFETENSORS_INDEX, _read_safetensors)
    if (d / BIN_FILE).is_file():
        return _read_bin(d / BIN_FILE)
    if (d / BIN_INDEX).is_file():
        return _read_shards(d, BIN_INDEX, _read_bin)
    raise FileNotFoundError(f"{d}: no weights found; expected one of {', '.join(WEIGHT_FILES)}")


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def _read_bin(path: Path) -> dict[str, Tensor]:
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling errors come in many types
        raise CheckpointError(f"{path}: cannot be read with torch.load(weights_only=True): {e}") from None
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(sd).__name__}")
    return sd


def _read_shards(d: Path, index_name: str, read) -> dict[str, Tensor]:
    index = json.loads((d / index_name).read_text())
    files = sorted(set(index.get("weight_map", {}).values()))
    if not files:
        raise CheckpointError(f"{d / index_name}: has no weight_map")
    sd: dict[str, Tensor] = {}
    for name in files:
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d}: shard {name} listed in {index_name} is missing")
        sd.update(read(d / name))
    return sd


def copy_weights(model: nn.Module, tensors: dict[str, Tensor], sources: dict[str, str], where: str) -> None:
    """Copy checkpoint tensors into ``model``'s parameters and buffers.

    Args:
        model: the target module.
        tensors: the checkpoint's tensors by checkpoint name.
        sources: target name (in ``model.state_dict()``) -> checkpoint name, for every target
            that must be filled.
        where: the checkpoint, for error messages.

    Raises:
        CheckpointError: a target without its checkpoint tensor (all are named), a model entry
            that no source fills, or a shape mismatch (both names and both shapes).
    """
    state = model.state_dict()
    unfilled = [t for t in state if t not in sources]
    if unfilled:
        raise CheckpointError(f"{where}: the converter fills no weight for {', '.join(unfilled[:8])}"
                              + (f" and {len(unfilled) - 8} more" if len(unfilled) > 8 else ""))
    missing = [f"{src} (for {tgt})" for tgt, src in sources.items() if src not in tensors]
    if missing:
        raise CheckpointError(f"{where}: missing weights: {', '.join(missing[:8])}"
                              + (f" and {len(missing) - 8} more" if len(missing) > 8 else ""))
    for tgt, src in sources.items():
        if tgt not in state:
            raise CheckpointError(f"{where}: converter targets {tgt!r}, which the model does not have")
        want, got = tuple(state[tgt].shape), tuple(tensors[src].shape)
        if want != got:
            raise CheckpointError(
                f"{where}: weight {src} has shape {got} in the checkpoint but the model's {tgt} has shape {want}"
            )
    with torch.no_grad():
        for tgt, src in sources.items():
            state[tgt].copy_(tensors[src])


__all__ = [
    "PretrainedModel", "CheckpointError", "load_attnlab", "read_state_dict", "copy_weights",
    "ATTNLAB_MODEL_TYPE", "CONFIG_FILE", "WEIGHT_FILES",
]
