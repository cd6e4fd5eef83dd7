"""Attention kernels, registered by name. Importing this package registers all of them."""

from .base import KERNELS, AttentionRequest, Kernel, get_kernel, kernel_names, register_kernel
from . import math, sdpa, chunked, flex  # noqa: F401  (registration)
from .math import math_attention, safe_softmax, repeat_kv
from .chunked import chunked_attention

__all__ = [
    "KERNELS", "AttentionRequest", "Kernel", "get_kernel", "kernel_names", "register_kernel",
    "math_attention", "safe_softmax", "repeat_kv", "chunked_attention",
]
