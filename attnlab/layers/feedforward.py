"""The position-wise feed-forward network of a transformer block, with pluggable activations.

Plain:  ``dropout(down(act(up(x))))``, as in BERT and GPT-2.
Gated:  ``dropout(down(act(gate(x)) * up(x)))`` (Shazeer 2020, "GLU Variants Improve Transformer"):
``swiglu`` (SiLU gate, Llama) and ``geglu`` (GELU gate).

Activations are registered by name: ``relu``, ``gelu`` (exact, erf), ``gelu_tanh`` (the tanh
approximation, GPT-2's "gelu_new"), ``silu``; the gated variants are ``swiglu`` and ``geglu``.
"""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Registry

Activation = Callable[[Tensor], Tensor]
ACTIVATIONS: Registry[Activation] = Registry("activation")
# Gated variants: name -> the activation applied to the gate.
_GATED: dict[str, str] = {"swiglu": "silu", "geglu": "gelu"}


def register_activation(name: str, fn: Activation) -> Activation:
    """Register an elementwise activation ``Tensor -> Tensor`` under ``name``.

    Raises:
        ValueError: ``name`` is a gated variant, or another function is registered under it.
    """
    if name in _GATED:
        raise ValueError(f"activation {name!r} is already registered (a gated variant)")
    return ACTIVATIONS.register(name, fn)


def get_activation(name: str | Activation) -> Activation:
    """The activation registered under ``name`` (a callable passes through)."""
    if callable(name):
        return name
    if name not in ACTIVATIONS:  # the list names the gated variants too: FeedForward takes them
        raise ACTIVATIONS.unknown(name, also=_GATED)
    return ACTIVATIONS.get(name)


def activation_names() -> list[str]:
    """Names accepted by :class:`FeedForward` (plain and gated), sorted."""
    return sorted([*ACTIVATIONS, *_GATED])


register_activation("relu", F.relu)
register_activation("gelu", F.gelu)
register_activation("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"))
register_activation("silu", F.silu)


class FeedForward(nn.Module):
    """Two (or, gated, three) linear maps with an activation between.

    Parameters: ``up`` (d_model -> ffn_dim), ``down`` (ffn_dim -> d_model) and, for gated
    activations, ``gate`` (d_model -> ffn_dim).

    Args:
        d_model: input and output width.
        ffn_dim: hidden width.
        activation: a name from :func:`activation_names` or a callable (plain FFN).
        dropout: dropout on the output (the residual branch).
        bias: biases in the linear maps.
    """

    def __init__(self, d_model: int, ffn_dim: int, activation: str | Activation = "gelu",
                 dropout: float = 0.0, bias: bool = True):
        super().__init__()
        gated = isinstance(activation, str) and activation in _GATED
        self.activation_name = activation if isinstance(activation, str) else getattr(activation, "__name__", "custom")
        self.act = get_activation(_GATED[activation] if gated else activation)
        self.up = nn.Linear(d_model, ffn_dim, bias=bias)
        self.gate = nn.Linear(d_model, ffn_dim, bias=bias) if gated else None
        self.down = nn.Linear(ffn_dim, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    @property
    def gated(self) -> bool:
        return self.gate is not None

    def forward(self, x: Tensor) -> Tensor:
        if self.gate is not None:
            h = self.act(self.gate(x)) * self.up(x)  # (B, L, ffn_dim)
        else:
            h = self.act(self.up(x))  # (B, L, ffn_dim)
        return self.dropout(self.down(h))  # (B, L, d_model)

    def extra_repr(self) -> str:
        return f"activation={self.activation_name!r}"


__all__ = ["FeedForward", "register_activation", "get_activation", "activation_names"]
