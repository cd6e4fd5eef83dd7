"""Capture a model's attention maps, and the gradients of a chosen scalar with respect to them.

    cap = capture(model, {"input_ids": ids}, target=lambda out: out.logits[0, -1, 42])
    cap.self_attentions      # num_layers x (B, H, L, L), detached
    cap.self_grads           # the same shapes: d target / d weights
    cap.maps("self", example=0), cap.grads("self", example=0)    # num_layers x (H, L, L)

The model runs with ``output_attentions=True``. Without a target it runs under ``no_grad`` with
its own kernels. With a target, every :class:`~attnlab.attention.MultiHeadAttention` runs the
reference kernel "math" for the call, where ``out = weights · v``: the returned weights are then
the very tensors the output was computed from, so ``d target / d weights`` is the gradient that
gradient-based explanations (Chefer et al. 2021) need. Fused kernels either return no weights or
return a copy outside the output's graph, whose gradient would be zero. Kernels (and parameters'
``requires_grad``) are restored afterwards, even if the model or the target raises.

The model runs in whatever mode it is in: call ``model.eval()`` first for deterministic maps.
Which model families work: any whose output carries ``attentions`` (and, for encoder-decoders,
``encoder_attentions`` and ``cross_attentions``) as tuples of (B, H, Lq, Lk) weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..attention import MultiHeadAttention

GRAD_KERNEL = "math"  # the kernel whose returned weights are in the output's autograd graph
KINDS = ("self", "cross", "encoder")

Maps = tuple[Tensor, ...]


@dataclass
class Capture:
    """What :func:`capture` returns.

    Attributes:
        output: the model's output record, its tensors detached.
        self_attentions: one (B, H, L, L) self-attention map per layer: the encoder's for an
            encoder, the decoder's (causal) for a decoder or an encoder-decoder.
        cross_attentions: one (B, H, T, S) map per decoder layer over the source, or None.
        encoder_attentions: one (B, H, S, S) map per encoder layer of an encoder-decoder, or None.
        self_grads, cross_grads, encoder_grads: d target / d map, the shapes of the maps, or
            None without a target (zeros for a map the target does not depend on).
        target: the target's value (a detached scalar), or None.
        tokens: the caller's token strings of the input (decoder input for an encoder-decoder).
        source_tokens: the caller's token strings of an encoder-decoder's source.
    """

    output: Any
    self_attentions: Maps
    cross_attentions: Maps | None = None
    encoder_attentions: Maps | None = None
    self_grads: Maps | None = None
    cross_grads: Maps | None = None
    encoder_grads: Maps | None = None
    target: Tensor | None = None
    tokens: list[str] | None = None
    source_tokens: list[str] | None = None

    @property
    def has_grads(self) -> bool:
        return self.self_grads is not None

    def maps(self, kind: str = "self", example: int = 0) -> Maps:
        """One example's maps of ``kind`` ("self", "cross" or "encoder"): layers x (H, Lq, Lk)."""
        return _example(_pick(self, kind, "attentions"), example)

    def grads(self, kind: str = "self", example: int = 0) -> Maps:
        """One example's gradients of ``kind``: layers x (H, Lq, Lk)."""
        if not self.has_grads:
            raise ValueError("Capture: no gradients; pass target= to capture()")
        return _example(_pick(self, kind, "grads"), example)


def capture(
    model: nn.Module,
    inputs: dict[str, Any],
    target: Callable[[Any], Tensor] | None = None,
    *,
    tokens: list[str] | None = None,
    source_tokens: list[str] | None = None,
) -> Capture:
    """Run ``model(**inputs, output_attentions=True)`` and collect its attention maps.

    Args:
        model: an attnlab model whose output has ``attentions`` (encoder, decoder,
            encoder-decoder, ViT, ...).
        inputs: keyword arguments of the forward pass (ids, masks, ...).
        target: maps the model output to a scalar tensor (a class logit, a token's log-prob);
            when given, the gradients of that scalar w.r.t. every map are captured too.
        tokens: token strings of the (decoder) input, kept for display.
        source_tokens: token strings of an encoder-decoder's source, kept for display.
    """
    if target is None:
        with torch.no_grad():
            output = model(**inputs, output_attentions=True)
        groups = _groups(output)
        grads: dict[str, Maps | None] = {k: None for k in KINDS}
        value = None
    else:
        output, groups, grads, value = _run_with_grads(model, inputs, target)
    return Capture(
        output=_detach(output),
        self_attentions=_detach(groups["self"]),
        cross_attentions=_detach(groups["cross"]),
        encoder_attentions=_detach(groups["encoder"]),
        self_grads=grads["self"], cross_grads=grads["cross"], encoder_grads=grads["encoder"],
        target=value, tokens=tokens, source_tokens=source_tokens,
    )


