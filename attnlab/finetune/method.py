"""What a fine-tuning method is, the registry of methods, and the record an applied model keeps.

Every method has the same shape (peft's config / layer / model idea, as one small object):

    method = get_method("lora")
    handle = method.apply(model, cfg)      # insert its modules in place; peft's tuner, or None
    names = method.trainable(model)        # the parameters it trains
    state = method.state_dict(model)       # its weights as saved; load_state_dict reverses it
    model = method.merge(model)            # fold into the base weights, or a clear refusal
    method.on_step(model, step)            # after optimizer.step() (AdaLoRA's rank allocation)
    method.extra_loss(model)               # a regulariser to add to the loss, or None

:func:`attnlab.finetune.apply_finetune` runs ``apply``, freezes everything but ``trainable``
and the ``modules_to_save``, and records ``(cfg, method, handle)`` on the model, where
:func:`applied` finds it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor, nn

from ..registry import Registry
from .config import FinetuneConfig


class FinetuneMethod(Protocol):
    """A parameter-efficient fine-tuning method (see the module docstring)."""

    name: str

    def apply(self, model: nn.Module, cfg: FinetuneConfig) -> Any:
        """Insert the method's modules into ``model`` in place; return its handle (or None)."""

    def trainable(self, model: nn.Module) -> set[str]:
        """Names (as in ``named_parameters``) of the parameters the method trains."""

    def state_dict(self, model: nn.Module) -> dict[str, Tensor]:
        """The method's weights, by the names they are saved under."""

    def load_state_dict(self, model: nn.Module, state: dict[str, Tensor]) -> None:
        """Load weights saved by :meth:`state_dict` (keys already checked)."""

    def merge(self, model: nn.Module) -> nn.Module:
        """Fold the method into the base weights and remove its modules, or raise ValueError."""

    def on_step(self, model: nn.Module, step: int) -> None:
        """Per-step work after ``optimizer.step()`` (before ``zero_grad``); most do nothing."""

    def extra_loss(self, model: nn.Module) -> Tensor | None:
        """A term to add to the training loss, or None."""


METHODS: Registry[FinetuneMethod] = Registry("fine-tuning method")


def register_method(method: FinetuneMethod) -> FinetuneMethod:
    """Register ``method`` under ``method.name``.

    Raises:
        ValueError: another method already has that name.
    """
    return METHODS.register(method.name, method)


def get_method(name: str) -> FinetuneMethod:
    """The method registered under ``name``; ConfigError (a ValueError) naming the known ones otherwise."""
    return METHODS.get(name)


def method_names() -> list[str]:
    """Names of the registered methods, sorted."""
    return METHODS.names()


# ----------------------------------------------------------------------------- the record


@dataclass
class Applied:
    """What :func:`attnlab.finetune.apply_finetune` leaves on a model.

    Attributes:
        cfg: the config applied.
        method: the method object.
        handle: the method's own state (peft's tuner for LoRA/AdaLoRA/IA³), or None.
    """

    cfg: FinetuneConfig
    method: FinetuneMethod
    handle: Any = None


# A plain attribute (not a submodule): it stays out of state_dict() and out of .to().
_ATTR = "_attnlab_finetune"


def applied(model: nn.Module) -> Applied:
    """The record of the method applied to ``model``.

    Raises:
        ValueError: no method was applied.
    """
    record = model.__dict__.get(_ATTR)
    if record is None:
        raise ValueError(f"{type(model).__name__} has no fine-tuning method applied (call apply_finetune first)")
    return record


def is_applied(model: nn.Module) -> bool:
    """Whether a fine-tuning method was applied to ``model``."""
    return model.__dict__.get(_ATTR) is not None


def set_applied(model: nn.Module, record: Applied | None) -> None:
    """Attach (or, with None, remove) the record."""
    if record is None:
        model.__dict__.pop(_ATTR, None)
    else:
        model.__dict__[_ATTR] = record


# ----------------------------------------------------------------------------- helpers


def matches(name: str, patterns: list[str] | tuple[str, ...]) -> bool:
    """peft's rule for a module name: it is a pattern or ends with ``"." + pattern``."""
    return any(name == p or name.endswith(f".{p}") for p in patterns)


def inside(name: str, modules: list[str] | tuple[str, ...]) -> bool:
    """Whether module or parameter ``name`` lies in (or is) a module matched by ``modules``."""
    parts = name.split(".")
    return any(matches(".".join(parts[:i]), modules) for i in range(1, len(parts) + 1))


def parameter_state(model: nn.Module, names: set[str]) -> dict[str, Tensor]:
    """The named parameters among ``names``, detached."""
    return {n: p.detach() for n, p in model.named_parameters() if n in names}


def load_parameters(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Copy ``state`` into the model's parameters of the same names (shapes checked by torch)."""
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:  # the caller checked the keys; this is a bug, not a user error
        raise RuntimeError(f"load_parameters: unexpected keys {result.unexpected_keys[:4]}")


__all__ = [
    "FinetuneMethod", "register_method", "get_method", "method_names",
    "Applied", "applied", "is_applied", "set_applied",
    "matches", "inside", "parameter_state", "load_parameters",
]
