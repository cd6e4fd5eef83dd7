"""BitFit (Ben Zaken et al. 2022): train only the bias terms of the base model.

    apply_finetune(model, FinetuneConfig(method="bitfit"))   # biases + modules_to_save train

Every parameter named ``bias`` trains: the attention projections', the feed-forward maps', the
layer norms' (the paper's b^{m,l} and the LayerNorm shifts). Nothing is inserted, so there is
nothing to merge: the trained biases are the base model's own.
"""

from __future__ import annotations

from torch import nn

from ..config import ConfigError
from .config import FinetuneConfig
from .full import FullMethod
from .method import register_method


def _is_bias(name: str) -> bool:
    return name.rpartition(".")[2] == "bias"


class BitFitMethod(FullMethod):
    """Only biases train (see the module docstring); saving, loading and merging are full
    fine-tuning's, over the biases."""

    name = "bitfit"

    def apply(self, model: nn.Module, cfg: FinetuneConfig) -> None:
        if not self.trainable(model):
            raise ConfigError(f"method=bitfit: {type(model).__name__} has no bias parameters")

    def trainable(self, model: nn.Module) -> set[str]:
        return {n for n, _ in model.named_parameters() if _is_bias(n)}


BITFIT = register_method(BitFitMethod())

__all__ = ["BitFitMethod", "BITFIT"]