def _run_with_grads(model, inputs, target):
    modules = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    kernels = [m.kernel for m in modules]
    # Frozen parameters would leave the maps outside any graph; unfreeze them for this call.
    frozen = [p for p in model.parameters() if p.is_floating_point() and not p.requires_grad]
    try:
        for m in modules:
            m.kernel = GRAD_KERNEL
        for p in frozen:
            p.requires_grad_(True)
        with torch.enable_grad():
            output = model(**inputs, output_attentions=True)
            groups = _groups(output)
            value = target(output)
            if not isinstance(value, Tensor) or value.numel() != 1:
                what = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"capture: target must return a scalar tensor, got {what}")
            flat = [(kind, t) for kind in KINDS for t in (groups[kind] or ())]
            for kind, t in flat:
                if not t.requires_grad:
                    raise ValueError(
                        f"capture: a {kind}-attention map is not in the autograd graph; the module "
                        f"that made it does not compute its output from the weights it returns"
                    )
            # autograd.grad, not backward(): the parameters' .grad stay untouched.
            found = torch.autograd.grad(value.reshape(()), [t for _, t in flat], allow_unused=True)
    finally:
        for m, k in zip(modules, kernels):
            m.kernel = k
        for p in frozen:
            p.requires_grad_(False)
    if flat and all(g is None for g in found):
        raise ValueError("capture: the target does not depend on any attention map")
    by_kind: dict[str, list[Tensor]] = {k: [] for k in KINDS}
    for (kind, t), g in zip(flat, found):
        by_kind[kind].append(torch.zeros_like(t).detach() if g is None else g.detach())
    grads = {k: (tuple(by_kind[k]) if groups[k] is not None else None) for k in KINDS}
    return output, groups, grads, value.detach().reshape(())


def _groups(output) -> dict[str, Maps | None]:
    """The output's maps by kind; raises when it has no self-attention maps."""
    self_maps = getattr(output, "attentions", None)
    if not self_maps:
        raise ValueError(f"capture: the model output ({type(output).__name__}) has no attentions")
    groups = {"self": tuple(self_maps), "cross": getattr(output, "cross_attentions", None),
              "encoder": getattr(output, "encoder_attentions", None)}
    return {k: (None if v is None else tuple(v)) for k, v in groups.items()}


def _detach(x):
    """Tensors detached inside a tensor, tuple, list, dict or dataclass (others kept as they are)."""
    if isinstance(x, Tensor):
        return x.detach()
    if isinstance(x, (tuple, list)):
        return type(x)(_detach(v) for v in x)
    if isinstance(x, dict):
        return {k: _detach(v) for k, v in x.items()}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        fields = {f.name: _detach(getattr(x, f.name)) for f in dataclasses.fields(x) if f.init}
        return dataclasses.replace(x, **fields)
    return x


def _pick(cap: Capture, kind: str, what: str) -> Maps:
    if kind not in KINDS:
        raise ValueError(f"Capture: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    maps = getattr(cap, f"{kind}_{what}")  # self_attentions, cross_grads, ...
    if maps is None:
        raise ValueError(f"Capture: this model has no {kind}-attention maps")
    return maps


def _example(maps: Maps, example: int) -> Maps:
    B = maps[0].shape[0]
    if not -B <= example < B:
        raise IndexError(f"Capture: example {example} is out of range for a batch of {B}")
    return tuple(m[example] for m in maps)  # layers x (H, Lq, Lk)


__all__ = ["Capture", "capture", "GRAD_KERNEL"]
