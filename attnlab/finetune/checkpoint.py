"""Adapter checkpoints: only the trained weights, beside a reference to the base checkpoint.

    save_adapter(model, "runs/sst2-lora", cfg, base="sentence-transformers/all-MiniLM-L6-v2")
    model = load_adapter(load_base(...), "runs/sst2-lora")   # a freshly built base model

A directory holds

* ``adapter_model.safetensors``: the method's weights and the ``modules_to_save``; for LoRA,
  AdaLoRA and IA³ under peft's keys (``encoder.layers.0.self_attn.q_proj.lora_A.weight``), which
  ``peft.set_peft_model_state_dict`` accepts;
* ``adapter_config.json``: ``base`` (the base checkpoint's reference) and the
  :class:`FinetuneConfig` fields (``method``, its settings).

Both are written atomically, the weights first.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor, nn

from ..config import ConfigError, load_config
from ..io import atomic_path, write_json
from ..models.checkpoint import CheckpointError
from .apply import apply_finetune
from .config import FinetuneConfig
from .method import Applied, applied, inside, load_parameters

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def save_adapter(model: nn.Module, directory: str | Path, cfg: FinetuneConfig, base: str) -> Path:
    """Write the trained weights and the config of a fine-tuned model.

    Args:
        model: a model with ``cfg`` applied (:func:`~attnlab.finetune.apply_finetune`).
        directory: created if needed; files of the same names are replaced.
        cfg: the config applied (written to ``adapter_config.json``).
        base: how to get the base model back, e.g. a checkpoint directory or a Hub name.

    Returns:
        The directory.
    """
    from safetensors.torch import save_file

    record = applied(model)
    if cfg.method != record.cfg.method:
        raise ValueError(f"save_adapter: cfg.method={cfg.method!r} but the model has {record.cfg.method!r} applied")
    method_state, saved = _adapter_state(model, record)
    tensors = {k: v.detach().cpu().contiguous() for k, v in {**saved, **method_state}.items()}
    out = Path(directory)
    with atomic_path(out / ADAPTER_WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "attnlab_finetune": cfg.method})
    write_json(out / ADAPTER_CONFIG, {"base": base, **cfg.model_dump(mode="json")})
    return out


def read_adapter_config(directory: str | Path) -> tuple[FinetuneConfig, str]:
    """The ``(config, base)`` of an adapter directory.

    Raises:
        FileNotFoundError: no ``adapter_config.json``.
        ConfigError: the file is not valid JSON, lacks ``base`` or holds a bad config (the
            message names the file).
    """
    path = Path(directory) / ADAPTER_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{Path(directory)}: no {ADAPTER_CONFIG}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("base"), str):
        raise ConfigError(f"{path}: expected a mapping with a 'base' string")
    base = data.pop("base")
    try:
        return load_config(FinetuneConfig, data), base
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def load_adapter(model: nn.Module, directory: str | Path) -> nn.Module:
    """Apply the method of ``directory`` to a freshly built base model and load its weights.

    Args:
        model: the base model (as ``adapter_config.json``'s ``base`` describes), without any
            method applied; changed in place.
        directory: written by :func:`save_adapter`.

    Returns:
        ``model``, with the method applied and the trained weights loaded.

    Raises:
        CheckpointError: the weights file lacks a weight the model needs, holds one it does
            not have, or a shape differs (one line naming the file). The method has been
            applied by then; rebuild the base model before trying again.
    """
    from safetensors.torch import load_file

    cfg, _ = read_adapter_config(directory)
    weights = Path(directory) / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{Path(directory)}: no {ADAPTER_WEIGHTS}")
    state = load_file(str(weights))
    apply_finetune(model, cfg)
    record = applied(model)
    method_state, saved = _adapter_state(model, record)
    want = {**saved, **method_state}
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    if missing or extra:
        raise CheckpointError(f"{weights}: does not fit the {cfg.method} model: "
                              + "; ".join(f"{what} {_few(keys)}" for what, keys in
                                          (("missing", missing), ("unexpected", extra)) if keys))
    for key, t in want.items():
        if tuple(state[key].shape) != tuple(t.shape):
            raise CheckpointError(f"{weights}: {key} has shape {tuple(state[key].shape)} in the file "
                                  f"but {tuple(t.shape)} in the model")
    record.method.load_state_dict(model, {k: state[k] for k in method_state})
    load_parameters(model, {k: state[k] for k in saved if k not in method_state})
    return model


def _adapter_state(model: nn.Module, record: Applied) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(method's weights, modules_to_save state)``: what an adapter file holds."""
    saved = {k: v for k, v in model.state_dict().items() if inside(k, record.cfg.modules_to_save)}
    return record.method.state_dict(model), saved


def _few(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


__all__ = ["save_adapter", "load_adapter", "read_adapter_config", "ADAPTER_WEIGHTS", "ADAPTER_CONFIG"]
