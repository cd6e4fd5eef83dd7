"""Head importance and head pruning (Michel et al. 2019, "Are Sixteen Heads Really Better than One?").

A head mask ξ (num_layers, H) multiplies each head's output before the output projection; the
importance of head h is the expected absolute gradient of the loss with respect to ξ_h at ξ = 1::

    def loss_fn(model, batch, head_mask):
        ids, y = batch
        h = model.encoder(ids, head_mask=head_mask).last_hidden_state
        return F.cross_entropy(model.head(h), y)

    imp = head_importance(model, batches, loss_fn, num_layers=12, num_heads=12)   # (12, 12)
    curve = pruning_curve(model, lambda m, mask: accuracy(m, mask), imp)          # [(0.0, .91), ...]
    prune_heads(encoder, heads_to_prune(prune_order(imp), 72, imp.shape))         # smaller, faster

Masking and pruning agree: a pruned model computes what the masked one does.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor, nn

LossFn = Callable[[nn.Module, object, Tensor], Tensor]
EvalFn = Callable[[nn.Module, Tensor], float]
DEFAULT_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def head_importance(
    model: nn.Module,
    batches: Iterable,
    loss_fn: LossFn,
    num_layers: int,
    num_heads: int,
    normalize: bool = True,
    *,
    per_example: bool = True,
) -> Tensor:
    """Michel et al.'s head importance: E_x |dL(x)/dξ| over the data, ξ the head mask at 1.

    With ``per_example`` (the default) the absolute gradient is taken per example, as the paper
    defines it: the mask handed to ``loss_fn`` is (num_layers, B, H), one row per example, and
    since a mean loss gives example i the gradient dL_i/dξ / B, summing absolute values over the
    batch gives the batch's mean of |dL_i/dξ| in one backward pass. Without it, the absolute
    gradient of each batch's loss is taken (Michel et al.'s code and Hugging Face's
    ``run_bertology.py``), where opposite signs of different examples cancel. Either way the
    batches' values are averaged. The model runs in eval mode (restored afterwards); no
    parameter's ``.grad`` is touched.

    Args:
        model: the model, passed on to ``loss_fn``.
        batches: an iterable of batches, each passed on to ``loss_fn``.
        loss_fn: ``(model, batch, head_mask) -> scalar loss``, the mean over the batch's
            examples; it must pass the mask to the model (``model(ids, head_mask=head_mask)``).
        num_layers, num_heads: the mask's shape.
        normalize: divide each layer's scores by their L2 norm (Michel et al.'s code).
        per_example: absolute gradients per example (the mask is (num_layers, B, H), B read
            from the first tensor of the batch); False: per batch (the mask is (num_layers, H)).

    Returns:
        (num_layers, num_heads) importance, float32 on the model's device.
    """
    p = next(model.parameters(), None)
    device = p.device if p is not None else None
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    total = torch.zeros(num_layers, num_heads, device=device, dtype=dtype)
    n = 0
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            shape = (num_layers, _batch_size(batch), num_heads) if per_example else (num_layers, num_heads)
            mask = torch.ones(shape, device=device, dtype=dtype, requires_grad=True)
            loss = loss_fn(model, batch, mask)
            (grad,) = torch.autograd.grad(loss, mask, allow_unused=True)
            if grad is not None:
                total += grad.abs().sum(1) if per_example else grad.abs()
            n += 1
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("head_importance: batches is empty")
    imp = (total / n).float()  # (num_layers, H)
    if normalize:
        imp = imp / (imp.norm(dim=-1, keepdim=True) + 1e-20)
    return imp


def _batch_size(batch) -> int:
    """The leading size of the first tensor in a batch (a tensor, sequence or mapping)."""
    if isinstance(batch, Tensor):
        return batch.shape[0]
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for x in items:
        if isinstance(x, Tensor) and x.dim() > 0:
            return x.shape[0]
    raise ValueError(f"head_importance: cannot read a batch size from a {type(batch).__name__}; "
                     "pass per_example=False")


def prune_order(importance: Tensor, order: str = "importance", seed: int = 0) -> list[tuple[int, int]]:
    """The heads ``(layer, head)`` in the order to prune them.

    Args:
        importance: (num_layers, H) scores.
        order: "importance" (least important first, ties by position) or "random" (a
            permutation drawn with ``seed``).
        seed: seed of the random order.
    """
    L, H = importance.shape
    if order == "importance":
        flat = importance.detach().flatten().cpu()
        idx = torch.sort(flat, stable=True).indices.tolist()
    elif order == "random":
        idx = torch.randperm(L * H, generator=torch.Generator().manual_seed(seed)).tolist()
    else:
        raise ValueError(f"prune_order: order must be 'importance' or 'random', got {order!r}")
    return [(i // H, i % H) for i in idx]


def heads_to_prune(
    order: list[tuple[int, int]], n: int, shape: tuple[int, int], keep_last: bool = True,
) -> dict[int, list[int]]:
    """The first ``n`` heads of ``order`` as ``{layer: [heads]}``.

    Args:
        order: from :func:`prune_order`.
        n: how many heads to prune.
        shape: (num_layers, H).
        keep_last: skip a head that is the last one left in its layer (the next in order is
            taken instead), so that no layer loses all its heads.
    """
    L, H = shape
    left = [H] * L
    chosen: dict[int, list[int]] = {}
    count = 0
    for layer, head in order:
        if count >= n:
            break
        if keep_last and left[layer] == 1:
            continue
        chosen.setdefault(layer, []).append(head)
        left[layer] -= 1
        count += 1
    if count < n:
        raise ValueError(f"heads_to_prune: cannot prune {n} of {L * H} heads while keeping one per layer")
    return {k: sorted(v) for k, v in sorted(chosen.items())}


def head_mask_for(heads: dict[int, list[int]], shape: tuple[int, int], like: Tensor | None = None) -> Tensor:
    """A (num_layers, H) mask of ones with zeros at ``heads`` ({layer: [heads]})."""
    mask = torch.ones(shape) if like is None else torch.ones(shape, dtype=like.dtype, device=like.device)
    for layer, hs in heads.items():
        mask[layer, list(hs)] = 0.0
    return mask


def pruning_curve(
    model: nn.Module,
    eval_fn: EvalFn,
    importance: Tensor,
    fractions: Iterable[float] = DEFAULT_FRACTIONS,
    order: str = "importance",
    seed: int = 0,
    keep_last: bool = True,
) -> list[tuple[float, float]]:
    """The metric as ever more heads are masked (Michel et al. 2019, figure 3).

    Args:
        model: passed on to ``eval_fn``.
        eval_fn: ``(model, head_mask (num_layers, H)) -> metric``.
        importance: (num_layers, H) scores (see :func:`head_importance`).
        fractions: fractions of all heads to mask, each rounded to a head count.
        order: "importance" (least important first) or "random".
        seed: seed of the random order.
        keep_last: never mask a layer's last head (fractions then cap at L*(H-1) heads).

    Returns:
        ``[(fraction, metric), ...]`` in the order of ``fractions``.
    """
    L, H = importance.shape
    heads = prune_order(importance, order, seed)
    curve = []
    for frac in fractions:
        n = round(float(frac) * L * H)
        if keep_last:
            n = min(n, L * (H - 1))
        mask = head_mask_for(heads_to_prune(heads, n, (L, H), keep_last), (L, H), like=importance.float())
        curve.append((float(frac), float(eval_fn(model, mask))))
    return curve


def prune_heads(model: nn.Module, heads: dict[int, list[int]]) -> nn.Module:
    """Remove heads from a model's weights, in place; returns the model.

    Models with a ``prune_heads`` method (:class:`~attnlab.models.Encoder`,
    :class:`~attnlab.models.Decoder`) record the pruned heads in their config, so they save and
    load pruned; otherwise the self-attention of ``model.layers`` or ``model.blocks`` is pruned.

    Args:
        model: an attnlab model (or anything with a list of ``TransformerBlock`` s).
        heads: {layer: [original head indices]}.
    """
    if hasattr(model, "prune_heads"):
        model.prune_heads(heads)
        return model
    stack = getattr(model, "layers", None) or getattr(model, "blocks", None)
    if stack is None:
        raise ValueError(f"prune_heads: {type(model).__name__} has no prune_heads method and no "
                         "layers/blocks list of TransformerBlock")
    for layer, hs in heads.items():
        stack[layer].self_attn.prune_heads(hs)
    return model


__all__ = ["head_importance", "prune_order", "heads_to_prune", "head_mask_for", "pruning_curve", "prune_heads"]
