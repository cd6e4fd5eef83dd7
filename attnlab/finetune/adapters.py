"""Bottleneck adapters (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP").

    apply_finetune(model, FinetuneConfig(method="adapter", adapter_size=64))

In each :class:`~attnlab.layers.TransformerBlock` (outside the ``modules_to_save``) an adapter
``h + up(act(down(h)))`` follows the attention output projection (self- and, if present,
cross-attention) and the feed-forward network's down projection: on each sublayer's output,
before the residual add and the norm, where the paper puts them. The adapters come in by module
swap: ``self_attn.out_proj`` becomes an :class:`AdaptedLinear` that keeps the original Linear as
``base_layer`` (peft's naming), so ``blocks.py`` is untouched.

``up`` starts at zero, so a fresh adapter model computes exactly what the base model does.
Trained: the adapters and, as in the paper, the blocks' layer norms.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..config import ConfigError
from ..layers import TransformerBlock
from ..layers.feedforward import get_activation
from .config import FinetuneConfig
from .method import inside, load_parameters, parameter_state, register_method

# The Linear after which an adapter goes, and the block's norms trained with it.
SUBLAYERS = ("self_attn.out_proj", "cross_attn.out_proj", "ffn.down")
NORMS = ("attn_norm", "cross_norm", "ffn_norm")


class Adapter(nn.Module):
    """``h + up(act(down(h)))``: a residual bottleneck, the identity at initialisation.

    Args:
        dim: width of ``h``.
        size: the bottleneck width.
        activation: a registered activation name (see :func:`attnlab.layers.activation_names`).
        std: the normal initialisation of ``down`` (``up`` starts at zero).
        device, dtype: of the parameters.
    """

    def __init__(self, dim: int, size: int, activation: str = "gelu", std: float = 0.02, device=None, dtype=None):
        super().__init__()
        self.down = nn.Linear(dim, size, device=device, dtype=dtype)
        self.up = nn.Linear(size, dim, device=device, dtype=dtype)
        self.act = get_activation(activation)
        nn.init.normal_(self.down.weight, std=std)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.up(self.act(self.down(h)))  # (..., dim)


class AdaptedLinear(nn.Module):
    """A Linear followed by an :class:`Adapter`; ``weight`` and ``bias`` are the Linear's.

    Args:
        base_layer: the Linear, kept as is (frozen by the method).
        size: the adapter's bottleneck width.
    """

    def __init__(self, base_layer: nn.Linear, size: int):
        super().__init__()
        w = base_layer.weight
        self.base_layer = base_layer
        self.adapter = Adapter(base_layer.out_features, size, device=w.device, dtype=w.dtype)

    @property
    def weight(self) -> Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base_layer.bias

    def forward(self, x: Tensor) -> Tensor:
        return self.adapter(self.base_layer(x))  # (..., out_features)


class AdapterMethod:
    """Houlsby adapters as a fine-tuning method (see the module docstring)."""

    name = "adapter"

    def apply(self, model: nn.Module, cfg: FinetuneConfig) -> None:
        blocks = [(n, b) for n, b in model.named_modules()
                  if isinstance(b, TransformerBlock) and not inside(n, cfg.modules_to_save)]
        if not blocks:
            raise ConfigError(f"method=adapter: {type(model).__name__} has no TransformerBlock outside "
                              f"modules_to_save {cfg.modules_to_save} to add adapters to")
        done = [n for n, b in blocks if _adapted(b)]
        if done:
            raise ValueError(f"method=adapter: {', '.join(done)} already hold adapters")
        for _, block in blocks:
            for path in SUBLAYERS:
                owner, _, attr = path.partition(".")
                parent = getattr(block, owner)
                if parent is not None:
                    setattr(parent, attr, AdaptedLinear(getattr(parent, attr), cfg.adapter_size))

    def trainable(self, model: nn.Module) -> set[str]:
        """The adapters' parameters and the norms of the blocks that hold adapters."""
        norms = tuple(f"{n}.{norm}.".lstrip(".") for n, b in model.named_modules()
                      if isinstance(b, TransformerBlock) and _adapted(b) for norm in NORMS)
        return {n for n, _ in model.named_parameters() if ".adapter." in f".{n}" or n.startswith(norms)}

    def state_dict(self, model: nn.Module) -> dict[str, Tensor]:
        return parameter_state(model, self.trainable(model))

    def load_state_dict(self, model: nn.Module, state: dict[str, Tensor]) -> None:
        load_parameters(model, state)

    def merge(self, model: nn.Module) -> nn.Module:
        raise ValueError("merge: method 'adapter' cannot be merged into the base weights (an adapter is a "
                         "nonlinear bottleneck, not a weight update); keep it as an adapter with save_adapter")

    def on_step(self, model: nn.Module, step: int) -> None:
        return None

    def extra_loss(self, model: nn.Module) -> Tensor | None:
        return None


def _adapted(block: TransformerBlock) -> bool:
    return isinstance(block.ffn.down, AdaptedLinear)


ADAPTERS = register_method(AdapterMethod())

__all__ = ["Adapter", "AdaptedLinear", "AdapterMethod", "ADAPTERS"]
