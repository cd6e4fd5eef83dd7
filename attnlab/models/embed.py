"""Sentence embeddings: mean-pooled, L2-normalised encoder states (the sentence-transformers
recipe of all-MiniLM-L6-v2; Reimers & Gurevych 2019).

    vecs = embed("path/to/all-MiniLM-L6-v2", ["a cat", "a dog"])     # (2, 384), unit rows
    sims = vecs @ vecs.T
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .heads import mean_pool
from .pretrained import load_pretrained, resolve_checkpoint


def embed(
    model_or_dir: nn.Module | str | Path,
    sentences: str | Sequence[str],
    *,
    tokenizer=None,
    batch_size: int = 32,
    max_length: int | None = None,
    normalize: bool = True,
) -> Tensor:
    """Embed sentences with an encoder.

    Args:
        model_or_dir: an encoder (returns ``last_hidden_state``), or a checkpoint directory /
            Hub name, whose tokenizer is then loaded too.
        sentences: one string or a list of strings.
        tokenizer: a callable like :func:`attnlab.data.load_tokenizer`'s result; required with a
            model object.
        batch_size: sentences per forward pass.
        max_length: truncate to this many tokens; defaults to the checkpoint's
            ``sentence_bert_config.json`` ``max_seq_length``, else the model's ``max_len``.
        normalize: L2-normalise each embedding.

    Returns:
        (N, hidden) float tensor, one row per sentence, in input order.
    """
    if isinstance(model_or_dir, nn.Module):
        model = model_or_dir
        if tokenizer is None:
            raise ValueError("embed: pass tokenizer= with a model object (or pass a checkpoint directory)")
    else:
        directory = resolve_checkpoint(model_or_dir)
        model = load_pretrained(directory)
        if tokenizer is None:
            from ..data import load_tokenizer  # data feeds models; imported only for this shortcut

            tokenizer = load_tokenizer(directory)
        if max_length is None:
            max_length = _sentence_max_length(directory)
    if max_length is None:
        max_length = getattr(getattr(model, "config", None), "max_len", None)
    if isinstance(sentences, str):
        sentences = [sentences]
    if batch_size < 1:
        raise ValueError(f"embed: batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    parts = []
    try:
        with torch.no_grad():
            for i in range(0, len(sentences), batch_size):
                batch = tokenizer(list(sentences[i:i + batch_size]), padding=True, truncation=True,
                                  max_length=max_length, return_tensors="pt")
                batch = {k: v.to(device) for k, v in batch.items()}
                hidden = model(**batch).last_hidden_state  # (b, L, hidden)
                pooled = mean_pool(hidden, batch["attention_mask"])  # (b, hidden)
                parts.append(F.normalize(pooled, p=2, dim=1) if normalize else pooled)
    finally:
        model.train(was_training)
    if not parts:
        width = getattr(getattr(model, "config", None), "d_model", 0)
        return torch.empty(0, width)
    return torch.cat(parts)  # (N, hidden)


def _sentence_max_length(directory: Path) -> int | None:
    cfg = directory / "sentence_bert_config.json"
    if cfg.is_file():
        return json.loads(cfg.read_text()).get("max_seq_length")
    return None


__all__ = ["embed"]
