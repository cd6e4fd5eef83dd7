"""Attention explanations of one example: pure functions on tensors, exact in float64.

Every method reads one example's maps, a sequence over layers (first layer first) of
(H, L, L) attention weights (rows: queries, columns: keys; a stacked (N, H, L, L) tensor or
maps with a leading batch of 1 work too), and, for gradient methods, the gradients of a target
with respect to them (same shapes; see :func:`attnlab.explain.capture`). Most return an (L, L)
matrix whose row i says how much output position i draws on input token j;
:func:`relevance_for` turns a matrix into per-token scores::

    cap = capture(model, inputs, target=lambda out: out.logits[0, 3])
    R = rollout(cap.maps("self"))                          # (L, L)
    scores = relevance_for(R, 0)                           # (L,): the [CLS] row
    R = METHODS["chefer"](cap.maps("self"), cap.grads("self"))

Methods are registered by name in :data:`METHODS` with one signature,
``fn(attns, grads=None, **options) -> Tensor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..registry import Registry

Maps = Sequence[Tensor] | Tensor
HEAD_FUSIONS = ("mean", "max", "min")


# ----------------------------------------------------------------------------- helpers


def _layers(attns: Maps, what: str = "attns") -> list[Tensor]:
    """A list of (H, Lq, Lk) maps, one per layer (a leading batch of 1 is dropped)."""
    layers = list(attns.unbind(0)) if isinstance(attns, Tensor) else list(attns)
    if not layers:
        raise ValueError(f"{what}: no layers")
    out = []
    for i, a in enumerate(layers):
        if a.dim() == 4 and a.shape[0] == 1:
            a = a[0]
        if a.dim() != 3:
            hint = "; pick one example, e.g. cap.maps('self', example=0)" if a.dim() == 4 else ""
            raise ValueError(f"{what}: layer {i} must be (H, Lq, Lk), got {tuple(a.shape)}{hint}")
        out.append(a)
    return out


def _square(layers: list[Tensor], what: str) -> int:
    L = layers[0].shape[-1]
    for i, a in enumerate(layers):
        if a.shape[-2:] != (L, L):
            raise ValueError(f"{what}: needs square self-attention maps of one length, layer {i} is "
                             f"{tuple(a.shape)} (cross-attention maps cannot be chained)")
    return L


def _check_grads(layers: list[Tensor], grads: Maps | None, what: str) -> list[Tensor]:
    if grads is None:
        raise ValueError(f"{what}: needs gradients; capture(..., target=...) and pass cap.grads(...)")
    g = _layers(grads, "grads")
    if len(g) != len(layers) or any(a.shape != b.shape for a, b in zip(layers, g)):
        raise ValueError(f"{what}: grads must match attns layer by layer: "
                         f"{[tuple(a.shape) for a in layers]} vs {[tuple(b.shape) for b in g]}")
    return g


def fuse_heads(a: Tensor, head_fusion: str = "mean") -> Tensor:
    """(H, Lq, Lk) -> (Lq, Lk): the mean (or max, min) over heads."""
    if head_fusion == "mean":
        return a.mean(0)
    if head_fusion == "max":
        return a.amax(0)
    if head_fusion == "min":
        return a.amin(0)
    raise ValueError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)}, got {head_fusion!r}")


def residual_attention(a: Tensor, add_residual: bool = True) -> Tensor:
    """Abnar & Zuidema's per-layer matrix: (Lq, Lq) -> 0.5·A + 0.5·I, rows renormalised to 1.

    The identity stands for the residual connection. A row that sums to 0 (a fully masked
    query, without the residual) stays 0.
    """
    L = a.shape[-1]
    if add_residual:
        a = 0.5 * a + 0.5 * torch.eye(L, dtype=a.dtype, device=a.device)  # (L, L)
    rows = a.sum(-1, keepdim=True)  # (L, 1)
    return a / torch.where(rows == 0, torch.ones_like(rows), rows)


# ----------------------------------------------------------------------------- methods


def raw_attention(attns: Maps, layer: int = -1, head: int | None = None) -> Tensor:
    """One layer's attention weights: (Lq, Lk), the mean over heads, or one head.

    Args:
        attns: layers x (H, Lq, Lk) weights of one example.
        layer: which layer (negative counts from the top).
        head: one head, or None for the mean over heads.
    """
    a = _layers(attns)[layer]  # (H, Lq, Lk)
    return a.mean(0) if head is None else a[head]


def rollout(attns: Maps, add_residual: bool = True, head_fusion: str = "mean") -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

    Per layer Â_l = 0.5·A_l + 0.5·I with A_l the heads fused, rows renormalised; the rollout is
    Â_N ⋯ Â_2 · Â_1. Row i: how much the top-layer output at i draws on input token j; each row
    sums to 1.

    Args:
        attns: layers x (H, L, L) self-attention weights of one example, first layer first.
        add_residual: add the identity for the residual connection (the paper does).
        head_fusion: "mean" (the paper), "max" or "min" over heads.
    """
    layers = _layers(attns)
    L = _square(layers, "rollout")
    R = torch.eye(L, dtype=layers[0].dtype, device=layers[0].device)  # (L, L)
    for a in layers:
        R = residual_attention(fuse_heads(a, head_fusion), add_residual) @ R  # (L, L)
    return R


