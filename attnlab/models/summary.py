"""What ``attnlab models list`` and ``attnlab models info`` print: sizes without building weights."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .registry import get_config, model_names


@dataclass
class ModelSummary:
    """A registered model described: its family, config, parameter count and weight shapes."""

    name: str
    family: str
    config: dict
    num_params: int
    shapes: list[tuple[str, tuple[int, ...]]]


def summarize(name: str, **overrides) -> ModelSummary:
    """Describe the model registered under ``name``, built on the meta device (no memory used).

    Args:
        name: a registered model name.
        **overrides: config fields to change, as for :func:`attnlab.models.create`.
    """
    config = get_config(name, **overrides)
    with torch.device("meta"):
        model = config.build()
    shapes = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    num = sum(p.numel() for p in model.parameters())
    return ModelSummary(name, config.family, config.to_dict(), num, shapes)


def summarize_all() -> list[ModelSummary]:
    """:func:`summarize` for every registered model."""
    return [summarize(name) for name in model_names()]
