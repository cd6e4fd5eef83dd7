"""Applying a fine-tuning method to a model, counting what trains, and merging it back.

    model = apply_finetune(model, FinetuneConfig(method="lora", r=8))   # in place
    trainable_summary(model)    # MiniLM + 2-class head: {"trainable": 74498, "total": 22787714, ...}
    reg = extra_loss(model)     # AdaLoRA's orthogonality regulariser; None for the others
    loss = out.loss if reg is None else out.loss + reg
    loss.backward(); optimizer.step(); on_step(model, step); optimizer.zero_grad()
    model = merge(model)        # LoRA/IA³/AdaLoRA folded into the Linear weights
"""

from __future__ import annotations

from torch import Tensor, nn

from ..config import ConfigError
from .config import FinetuneConfig
from .method import Applied, FinetuneMethod, applied, get_method, inside, is_applied, matches, set_applied


def apply_finetune(model: nn.Module, cfg: FinetuneConfig) -> nn.Module:
    """Apply ``cfg.method`` to ``model`` in place: insert its modules, freeze the base, leave the
    method's parameters and the ``modules_to_save`` trainable ("full": everything).

    Args:
        model: any ``nn.Module`` built from attnlab parts (e.g. a classifier whose ``encoder``
            is an :class:`~attnlab.models.Encoder` and whose ``head`` is the task head).
        cfg: the method and its settings.

    Returns:
        ``model`` itself, with the method applied (its class, forward and train/eval mode
        unchanged).

    Raises:
        ConfigError: a ``modules_to_save`` or ``target_modules`` entry that names no module, or
            settings the method cannot use; the message is one line.
        ValueError: a method was already applied to ``model``.
    """
    if is_applied(model):
        raise ValueError(f"{type(model).__name__} already has method {applied(model).cfg.method!r} applied; "
                         "apply a method to a freshly built base model")
    _check_modules_to_save(model, cfg.modules_to_save)
    method = get_method(cfg.method)
    before = set(model.modules())
    handle = method.apply(model, cfg)
    for m in model.modules():  # inserted modules follow the model's train/eval mode
        if m not in before:
            m.training = model.training
    keep = method.trainable(model) | {n for n, _ in model.named_parameters() if inside(n, cfg.modules_to_save)}
    for name, p in model.named_parameters():
        p.requires_grad_(name in keep)
    set_applied(model, Applied(cfg=cfg, method=method, handle=handle))
    return model


def method_of(model: nn.Module) -> FinetuneMethod:
    """The method applied to ``model`` (raises ValueError if none was)."""
    return applied(model).method


def on_step(model: nn.Module, step: int) -> None:
    """The applied method's per-step work; call it after ``optimizer.step()`` and before
    ``zero_grad()`` (AdaLoRA's rank allocation reads the gradients). A no-op for the other
    methods and for a model without one.

    Args:
        model: the model.
        step: the global step just taken (AdaLoRA's schedule counts from 1 up to ``total_step``).
    """
    if is_applied(model):
        method_of(model).on_step(model, step)


def extra_loss(model: nn.Module) -> Tensor | None:
    """A term to add to the training loss (AdaLoRA's orthogonality regulariser), or None."""
    return method_of(model).extra_loss(model) if is_applied(model) else None


def trainable_summary(model: nn.Module) -> dict[str, float]:
    """``{"trainable": n, "total": N, "share": n / N}``, parameters counted once each (tied
    weights once, as ``model.parameters()`` yields them)."""
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    n = sum(p.numel() for p in params if p.requires_grad)
    return {"trainable": n, "total": total, "share": n / total if total else 0.0}


def merge(model: nn.Module) -> nn.Module:
    """Fold the applied method into the base weights and remove its modules: the result is a
    plain attnlab model (every parameter trainable again) that ``save_pretrained`` writes.

    LoRA, AdaLoRA and IA³ fold into their Linear weights; BitFit and full fine-tuning changed
    the base weights themselves. Prefixes and adapters cannot fold into weights.

    Raises:
        ValueError: no method was applied, or the method is "prefix" or "adapter".
    """
    record = applied(model)
    model = record.method.merge(model)
    set_applied(model, None)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _check_modules_to_save(model: nn.Module, names: list[str]) -> None:
    modules = [n for n, _ in model.named_modules() if n]
    for name in names:
        if not any(matches(n, [name]) for n in modules):
            children = ", ".join(n for n, _ in model.named_children())
            raise ConfigError(f"modules_to_save: {name!r} names no module of {type(model).__name__} "
                              f"(its top-level modules: {children})")


__all__ = ["apply_finetune", "method_of", "on_step", "extra_loss", "trainable_summary", "merge"]
