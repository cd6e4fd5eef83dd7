"""LoRA, AdaLoRA and IA³ on attnlab modules, through the ``peft`` library.

    method = get_method("lora")
    tuner = method.apply(model, FinetuneConfig(method="lora"))   # model itself is changed

LoRA (Hu et al. 2021) adds ``(alpha / r) B A x`` to a frozen ``W x``; AdaLoRA (Zhang et al.
2023) writes the update as ``P diag(E) Q`` and prunes the entries of E by importance during
training; IA³ (Liu et al. 2022) scales activations by learned vectors.

Why peft's tuner classes and not ``get_peft_model``: ``get_peft_model`` wraps the model in a
``PeftModel`` whose ``forward`` and ``state_dict`` keys (``base_model.model.``) are peft's, while
our trainer calls ``model(**batch)`` and reads our own output dataclasses. Building the tuner
(``LoraModel(model, config, "default")``) is what ``peft.inject_adapter_in_model`` does: it
swaps the targeted ``nn.Linear`` modules for peft layers *inside our model* and leaves its class,
forward signature and outputs alone. ``inject_adapter_in_model`` then drops the tuner; we keep
it, because AdaLoRA's rank allocator (``update_and_allocate``) and the merge live on it.

AdaLoRA's ``AdaLoraModel.forward`` adds the orthogonality regulariser to ``outputs.loss`` when
the output has one; an injected model runs its own forward, so :meth:`PeftMethod.extra_loss`
returns that term for the caller to add.

``peft`` (and ``transformers``, which it imports) load only when a method is applied.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..attention import MultiHeadAttention
from ..config import ConfigError
from .config import FinetuneConfig
from .method import applied, inside, matches, register_method

ADAPTER = "default"  # peft's adapter name; saved keys drop it, as peft's own files do


def linear_names(model: nn.Module, skip: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Short names of the model's ``nn.Linear`` modules that ``target_modules`` can use,
    deduplicated in order: a :class:`MultiHeadAttention`'s projections by their own names
    (``q_proj``), any other Linear by its last two name parts (``ffn.up``, ``pooler.dense``).

    Args:
        model: the model.
        skip: modules left out (the ``modules_to_save``).
    """
    modules = dict(model.named_modules())
    names: list[str] = []
    for name, module in modules.items():
        if not isinstance(module, nn.Linear) or inside(name, skip):
            continue
        parent, _, leaf = name.rpartition(".")
        short = leaf if isinstance(modules.get(parent), MultiHeadAttention) else ".".join(name.split(".")[-2:])
        if short not in names:
            names.append(short)
    return names


def check_targets(model: nn.Module, cfg: FinetuneConfig) -> list[str]:
    """The full names of the modules ``cfg.target_modules`` selects (outside ``modules_to_save``).

    Raises:
        ConfigError: nothing matches; the one-line message lists the Linear names there are.
    """
    skip = cfg.modules_to_save
    found = [n for n, _ in model.named_modules() if n and matches(n, cfg.target_modules) and not inside(n, skip)]
    if not found:
        raise ConfigError(
            f"target_modules {cfg.target_modules} name no module of {type(model).__name__}; "
            f"its Linear modules are: {', '.join(linear_names(model, skip))}"
        )
    return found


# ----------------------------------------------------------------------------- peft configs
# Each builder maps our config to (peft tuner class, peft config).


def _lora(cfg: FinetuneConfig, exclude: list[str]):
    from peft import LoraConfig
    from peft.tuners.lora import LoraModel

    return LoraModel, LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules),
        exclude_modules=exclude or None, bias="none",
    )


def _adalora(cfg: FinetuneConfig, exclude: list[str]):
    from peft import AdaLoraConfig
    from peft.tuners.adalora import AdaLoraModel

    if cfg.total_step is None:
        raise ConfigError("method=adalora needs total_step (the number of training steps, which its rank "
                          "schedule spans); set it, or let the trainer fill it in, before applying")
    return AdaLoraModel, AdaLoraConfig(
        init_r=cfg.init_r, target_r=cfg.target_r, tinit=cfg.tinit, tfinal=cfg.tfinal, deltaT=cfg.deltaT,
        total_step=cfg.total_step, orth_reg_weight=cfg.orth_reg_weight, lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules), exclude_modules=exclude or None,
    )


def _ia3(cfg: FinetuneConfig, exclude: list[str]):
    from peft import IA3Config
    from peft.tuners.ia3 import IA3Model

    return IA3Model, IA3Config(
        target_modules=list(cfg.target_modules), feedforward_modules=list(cfg.feedforward_modules or []),
        exclude_modules=exclude or None,
    )


