"""The kernel contract: one request type, one signature, one registry.

A kernel is a callable ``kernel(req) -> (out, weights | None)`` with a name and a way to say
why it cannot serve a request (``unsupported(req) -> str | None``). :func:`attnlab.attention.attend`
validates the inputs once, builds an :class:`AttentionRequest` and hands it to a kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import Tensor

from ...registry import Registry
from ..masks import MaskMod, ScoreMod


@dataclass
class AttentionRequest:
    """Validated inputs of one attention call.

    Shapes: q (B, H, Lq, D); k (B, Hkv, Lk, D); v (B, Hkv, Lk, Dv); ``mask`` (bool) and
    ``bias`` (float) are 4-D and broadcastable to (B, H, Lq, Lk), or None.
    """

    q: Tensor
    k: Tensor
    v: Tensor
    mask: Tensor | None
    bias: Tensor | None
    score_mod: ScoreMod | None
    mask_mod: MaskMod | None
    scale: float
    dropout_p: float
    return_weights: bool

    @property
    def shape(self) -> tuple[int, int, int, int, int, int]:
        """(B, H, Hkv, Lq, Lk, D)."""
        B, H, Lq, D = self.q.shape
        return B, H, self.k.shape[1], Lq, self.k.shape[2], D

    @property
    def needs_grad(self) -> bool:
        """Whether autograd will need a backward pass through this call."""
        if not torch.is_grad_enabled():
            return False
        return any(t is not None and t.requires_grad for t in (self.q, self.k, self.v, self.bias))


class Kernel(Protocol):
    name: str

    def unsupported(self, req: AttentionRequest) -> str | None:
        """Why this kernel cannot serve ``req``, or None when it can."""

    def __call__(self, req: AttentionRequest) -> tuple[Tensor, Tensor | None]:
        """Compute attention: out (B, H, Lq, Dv) and weights (B, H, Lq, Lk) or None."""


KERNELS: Registry[Kernel] = Registry("kernel", known="known kernels")


def register_kernel(kernel: Kernel) -> Kernel:
    """Register a kernel under ``kernel.name`` (used as a decorator on kernel instances).

    Raises:
        ValueError: another kernel already has that name.
    """
    return KERNELS.register(kernel.name, kernel)


def get_kernel(name: str) -> Kernel:
    """The kernel registered under ``name``; raises ConfigError (a ValueError) naming the known kernels."""
    return KERNELS.get(name)


def kernel_names() -> list[str]:
    """Names of all registered kernels."""
    return KERNELS.names()


@dataclass
class FunctionKernel:
    """A kernel made of two plain functions."""

    name: str
    fn: Callable[[AttentionRequest], tuple[Tensor, Tensor | None]]
    why_not: Callable[[AttentionRequest], str | None]

    def unsupported(self, req: AttentionRequest) -> str | None:
        return self.why_not(req)

    def __call__(self, req: AttentionRequest) -> tuple[Tensor, Tensor | None]:
        return self.fn(req)
