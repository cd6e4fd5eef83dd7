"""Input attributions of one example, per token: Integrated Gradients, occlusion, a random baseline.

    target = lambda out: out.logits[0, 1]                      # a scalar of the model output
    attr, delta = integrated_gradients(model, inputs, target, model.embeddings.token, baseline_ids=pad_id)
    occ = occlusion(model, inputs, target, replace_id=mask_id)  # (L,)
    rnd = random_relevance(L, seed=0, key=(example, draw))      # (L,), one stream per key

``inputs`` holds the keyword arguments of one forward pass with a batch of ONE example
(``input_ids`` (1, L), optionally ``attention_mask`` (1, L), ...). ``target`` maps the model
output of that one example to a scalar tensor; when a function here runs many variants of the
example as one batch, it hands ``target`` each row's output as a batch of one (see
:func:`batched_targets`), so targets written as ``out.logits[0, k]`` work unchanged.

Models run in whatever mode they are in: call ``model.eval()`` first.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

Target = Callable[[Any], Tensor]
IDS = "input_ids"


# ----------------------------------------------------------------------------- helpers


def _ids(inputs: dict[str, Any], ids_key: str = IDS) -> Tensor:
    ids = inputs[ids_key]
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise ValueError(f"explain: inputs[{ids_key!r}] must be (1, L) (one example), got {tuple(ids.shape)}")
    return ids


def _row(x: Any, b: int, B: int) -> Any:
    """Row ``b`` of a batched model output, kept as a batch of one: tensors whose first dim is
    ``B`` are sliced ``[b:b+1]``; tuples, lists, dicts and dataclasses are walked."""
    if isinstance(x, Tensor):
        return x[b:b + 1] if x.dim() >= 1 and x.shape[0] == B else x
    if isinstance(x, (tuple, list)):
        return type(x)(_row(v, b, B) for v in x)
    if isinstance(x, dict):
        return {k: _row(v, b, B) for k, v in x.items()}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        fields = {f.name: _row(getattr(x, f.name), b, B) for f in dataclasses.fields(x) if f.init}
        return dataclasses.replace(x, **fields)
    return x


def _expand(inputs: dict[str, Any], n: int) -> dict[str, Any]:
    """Every (1, ...) tensor of ``inputs`` repeated to n rows; other values kept."""
    return {k: (v.expand(n, *v.shape[1:]) if isinstance(v, Tensor) and v.dim() >= 1 and v.shape[0] == 1 else v)
            for k, v in inputs.items()}


def _scalar(value: Any) -> Tensor:
    if not isinstance(value, Tensor) or value.numel() != 1:
        what = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"explain: target must return a scalar tensor, got {what}")
    return value.reshape(())


def forward_targets(model: nn.Module, inputs: dict[str, Any], target: Target, n: int) -> Tensor:
    """Run a batch of ``n`` variants of one example and apply ``target`` to each row: (n,).

    ``inputs`` may mix (n, ...) tensors and (1, ...) tensors (broadcast to n). Runs in the
    caller's grad mode.
    """
    out = model(**_expand(inputs, n))
    return torch.stack([_scalar(target(_row(out, b, n))) for b in range(n)])  # (n,)


@torch.no_grad()
def batched_targets(
    model: nn.Module,
    inputs: dict[str, Any],
    target: Target,
    overrides: dict[str, Tensor],
    batch_size: int = 64,
) -> Tensor:
    """The target of N variants of one example, ``batch_size`` at a time, without gradients.

    Args:
        model: the model.
        inputs: one example's forward arguments (batch of one).
        target: model output of one example -> scalar tensor.
        overrides: inputs replaced per variant, each (N, L) (e.g. ``input_ids``, ``attention_mask``).
        batch_size: variants per forward pass.

    Returns:
        (N,) float64 on the CPU.
    """
    N = next(iter(overrides.values())).shape[0]
    scores = []
    for start in range(0, N, batch_size):
        chunk = {**inputs, **{k: v[start:start + batch_size] for k, v in overrides.items()}}
        n = min(batch_size, N - start)
        scores.append(forward_targets(model, chunk, target, n).detach().double().cpu())
    return torch.cat(scores) if scores else torch.zeros(0, dtype=torch.float64)


# ----------------------------------------------------------------------------- methods


def integrated_gradients(
    model: nn.Module,
    inputs: dict[str, Any],
    target: Target,
    embedding: nn.Module,
    baseline_ids: Tensor | int,
    steps: int = 64,
    method: str = "gausslegendre",
    *,
    keep: Tensor | None = None,
    ids_key: str = IDS,
    internal_batch_size: int | None = None,
) -> tuple[Tensor, float]:
    """Integrated Gradients (Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep
    Networks") on the output of a token-embedding module, via ``captum.attr.LayerIntegratedGradients``.

    IG_i = (e_i − e'_i) · ∫₀¹ ∂f(e' + α(e − e'))/∂e_i dα, summed over the hidden dim, with e the
    module's output for the input ids and e' for the baseline ids. Completeness: Σ_i IG_i =
    f(x) − f(baseline) up to the quadrature error, returned as ``delta``.

    Args:
        model: the model; called as ``model(**inputs)``.
        inputs: one example's forward arguments, ``inputs[ids_key]`` (1, L).
        target: model output -> scalar tensor, e.g. ``lambda out: out.logits[0, 1]``.
        embedding: the module whose output is attributed, e.g. ``model.embeddings.token``
            (then positions and the embedding norm are part of f) or ``model.embeddings``.
        baseline_ids: an id (pad, [MASK]) or ids broadcastable to (1, L); the baseline takes
            them at every position except those in ``keep``.
        steps: quadrature points.
        method: captum's rule: "gausslegendre", "riemann_trapezoid", "riemann_middle", ...
        keep: (L,) or (1, L) bool, positions kept as in the input in the baseline ([CLS], [SEP]).
        ids_key: the ids' name in ``inputs``.
        internal_batch_size: quadrature points per forward pass (None: all at once).

    Returns:
        ((L,) attributions, delta = Σ attributions − (f(x) − f(baseline))).
    """
    try:
        from captum.attr import LayerIntegratedGradients
    except ImportError as e:  # captum is a dependency; say what is missing
        raise ImportError("integrated_gradients needs captum (pip install captum==0.9.0)") from e
    ids = _ids(inputs, ids_key)
    base = torch.as_tensor(baseline_ids, dtype=ids.dtype, device=ids.device).expand_as(ids)  # (1, L)
    if keep is not None:
        base = torch.where(keep.reshape(1, -1).to(ids.device).bool(), ids, base)  # (1, L)
    rest = {k: v for k, v in inputs.items() if k != ids_key}

    def forward(batch_ids: Tensor) -> Tensor:  # (N, L) -> (N,)
        return forward_targets(model, {**rest, ids_key: batch_ids}, target, batch_ids.shape[0])

    lig = LayerIntegratedGradients(forward, embedding)
    attr, delta = lig.attribute(ids, baselines=base, n_steps=steps, method=method,
                                internal_batch_size=internal_batch_size, return_convergence_delta=True)
    return attr.detach()[0].sum(-1), float(delta.reshape(-1)[0])  # (L,)


def occlusion(
    model: nn.Module,
    inputs: dict[str, Any],
    target: Target,
    replace_id: int,
    positions=None,
    *,
    ids_key: str = IDS,
    batch_size: int = 64,
) -> Tensor:
    """Leave-one-token-out occlusion (Zeiler & Fergus 2014; Li et al. 2016 for text):
    R_i = f(x) − f(x with token i replaced by ``replace_id``), all variants in batches.

    Args:
        model: the model.
        inputs: one example's forward arguments, ``inputs[ids_key]`` (1, L).
        target: model output -> scalar tensor.
        replace_id: the id put in place of the occluded token ([MASK], [UNK], pad).
        positions: the positions to occlude (indices or an (L,) bool mask); None for all.
            Other positions get 0.
        ids_key: the ids' name in ``inputs``.
        batch_size: variants per forward pass.

    Returns:
        (L,) float64.
    """
    ids = _ids(inputs, ids_key)
    L = ids.shape[1]
    if positions is None:
        pos = torch.arange(L)
    else:
        pos = torch.as_tensor(positions)
        pos = pos.nonzero().flatten() if pos.dtype == torch.bool else pos.flatten().long() % L
    variants = ids.repeat(len(pos) + 1, 1)  # (P + 1, L); row 0 is the input itself
    variants[torch.arange(1, len(pos) + 1), pos.to(ids.device)] = replace_id
    scores = batched_targets(model, inputs, target, {ids_key: variants}, batch_size)  # (P + 1,)
    out = torch.zeros(L, dtype=torch.float64)
    out[pos] = scores[0] - scores[1:]
    return out


def random_relevance(length: int, seed: int = 0, *, key: Sequence[int] = ()) -> Tensor:
    """The random baseline of faithfulness tables: (length,) uniform [0, 1) scores, float64,
    reproducible by ``seed`` (its own generator, the global RNG untouched).

    One seed gives every length the same prefix (torch's generator), so a seed shared by many
    examples removes their positions in one fixed order. Give each example and each draw its
    own ``key``, e.g. ``(example index, draw)``: it is hashed with ``seed`` into the generator's
    seed, an independent stream per key.

    Args:
        length: L, the scores returned.
        seed: the base seed.
        key: integers that pick the stream; ``()`` uses ``seed`` itself.
    """
    if key:
        digest = hashlib.blake2b(repr((int(seed), *map(int, key))).encode(), digest_size=8).digest()
        seed = int.from_bytes(digest, "little") >> 1  # 63 bits: any value manual_seed takes
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(length, generator=gen, dtype=torch.float64)


__all__ = ["integrated_gradients", "occlusion", "random_relevance", "batched_targets", "forward_targets"]