class PeftMethod:
    """A peft tuner injected into the model in place (see the module docstring).

    Args:
        name: the method's name.
        build: ``(cfg, exclude) -> (tuner class, peft config)``.
        prefix: the prefix of the tuner's parameter names ("lora_", "ia3_").
    """

    def __init__(self, name: str, build: Callable[[FinetuneConfig, list[str]], tuple[type, Any]], prefix: str):
        self.name, self.build, self.prefix = name, build, prefix

    def apply(self, model: nn.Module, cfg: FinetuneConfig):
        """Inject the adapters; returns peft's tuner, whose ``.model`` is ``model`` itself."""
        check_targets(model, cfg)
        # the modules_to_save are trained in full: no adapter inside them
        exclude = [n for n, _ in model.named_modules() if n and inside(n, cfg.modules_to_save)]
        try:
            tuner_cls, peft_config = self.build(cfg, exclude)
        except ValueError as e:  # peft's config checks, e.g. feedforward_modules not in target_modules
            raise ConfigError(f"method={self.name}: {str(e).strip().splitlines()[0]}") from None
        return tuner_cls(model, peft_config, ADAPTER)

    def trainable(self, model: nn.Module) -> set[str]:
        """The adapter parameters (``...q_proj.lora_A.default.weight``); AdaLoRA's ``ranknum`` is
        a constant, not among them."""
        return {n for n, _ in model.named_parameters() if f".{self.prefix}" in f".{n}"}

    def state_dict(self, model: nn.Module) -> dict[str, Tensor]:
        """peft's own format, from ``peft.get_peft_model_state_dict`` (keys without the adapter
        name, e.g. ``encoder.layers.0.self_attn.q_proj.lora_A.weight``)."""
        from peft import get_peft_model_state_dict

        with _full_rank(model):
            return {k: v.detach() for k, v in get_peft_model_state_dict(model, adapter_name=ADAPTER).items()}

    def load_state_dict(self, model: nn.Module, state: dict[str, Tensor]) -> None:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, state, adapter_name=ADAPTER)
        if result.unexpected_keys:  # the caller checked the keys; this is a bug, not a user error
            raise RuntimeError(f"{self.name}: peft did not place {result.unexpected_keys[:4]}")

    def merge(self, model: nn.Module) -> nn.Module:
        """peft's ``merge_and_unload``: ``W += delta`` and the peft layers become plain Linears."""
        return applied(model).handle.merge_and_unload()

    def on_step(self, model: nn.Module, step: int) -> None:
        """AdaLoRA's ``update_and_allocate(step)`` (importance scores, rank budget and masks);
        nothing for tuners without one. Call it after ``optimizer.step()`` and before
        ``zero_grad()``: the importance scores read the gradients."""
        update = getattr(applied(model).handle, "update_and_allocate", None)
        if update is not None:
            update(step)

    def extra_loss(self, model: nn.Module) -> Tensor | None:
        """AdaLoRA's orthogonality regulariser, ``orth_reg_weight`` times the mean over the
        adapted matrices of ``||A A^T - I||_F`` and ``||B^T B - I||_F`` (what
        ``AdaLoraModel.forward`` adds to ``outputs.loss``); None for the other tuners."""
        weight = getattr(applied(model).handle.peft_config[ADAPTER], "orth_reg_weight", 0.0)
        if not weight:
            return None
        terms = []
        for n, p in model.named_parameters():
            if (".lora_A." in n or ".lora_B." in n) and n.endswith(f".{ADAPTER}"):
                cov = p @ p.T if ".lora_A." in n else p.T @ p  # (r, r)
                eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
                terms.append(torch.linalg.matrix_norm(cov - eye))  # Frobenius
        return weight * torch.stack(terms).mean()


@contextlib.contextmanager
def _full_rank(model: nn.Module):
    """Hide AdaLoRA's ``rank_pattern`` while saving. With it set, peft resizes the saved tensors
    through a method only ``PeftModel`` has; the pruned entries of E are zeros, so the full-rank
    tensors describe the same update exactly (and reload into a fresh ``init_r`` model)."""
    config = model.peft_config[ADAPTER]
    pattern = getattr(config, "rank_pattern", None)
    if pattern:
        config.rank_pattern = None
    try:
        yield
    finally:
        config.rank_pattern = pattern


LORA = register_method(PeftMethod("lora", _lora, "lora_"))
ADALORA = register_method(PeftMethod("adalora", _adalora, "lora_"))
IA3 = register_method(PeftMethod("ia3", _ia3, "ia3_"))

__all__ = ["PeftMethod", "linear_names", "check_targets", "LORA", "ADALORA", "IA3", "ADAPTER"]