def attention_flow(
    attns: Maps,
    output: int | None = None,
    add_residual: bool = True,
    head_fusion: str = "mean",
    normalize: bool = False,
) -> Tensor:
    """Attention flow (Abnar & Zuidema 2020): max-flow through the layered attention graph.

    Nodes are (layer l, token i) for l = 0..N; an edge from (l-1, j) to (l, i) has capacity
    Â_l[i, j], the residual-added, row-normalised matrix of :func:`rollout`. The flow of input
    token j to output i is the maximum flow from (0, j) to (N, i) (``networkx.maximum_flow_value``).
    Unlike rollout, which multiplies along every path, flow is limited by each path's bottleneck.

    Cost: one max-flow per (input, output) pair on a graph of (N+1)·L nodes and N·L² edges, so
    for all outputs about L² max-flows; fine for L up to a few dozen tokens, slow beyond.

    Args:
        attns: layers x (H, L, L) self-attention weights of one example, first layer first.
        output: one output position -> (L,) flows into it; None -> (L, L), row i for output i.
        add_residual: add the identity for the residual connection.
        head_fusion: "mean", "max" or "min" over heads.
        normalize: divide each output's flows by their sum.
    """
    import networkx as nx

    layers = _layers(attns)
    L = _square(layers, "attention_flow")
    caps = [residual_attention(fuse_heads(a, head_fusion), add_residual).detach().double().cpu()
            for a in layers]  # N x (L, L)
    N = len(caps)
    graph = nx.DiGraph()
    for lay, c in enumerate(caps, start=1):
        for i in range(L):
            for j in range(L):
                if c[i, j] > 0:
                    graph.add_edge((lay - 1, j), (lay, i), capacity=float(c[i, j]))
    outputs = range(L) if output is None else [range(L)[output]]
    flows = torch.zeros(len(outputs), L, dtype=torch.float64)  # (outputs, L)
    for row, i in enumerate(outputs):
        for j in range(L):
            if (0, j) in graph and (N, i) in graph:
                flows[row, j] = nx.maximum_flow_value(graph, (0, j), (N, i))
    if normalize:
        sums = flows.sum(-1, keepdim=True)  # (outputs, 1)
        flows = flows / torch.where(sums == 0, torch.ones_like(sums), sums)
    flows = flows.to(dtype=layers[0].dtype, device=layers[0].device)
    return flows if output is None else flows[0]  # (L, L) or (L,)


def grad_rollout(attns: Maps, grads: Maps) -> Tensor:
    """Gradient-weighted rollout, Chefer, Gur & Wolf 2021, "Generic Attention-model
    Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers" (the
    self-attention rule, eqs. 5-6).

    Per layer Ā = E_h[(∇A ⊙ A)⁺], then R ← R + Ā·R from R = I, layers in forward order.
    ∇A is the gradient of the explained target (a class logit) w.r.t. the weights A.

    Args:
        attns: layers x (H, L, L) self-attention weights of one example, first layer first.
        grads: the target's gradients w.r.t. them, the same shapes.
    """
    layers = _layers(attns)
    g = _check_grads(layers, grads, "grad_rollout")
    L = _square(layers, "grad_rollout")
    R = torch.eye(L, dtype=layers[0].dtype, device=layers[0].device)  # (L, L)
    for a, ga in zip(layers, g):
        R = R + _grad_weighted(a, ga) @ R  # (L, L)
    return R


def _grad_weighted(a: Tensor, g: Tensor) -> Tensor:
    """Chefer's eq. 5: Ā = E_h[(∇A ⊙ A)⁺], (H, Lq, Lk) -> (Lq, Lk)."""
    return (g * a).clamp(min=0).mean(0)


