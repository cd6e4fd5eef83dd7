"""Prefix tuning (Li & Liang 2021): P learned key/value positions in every attention layer.

    apply_finetune(model, FinetuneConfig(method="prefix", prefix_length=16))
    model.encoder.layers[0].self_attn.kv_prefix.key     # (Hkv, P, D), trained; the rest frozen

Each :class:`~attnlab.attention.MultiHeadAttention` outside the ``modules_to_save`` gets a
:class:`KVPrefix` in its ``kv_prefix`` hook: every query may attend the P prefix positions as
well as the real keys (masks, causality and position biases apply to the real keys only; the
cache holds only real keys). Returned attention weights cover the real keys, so their rows sum
to less than 1: the rest went to the prefix.

The prefixes are plain parameters, not Li & Liang's reparametrisation (an MLP over a smaller
prefix embedding, thrown away after training). They used it because optimising GPT-2/BART-size
prefixes directly was unstable; P-tuning v2 (Liu et al. 2022) found it helps some tasks and hurts
others. Plain parameters train, save and load as the same tensors, with nothing to fold at save
time, and ``prefix_length=0`` is exactly the base model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..attention import MultiHeadAttention
from ..config import ConfigError
from .config import FinetuneConfig
from .method import inside, load_parameters, parameter_state, register_method


class KVPrefix(nn.Module):
    """P learned keys and values for one attention layer, the same for every sequence.

    Args:
        num_kv_heads: Hkv, the layer's key/value heads.
        head_dim: D, the per-head width.
        length: P, the prefix positions (0 is allowed: the layer is unchanged).
        std: the normal initialisation's standard deviation.
        device, dtype: of the parameters (the attention layer's).
    """

    def __init__(self, num_kv_heads: int, head_dim: int, length: int, *, std: float = 0.02,
                 device=None, dtype=None):
        super().__init__()
        self.key = nn.Parameter(torch.randn(num_kv_heads, length, head_dim, device=device, dtype=dtype) * std)
        self.value = nn.Parameter(torch.randn(num_kv_heads, length, head_dim, device=device, dtype=dtype) * std)

    @property
    def length(self) -> int:
        return self.key.shape[1]

    def forward(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """(B, Hkv, P, D) keys and values (expanded views, no copy)."""
        return (self.key.expand(batch_size, -1, -1, -1),  # (B, Hkv, P, D)
                self.value.expand(batch_size, -1, -1, -1))  # (B, Hkv, P, D)

    def extra_repr(self) -> str:
        Hkv, P, D = self.key.shape
        return f"num_kv_heads={Hkv}, length={P}, head_dim={D}"


class PrefixMethod:
    """Prefix tuning as a fine-tuning method (see the module docstring)."""

    name = "prefix"

    def apply(self, model: nn.Module, cfg: FinetuneConfig) -> None:
        layers = [(n, m) for n, m in model.named_modules()
                  if isinstance(m, MultiHeadAttention) and not inside(n, cfg.modules_to_save)]
        if not layers:
            raise ConfigError(f"method=prefix: {type(model).__name__} has no MultiHeadAttention outside "
                              f"modules_to_save {cfg.modules_to_save} to add prefixes to")
        taken = [n for n, m in layers if m.kv_prefix is not None]
        if taken:
            raise ValueError(f"method=prefix: {', '.join(taken)} already hold a kv_prefix")
        for _, mha in layers:
            w = mha.k_proj.weight
            mha.kv_prefix = KVPrefix(mha.num_kv_heads, mha.head_dim, cfg.prefix_length, device=w.device, dtype=w.dtype)

    def trainable(self, model: nn.Module) -> set[str]:
        return {n for n, _ in model.named_parameters() if ".kv_prefix." in f".{n}"}

    def state_dict(self, model: nn.Module) -> dict[str, Tensor]:
        return parameter_state(model, self.trainable(model))

    def load_state_dict(self, model: nn.Module, state: dict[str, Tensor]) -> None:
        load_parameters(model, state)

    def merge(self, model: nn.Module) -> nn.Module:
        raise ValueError("merge: method 'prefix' cannot be merged into the base weights (its prefixes are extra "
                         "attention positions, not a weight update); keep it as an adapter with save_adapter")

    def on_step(self, model: nn.Module, step: int) -> None:
        return None

    def extra_loss(self, model: nn.Module) -> Tensor | None:
        return None


PREFIX = register_method(PrefixMethod())

__all__ = ["KVPrefix", "PrefixMethod", "PREFIX"]
