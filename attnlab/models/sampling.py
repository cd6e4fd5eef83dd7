"""Next-token choice: greedy, and sampling with temperature, top-k and nucleus (top-p) filtering.

The filters run in the order of Hugging Face's warpers (temperature, then top-k, then top-p) on
float32 logits; a filtered-out token gets ``-inf`` and so probability zero::

    logits = filter_logits(logits, temperature=0.7, top_k=50, top_p=0.9)   # (B, V)
    next_ids = torch.multinomial(logits.softmax(-1), 1, generator=g)       # (B, 1)
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise ``ValueError`` naming the bad argument.

    Args:
        temperature: must be > 0.
        top_k: None or a positive int.
        top_p: None or a float in (0, 1].
    """
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"generate: temperature must be > 0, got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"generate: top_k must be None or a positive int, got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0.0 < top_p <= 1.0):
        raise ValueError(f"generate: top_p must be None or in (0, 1], got {top_p!r}")


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest logits of each row, set the rest to ``-inf``.

    Args:
        logits: (B, V) float logits.
        k: how many to keep (more than V keeps all).
    """
    k = min(k, logits.shape[-1])
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep the smallest set of most likely tokens whose
    probability mass reaches ``p``; always keep the most likely token.

    Args:
        logits: (B, V) float logits.
        p: the mass to keep, in (0, 1].
    """
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V) each
    probs = sorted_logits.softmax(dim=-1)  # (B, V)
    mass_before = probs.cumsum(dim=-1) - probs  # (B, V): mass of the strictly more likely tokens
    drop_sorted = mass_before >= p  # (B, V); position 0 has mass_before 0 < p, so it stays
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # (B, V) back in vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def filter_logits(
    logits: Tensor, *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> Tensor:
    """Temperature, then top-k, then top-p, as float32 logits ready for ``softmax``.

    Args:
        logits: (B, V) next-token logits.
        temperature: divides the logits (< 1 sharpens, > 1 flattens).
        top_k: keep only the k most likely tokens.
        top_p: keep only the nucleus of mass ``top_p``.
    """
    logits = logits.float()  # (B, V)
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None and top_p < 1.0:
        logits = top_p_filter(logits, top_p)
    return logits


def choose_next(
    logits: Tensor,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The next token of each row: the argmax, or a sample from the filtered distribution.

    Args:
        logits: (B, V) next-token logits.
        do_sample: sample instead of taking the argmax (the filters apply only when sampling).
        temperature, top_k, top_p: see :func:`filter_logits`.
        generator: a ``torch.Generator`` for reproducible sampling.

    Returns:
        (B,) long token ids.
    """
    if not do_sample:
        return logits.float().argmax(dim=-1)  # (B,)
    probs = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p).softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)


__all__ = ["check_sampling_args", "choose_next", "filter_logits", "top_k_filter", "top_p_filter"]