def _normalise_self(R: Tensor) -> Tensor:
    """Chefer's eqs. 8-9: R̄ = R̂ + I with R̂ = R − I, each row of R̂ divided by its sum (an
    all-zero row stays zero)."""
    eye = torch.eye(R.shape[-1], dtype=R.dtype, device=R.device)
    r_hat = R - eye  # (L, L)
    rows = r_hat.sum(-1, keepdim=True)  # (L, 1)
    return r_hat / torch.where(rows == 0, torch.ones_like(rows), rows) + eye


def grad_rollout_seq2seq(encoder: Maps, encoder_grads: Maps, decoder: Maps, decoder_grads: Maps,
                         cross: Maps, cross_grads: Maps, normalise: bool = True) -> Tensor:
    """Chefer et al. 2021's encoder-decoder rules: the relevance of each source token to each
    decoder position, R^{ts} (T, S).

    With Ā = E_h[(∇A ⊙ A)⁺] per attention map (eq. 5), from R^{ss} = I_S, R^{tt} = I_T and
    R^{ts} = 0:

    * every encoder self-attention: R^{ss} ← R^{ss} + Ā·R^{ss} (eq. 6);
    * then, decoder layer by layer, its self-attention: R^{tt} ← R^{tt} + Ā·R^{tt} and
      R^{ts} ← R^{ts} + Ā·R^{ts} (eqs. 6-7);
    * and its cross-attention (queries t, keys s): R^{ts} ← R^{ts} + (R̄^{tt})ᵀ·Ā·R̄^{ss} (eq. 10),
      R̄ the row-normalised matrices of eqs. 8-9. (Eq. 11 adds Ā·R^{st} to R^{tt}; the source
      never attends to the decoder, so R^{st} = 0 and it adds nothing.)

    Args:
        encoder, encoder_grads: encoder layers x (H, S, S) self-attention and d target / d it.
        decoder, decoder_grads: decoder layers x (H, T, T) (causal) self-attention and gradients.
        cross, cross_grads: decoder layers x (H, T, S) cross-attention and gradients.
        normalise: apply eqs. 8-9 in eq. 10 (the paper does); False uses R^{tt}, R^{ss} as they are.
    """
    enc, dec, crs = _layers(encoder), _layers(decoder), _layers(cross, "cross")
    ge = _check_grads(enc, encoder_grads, "grad_rollout_seq2seq (encoder)")
    gd = _check_grads(dec, decoder_grads, "grad_rollout_seq2seq (decoder)")
    gc = _check_grads(crs, cross_grads, "grad_rollout_seq2seq (cross)")
    S, T = _square(enc, "grad_rollout_seq2seq encoder"), _square(dec, "grad_rollout_seq2seq decoder")
    if len(crs) != len(dec) or any(c.shape[-2:] != (T, S) for c in crs):
        raise ValueError(f"grad_rollout_seq2seq: cross-attention must be {len(dec)} x (H, {T}, {S}), "
                         f"got {[tuple(c.shape) for c in crs]}")
    R_ss = grad_rollout(enc, ge)  # (S, S)
    R_tt = torch.eye(T, dtype=dec[0].dtype, device=dec[0].device)  # (T, T)
    R_ts = torch.zeros(T, S, dtype=dec[0].dtype, device=dec[0].device)  # (T, S)
    ss = _normalise_self(R_ss) if normalise else R_ss
    for a, g, c, gcr in zip(dec, gd, crs, gc):
        a_bar = _grad_weighted(a, g)  # (T, T)
        R_tt, R_ts = R_tt + a_bar @ R_tt, R_ts + a_bar @ R_ts
        tt = _normalise_self(R_tt) if normalise else R_tt
        R_ts = R_ts + tt.T @ _grad_weighted(c, gcr) @ ss  # (T, S)
    return R_ts


def attention_x_gradient(attns: Maps, grads: Maps, layer: int = -1, positive: bool = False) -> Tensor:
    """Attention times gradient of one layer, E_h[A ⊙ ∇A]: (Lq, Lk), signed.

    The per-layer relevance that Chefer et al. 2021 accumulate (without their clamp), a
    first-order estimate of each weight's contribution to the target (gradient × input with
    the attention weights as the input).

    Args:
        attns: layers x (H, Lq, Lk) weights of one example.
        grads: the target's gradients w.r.t. them.
        layer: which layer (negative counts from the top).
        positive: clamp each head's product at 0 before the mean (Chefer's Ā); the registered
            ``METHODS["attn_x_grad"]`` (encoder and seq2seq paths alike) sets it.
    """
    layers = _layers(attns)
    g = _check_grads(layers, grads, "attention_x_gradient")
    prod = layers[layer] * g[layer]  # (H, Lq, Lk)
    return (prod.clamp(min=0) if positive else prod).mean(0)


