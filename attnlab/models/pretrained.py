"""``load_pretrained``: a checkpoint directory (or a Hugging Face Hub name) to an attnlab model.

    model = load_pretrained("path/to/all-MiniLM-L6-v2")      # Hugging Face BERT -> Encoder
    model = load_pretrained("runs/my-encoder")               # attnlab's own save_pretrained

Dispatch reads ``config.json``: its ``model_type`` picks a loader from :data:`LOADERS`; a config
without one is matched by its ``architectures``. A new format is one entry:
``register_loader("gpt2", load_hf_gpt2, architectures=("GPT2LMHeadModel",))``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from torch import nn

from ..registry import Registry
from .checkpoint import (
    ATTNLAB_MODEL_TYPE, CONFIG_FILE, CheckpointError, CheckpointNotADirectoryError, CheckpointNotFoundError,
    load_attnlab, read_json,
)
from .hf_bert import ARCHITECTURES as BERT_ARCHITECTURES
from .hf_bert import load_hf_bert
from .hf_gpt2 import ARCHITECTURES as GPT2_ARCHITECTURES
from .hf_gpt2 import load_hf_gpt2

Loader = Callable[[Path, dict], nn.Module]
# model_type -> loader(directory, parsed config.json)
LOADERS: Registry[Loader] = Registry("checkpoint loader")
LOADERS.register(ATTNLAB_MODEL_TYPE, load_attnlab)
LOADERS.register("bert", load_hf_bert)
LOADERS.register("gpt2", load_hf_gpt2)
# architecture name -> model_type, for configs that lack model_type
ARCHITECTURE_TYPES: dict[str, str] = {
    **{a: "bert" for a in BERT_ARCHITECTURES}, **{a: "gpt2" for a in GPT2_ARCHITECTURES},
}

# What snapshot_download fetches: configs, weights and tokenizer files, nothing else.
HUB_PATTERNS = ["*.json", "*.safetensors", "pytorch_model.bin", "vocab.txt", "merges.txt", "*.model"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def register_loader(model_type: str, loader: Loader, architectures: tuple[str, ...] = ()) -> None:
    """Add a checkpoint format.

    Args:
        model_type: the ``config.json`` ``model_type`` it handles.
        loader: ``(directory, config dict) -> nn.Module``.
        architectures: ``architectures`` names that mean this model_type when it is absent.

    Raises:
        ValueError: another loader already handles ``model_type``, or an architecture already
            means another model_type. Registering the same loader again is fine.
    """
    for arch in architectures:
        if ARCHITECTURE_TYPES.get(arch, model_type) != model_type:
            raise ValueError(f"architecture {arch!r} already means model_type {ARCHITECTURE_TYPES[arch]!r}, "
                             f"not {model_type!r}")
    LOADERS.register(model_type, loader)
    for arch in architectures:
        ARCHITECTURE_TYPES[arch] = model_type


def resolve_checkpoint(name_or_path: str | Path, revision: str | None = None) -> Path:
    """A local directory for ``name_or_path``: the directory itself, or a Hub snapshot.

    Args:
        name_or_path: a local directory, or a Hub repo id such as
            ``"sentence-transformers/all-MiniLM-L6-v2"`` (downloaded with
            ``huggingface_hub.snapshot_download``, which must be installed).
        revision: Hub revision (branch, tag or commit) for a repo id.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointNotADirectoryError(
            f"load_pretrained: {path} is a file; pass the checkpoint directory that holds it ({path.parent})")
    name = str(name_or_path)
    if not _HUB_ID.match(name):
        raise CheckpointNotFoundError(f"load_pretrained: no directory {path}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointNotFoundError(
            f"load_pretrained: {name!r} is not a local directory, and huggingface_hub is not installed "
            "to fetch it from the Hub (pip install huggingface_hub)"
        ) from None
    try:
        return Path(snapshot_download(repo_id=name, revision=revision, allow_patterns=HUB_PATTERNS))
    except Exception as e:  # noqa: BLE001 - network, auth and not-found errors all end here
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointNotFoundError(
            f"load_pretrained: {name!r} is not a local directory and could not be fetched from the Hub: {first}"
        ) from None


def load_pretrained(name_or_path: str | Path, *, revision: str | None = None) -> nn.Module:
    """Load a model from a checkpoint directory or a Hugging Face Hub repo id.

    Args:
        name_or_path: a directory with ``config.json`` and weights (``model.safetensors``,
            sharded safetensors, or ``pytorch_model.bin`` read with ``weights_only=True``),
            or a Hub repo id.
        revision: Hub revision, for a repo id.

    Returns:
        The model in eval mode.

    Raises:
        CheckpointError: every refusal, as one line naming the file: no such directory, no
            config.json or no weights (:class:`CheckpointNotFoundError`, also a FileNotFoundError),
            a file instead of a directory (also a NotADirectoryError), a config.json that is not
            JSON or names an unsupported model_type/architecture (lists the supported ones), a
            weights file that is empty, truncated or would run code, missing, unexpected or
            misshapen weights. The config is checked before the weights are looked for.
    """
    directory = resolve_checkpoint(name_or_path, revision)
    cfg_path = directory / CONFIG_FILE
    if not cfg_path.is_file():
        raise CheckpointNotFoundError(f"load_pretrained: {directory} has no {CONFIG_FILE}")
    config = read_json(cfg_path)
    return LOADERS.get(_model_type(config, cfg_path))(directory, config)


def supported() -> str:
    """A one-line description of the formats :func:`load_pretrained` reads."""
    return f"model_type in {LOADERS.names()}; architectures {sorted(ARCHITECTURE_TYPES)}"


def _model_type(config: dict, where: Path) -> str:
    model_type = config.get("model_type")
    if model_type in LOADERS:
        return model_type
    archs = config.get("architectures") or []
    for arch in archs:
        if arch in ARCHITECTURE_TYPES and model_type is None:
            return ARCHITECTURE_TYPES[arch]
    what = f"model_type={model_type!r}" if model_type is not None else f"architectures={archs}"
    raise CheckpointError(f"{where}: unsupported {what}; supported: {supported()}")


__all__ = ["load_pretrained", "register_loader", "resolve_checkpoint", "LOADERS", "ARCHITECTURE_TYPES", "supported"]
