"""Full fine-tuning: every parameter trains (the baseline the other methods are measured against).

    apply_finetune(model, FinetuneConfig(method="full"))

Its "adapter" is the whole model: :func:`~attnlab.finetune.save_adapter` writes every weight,
and :func:`~attnlab.finetune.merge` has nothing to fold.
"""

from __future__ import annotations

from torch import Tensor, nn

from .config import FinetuneConfig
from .method import load_parameters, parameter_state, register_method


class FullMethod:
    """Every parameter trains (see the module docstring). Methods that train a selection of the
    model's own parameters and insert nothing (BitFit) subclass it and override :meth:`trainable`."""

    name = "full"

    def apply(self, model: nn.Module, cfg: FinetuneConfig) -> None:
        return None

    def trainable(self, model: nn.Module) -> set[str]:
        return {n for n, _ in model.named_parameters()}

    def state_dict(self, model: nn.Module) -> dict[str, Tensor]:
        return parameter_state(model, self.trainable(model))

    def load_state_dict(self, model: nn.Module, state: dict[str, Tensor]) -> None:
        load_parameters(model, state)

    def merge(self, model: nn.Module) -> nn.Module:
        """Nothing to fold: the trained parameters are the model's own."""
        return model

    def on_step(self, model: nn.Module, step: int) -> None:
        return None

    def extra_loss(self, model: nn.Module) -> Tensor | None:
        return None


FULL = register_method(FullMethod())

__all__ = ["FullMethod", "FULL"]