def relevance_for(matrix: Tensor, position: int | Sequence[int] | str = 0) -> Tensor:
    """Per-token relevance (Lk,) of a chosen output position from an (Lq, Lk) matrix.

    Args:
        matrix: (Lq, Lk), row i about output position i (rollout, flow, Chefer's R, ...).
        position: a row (0 for [CLS], -1 for a decoder's last token), a list of rows to
            average, or "mean" for the mean of all rows.
    """
    if matrix.dim() != 2:
        raise ValueError(f"relevance_for: matrix must be (Lq, Lk), got {tuple(matrix.shape)}")
    if isinstance(position, str):
        if position != "mean":
            raise ValueError(f"relevance_for: position must be an int, a list of ints or 'mean', got {position!r}")
        return matrix.mean(0)
    if isinstance(position, int):
        return matrix[position]
    rows = list(position)
    if not rows:
        raise ValueError("relevance_for: empty list of positions")
    return matrix[rows].mean(0)


def token_relevance(name: str, attns: Maps, grads: Maps | None = None, position: int | Sequence[int] | str = 0,
                    **options) -> Tensor:
    """(Lk,) relevance of output ``position`` by the registered method ``name``: the method's
    matrix, less the identity Chefer's R starts from (each token's own residual, not evidence),
    read with :func:`relevance_for`. Attention flow computes only that row's max-flows when
    ``position`` is one int.

    Args:
        name: a registered method (see :data:`METHODS`).
        attns: layers x (H, L, L) self-attention weights of one example.
        grads: the target's gradients w.r.t. them (passed only to methods that need them).
        position: the output row(s) to read (see :func:`relevance_for`).
        options: the method's own keyword arguments.
    """
    method = get_method(name)
    if name == "flow" and isinstance(position, int):
        options.setdefault("output", position)
    R = method(attns, grads if method.needs_grads else None, **options)
    if R.dim() == 1:  # flow at one output
        return R
    if name == "chefer":
        R = R - torch.eye(R.shape[-1], dtype=R.dtype, device=R.device)
    return relevance_for(R.double(), position)


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Method:
    """A registered explanation method.

    Attributes:
        name: its registry name.
        fn: ``fn(attns, grads=None, **options) -> Tensor``.
        needs_grads: whether ``grads`` is required (capture with a target).
        description: one line for listings.
    """

    name: str
    fn: Callable[..., Tensor]
    needs_grads: bool
    description: str

    def __call__(self, attns: Maps, grads: Maps | None = None, **options) -> Tensor:
        if self.needs_grads and grads is None:
            raise ValueError(f"method {self.name!r} needs gradients; capture(..., target=...) first")
        return self.fn(attns, grads, **options)


METHODS: Registry[Method] = Registry("explanation method")


def register_method(name: str, needs_grads: bool = False, description: str = ""):
    """Decorator: register ``fn(attns, grads=None, **options) -> Tensor`` under ``name``.

    Raises:
        ValueError: another method is already registered under ``name``.
    """

    def deco(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        doc = description or ((fn.__doc__ or "").strip().splitlines() or [""])[0]
        METHODS.register(name, Method(name, fn, needs_grads, doc))
        return fn

    return deco


def get_method(name: str) -> Method:
    """The method registered under ``name``; an unknown name suggests the nearest (ConfigError)."""
    return METHODS.get(name)


register_method("raw", description="one layer's attention, mean over heads")(
    lambda attns, grads=None, **kw: raw_attention(attns, **kw))
register_method("rollout", description="attention rollout (Abnar & Zuidema 2020)")(
    lambda attns, grads=None, **kw: rollout(attns, **kw))
register_method("flow", description="attention flow, max-flow (Abnar & Zuidema 2020)")(
    lambda attns, grads=None, **kw: attention_flow(attns, **kw))
register_method("chefer", needs_grads=True, description="gradient-weighted rollout (Chefer et al. 2021)")(
    lambda attns, grads=None, **kw: grad_rollout(attns, grads, **kw))
register_method("attn_x_grad", needs_grads=True,
                description="attention x gradient of the last layer, positive part (Chefer's per-layer term)")(
    lambda attns, grads=None, positive=True, **kw: attention_x_gradient(attns, grads, positive=positive, **kw))


__all__ = [
    "raw_attention", "rollout", "attention_flow", "grad_rollout", "grad_rollout_seq2seq", "attention_x_gradient",
    "relevance_for", "token_relevance", "fuse_heads", "residual_attention",
    "Method", "METHODS", "register_method", "get_method",
]
