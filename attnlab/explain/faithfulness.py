"""Faithfulness of a relevance vector: perturb the input in relevance order and watch the target.

    score = masked_scorer(model, inputs, target, replace_id=mask_id, protected=special)
    comprehensiveness(score, relevance)       # ERASER: drop when the top-k% tokens are removed
    sufficiency(score, relevance)             # ERASER: drop when only the top-k% tokens are kept
    aopc(score, relevance)                    # Samek et al.: most-relevant-first deletion
    aopc_decompx(score, relevance)            # DecompX: 0, 10, ..., 90% masked (a probability target)
    deletion_auc(score, relevance), insertion_auc(score, relevance)   # Petsiuk et al. (RISE)
    randomization_check({"ig": fn, ...}, model)                     # Adebayo et al. sanity check
    faithfulness_table({"ig": {"aopc": 0.3, ...}, ...})             # methods ranked per metric

A scorer is any callable ``score_fn(keep) -> float`` with ``keep`` an (L,) bool tensor: the
target with the tokens where ``keep`` is False removed. It may carry ``protected`` ((L,) bool:
positions never removed and never counted, such as [CLS]/[SEP] and padding) and
``many(keeps (N, L)) -> (N,)`` (batched scoring); :func:`masked_scorer` makes one with both.
Metrics rank only the unprotected positions; ties in relevance go to the earlier position.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from .attribution import IDS, Target, _ids, batched_targets

ScoreFn = Callable[[Tensor], float]
BINS = (0.01, 0.05, 0.1, 0.2, 0.5)

# Which way each metric points: True = higher is more faithful.
HIGHER_IS_BETTER: dict[str, bool] = {
    "comprehensiveness": True,   # removing the top tokens should hurt the target a lot
    "sufficiency": False,        # the top tokens alone should keep the target (small drop)
    "aopc": True,                # mean drop along most-relevant-first deletion
    "deletion_auc": False,       # the score should fall fast as top tokens go
    "insertion_auc": True,       # the score should rise fast as top tokens come back
    "aopc_decompx": True,        # mean probability drop at 0, 10, ..., 90% masked
}
METRICS = tuple(HIGHER_IS_BETTER)[:5]  # what faithfulness_scores computes, in table order
DECOMPX_PERCENTS = tuple(range(0, 100, 10))  # K of DecompX's AOPC, K = 0 included
# deletion_auc = s0 + (s0 − s_n)/(2n) − aopc for EVERY ranking (trapezoids; s0, s_n: nothing, all
# removed), so the two rank methods alike: the mean rank counts it only where its twin is absent.
TWIN_OF = {"deletion_auc": "aopc"}


# ----------------------------------------------------------------------------- scorers


class MaskedScorer:
    """``score(keep)``: the model's target with unkept tokens replaced or masked out.

    Made by :func:`masked_scorer`; ``protected`` is (L,) bool, ``length`` is L.
    """

    def __init__(self, model, inputs, target, replace_id, protected, ids_key, batch_size):
        ids = _ids(inputs, ids_key)
        L = ids.shape[1]
        self.model, self.inputs, self.target = model, inputs, target
        self.replace_id, self.ids_key, self.batch_size, self.length = replace_id, ids_key, batch_size, L
        mask = inputs.get("attention_mask")
        self.mask = torch.ones_like(ids) if mask is None else mask  # (1, L)
        padding = ~self.mask[0].bool().cpu()  # (L,) already absent: never counted
        given = torch.zeros(L, dtype=torch.bool) if protected is None else _bool(protected, L, "protected")
        self.protected = given | padding  # (L,)

    def __call__(self, keep: Tensor) -> float:
        return float(self.many(_bool(keep, self.length, "keep")[None])[0])

    def many(self, keeps: Tensor) -> Tensor:
        """(N, L) bool -> (N,) float64 scores, in batches."""
        keeps = keeps.bool().cpu() | self.protected  # (N, L)
        ids = self.inputs[self.ids_key]
        dev = ids.device
        if self.replace_id is not None:
            rows = torch.where(keeps.to(dev), ids, torch.full_like(ids, self.replace_id))  # (N, L)
            overrides = {self.ids_key: rows}
        else:
            overrides = {"attention_mask": self.mask * keeps.to(dev, self.mask.dtype)}  # (N, L)
        return batched_targets(self.model, self.inputs, self.target, overrides, self.batch_size)


def masked_scorer(
    model: nn.Module,
    inputs: dict[str, Any],
    target: Target,
    replace_id: int | None = None,
    protected: Tensor | Sequence[int] | None = None,
    *,
    ids_key: str = IDS,
    batch_size: int = 64,
) -> MaskedScorer:
    """A scorer that removes tokens by replacing their ids, or by masking them out.

    With ``replace_id=None`` a removed token gets attention_mask 0: no query attends to it (and
    mean pooling skips it), but the kept tokens keep their positions (a learned absolute
    position still says where a token was, unlike a truly shortened input).

    Args:
        model: the model; called as ``model(**inputs)`` with ``attention_mask`` changed in mask mode.
        inputs: one example's forward arguments, ``inputs[ids_key]`` (1, L).
        target: model output -> scalar tensor.
        replace_id: the id of a removed token ([MASK], pad), or None to mask it out.
        protected: positions never removed and never counted ((L,) bool or indices); padding
            of ``inputs["attention_mask"]`` is added to them.
        ids_key: the ids' name in ``inputs``.
        batch_size: variants per forward pass.
    """
    return MaskedScorer(model, inputs, target, replace_id, protected, ids_key, batch_size)


def _bool(x, L: int, what: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.dtype != torch.bool:
        mask = torch.zeros(L, dtype=torch.bool)
        mask[x.long().flatten()] = True
        return mask
    x = x.reshape(-1).cpu()
    if x.shape != (L,):
        raise ValueError(f"{what} must be an ({L},) bool mask, got {tuple(x.shape)}")
    return x


def _scores(score_fn: ScoreFn, keeps: Tensor) -> Tensor:
    """(N, L) bool -> (N,) float64, batched when the scorer can."""
    many = getattr(score_fn, "many", None)
    if many is not None:
        return many(keeps).double().cpu()
    return torch.tensor([float(score_fn(k)) for k in keeps], dtype=torch.float64)


def _order(score_fn: ScoreFn, relevance: Tensor, protected) -> tuple[Tensor, Tensor]:
    """(counted positions, most relevant first; protected mask (L,))."""
    relevance = relevance.detach().reshape(-1).double().cpu()  # (L,)
    L = relevance.shape[0]
    if protected is None:
        protected = getattr(score_fn, "protected", None)
    prot = torch.zeros(L, dtype=torch.bool) if protected is None else _bool(protected, L, "protected")
    free = (~prot).nonzero().flatten()  # (n,)
    if len(free) == 0:
        raise ValueError("faithfulness: every position is protected; nothing to remove")
    rank = torch.sort(relevance[free], descending=True, stable=True).indices
    return free[rank], prot


def _without_top(order: Tensor, L: int, ks: Sequence[int]) -> Tensor:
    """(len(ks), L) keep masks: all but the first k of ``order`` kept."""
    keeps = torch.ones(len(ks), L, dtype=torch.bool)
    for row, k in enumerate(ks):
        keeps[row, order[:k]] = False
    return keeps


def _only_top(order: Tensor, L: int, ks: Sequence[int]) -> Tensor:
    """(len(ks), L) keep masks: only the first k of ``order`` kept, and the protected positions."""
    keeps = torch.ones(len(ks), L, dtype=torch.bool)
    keeps[:, order] = False
    for row, k in enumerate(ks):
        keeps[row, order[:k]] = True
    return keeps


# ----------------------------------------------------------------------------- metrics


class Binned(NamedTuple):
    """Per-bin drops (bin fraction -> f(x) − f(perturbed)) and their mean (AOPC-style)."""

    values: dict[float, float]
    mean: float


def bin_sizes(n: int, bins: Sequence[float]) -> list[int]:
    """Tokens in each top-k% bin of n counted tokens: floor(k·n), at least 1, at most n."""
    return [min(n, max(1, math.floor(k * n + 1e-9))) for k in bins]


def comprehensiveness(score_fn: ScoreFn, relevance: Tensor, bins: Sequence[float] = BINS,
                      *, protected=None) -> Binned:
    """ERASER comprehensiveness (DeYoung et al. 2020): per bin k, f(x) − f(x without its top-k%
    tokens by relevance); the mean over bins is the aggregate. Higher is more faithful.

    Args:
        score_fn: ``keep (L,) bool -> float`` (see :func:`masked_scorer`).
        relevance: (L,) scores of one example, higher = more relevant.
        bins: fractions of the counted (unprotected) tokens.
        protected: positions never removed nor counted; default ``score_fn.protected``.
    """
    return _binned(score_fn, relevance, bins, protected, _without_top)


def sufficiency(score_fn: ScoreFn, relevance: Tensor, bins: Sequence[float] = BINS,
                *, protected=None) -> Binned:
    """ERASER sufficiency (DeYoung et al. 2020): per bin k, f(x) − f(only the top-k% tokens);
    the mean over bins is the aggregate. Lower is more faithful (can be negative).

    Args: as :func:`comprehensiveness`.
    """
    return _binned(score_fn, relevance, bins, protected, _only_top)


def _binned(score_fn: ScoreFn, relevance: Tensor, bins: Sequence[float], protected, keeps) -> Binned:
    """f(x) − f(keeps(order, L, k)) per bin, ``keeps`` one of :func:`_without_top`, :func:`_only_top`."""
    order, prot = _order(score_fn, relevance, protected)
    L, ks = prot.shape[0], bin_sizes(len(order), bins)
    s = _scores(score_fn, torch.cat([torch.ones(1, L, dtype=torch.bool), keeps(order, L, ks)]))
    drops = [float(s[0] - v) for v in s[1:]]
    return Binned(dict(zip(bins, drops)), sum(drops) / len(drops))


def aopc(score_fn: ScoreFn, relevance: Tensor, steps: int | None = None, *, protected=None) -> float:
    """Area over the perturbation curve (Samek et al. 2017, "Evaluating the Visualization of What
    a Deep Neural Network Has Learned"), most relevant first, one token per step:
    (1/K) Σ_{k=1..K} f(x) − f(x without its top-k tokens). Higher is more faithful.

    Samek et al. average over k = 0..K, dividing by K + 1 (their k = 0 term is 0); that is this
    value times K / (K + 1).

    Args:
        score_fn: ``keep (L,) bool -> float``.
        relevance: (L,) scores, higher = more relevant.
        steps: K; None for every counted token.
        protected: positions never removed nor counted; default ``score_fn.protected``.
    """
    order, prot = _order(score_fn, relevance, protected)
    K = len(order) if steps is None else min(steps, len(order))
    if K < 1:
        raise ValueError(f"aopc: steps must be >= 1, got {steps}")
    s = _scores(score_fn, _without_top(order, prot.shape[0], range(K + 1)))  # (K + 1,), s[0] = f(x)
    return float((s[0] - s[1:]).mean())


def aopc_decompx(score_fn: ScoreFn, relevance: Tensor, percents: Sequence[int] = DECOMPX_PERCENTS,
                 *, protected=None) -> float:
    """AOPC as DecompX reports it (Modarressi et al. 2023, "DecompX: Explaining Transformers
    Decisions by Propagating Token Decomposition", Table 1): the mean over K of f(x) − f(x with
    its floor(K/100 · n) most relevant tokens removed), K = 0 (drop 0) included, n = the
    unprotected tokens ([CLS]/[SEP] never removed nor counted). Higher is more faithful. The
    paper's f is the predicted class's probability (target ``prob``), tokens replaced by [MASK].

    Args: as :func:`aopc`, and ``percents``: the K, integer percents in [0, 100].
    """
    order, prot = _order(score_fn, relevance, protected)
    if not percents or any(int(k) != k or not 0 <= k <= 100 for k in percents):
        raise ValueError(f"aopc_decompx: percents must be integers in [0, 100], got {list(percents)}")
    ks = [int(k) * len(order) // 100 for k in percents]  # floor(K/100 · n), in integers
    s = _scores(score_fn, _without_top(order, prot.shape[0], [0, *ks]))  # (1 + len(ks),), s[0] = f(x)
    return float((s[0] - s[1:]).mean())


def deletion_curve(score_fn: ScoreFn, relevance: Tensor, *, protected=None) -> tuple[Tensor, Tensor]:
    """Scores as the counted tokens are removed most relevant first: (fractions (n+1,), scores
    (n+1,)), fraction k/n after k removals (Petsiuk et al. 2018, RISE's deletion game)."""
    order, prot = _order(score_fn, relevance, protected)
    n = len(order)
    s = _scores(score_fn, _without_top(order, prot.shape[0], range(n + 1)))
    return torch.arange(n + 1, dtype=torch.float64) / n, s


def insertion_curve(score_fn: ScoreFn, relevance: Tensor, *, protected=None) -> tuple[Tensor, Tensor]:
    """Scores as the counted tokens are put back into an all-removed input, most relevant first:
    (fractions (n+1,), scores (n+1,)) (Petsiuk et al. 2018, RISE's insertion game)."""
    order, prot = _order(score_fn, relevance, protected)
    n = len(order)
    s = _scores(score_fn, _only_top(order, prot.shape[0], range(n + 1)))
    return torch.arange(n + 1, dtype=torch.float64) / n, s


def _trapezoid(x: Tensor, y: Tensor) -> float:
    return float(((y[1:] + y[:-1]) / 2 * (x[1:] - x[:-1])).sum())


def deletion_auc(score_fn: ScoreFn, relevance: Tensor, *, protected=None) -> float:
    """Area under :func:`deletion_curve` by the trapezoid rule over [0, 1]. Lower is more faithful.
    It equals s0 + (s0 − s_n)/(2n) − :func:`aopc` (s0, s_n: nothing, everything removed)."""
    return _trapezoid(*deletion_curve(score_fn, relevance, protected=protected))


def insertion_auc(score_fn: ScoreFn, relevance: Tensor, *, protected=None) -> float:
    """Area under :func:`insertion_curve` by the trapezoid rule over [0, 1]. Higher is more faithful."""
    return _trapezoid(*insertion_curve(score_fn, relevance, protected=protected))


# ----------------------------------------------------------------------------- sanity check


def rank(x: Tensor) -> Tensor:
    """1-based ranks, ties averaged: (n,) -> (n,) float64."""
    x = x.detach().reshape(-1).double().cpu()
    order = torch.argsort(x, stable=True)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(1, len(x) + 1, dtype=torch.float64)
    for v in torch.unique(x):  # average the ranks of tied values
        tied = x == v
        if int(tied.sum()) > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation (Pearson on tie-averaged ranks); nan if either is constant."""
    ra, rb = rank(a), rank(b)
    if ra.shape != rb.shape:
        raise ValueError(f"spearman: shapes differ, {tuple(ra.shape)} vs {tuple(rb.shape)}")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return float("nan") if denom == 0 else float((ra * rb).sum()) / denom


def rank_agreement(a: Tensor, b: Tensor, keep: Tensor | None = None, absolute: bool = False) -> float:
    """Spearman ρ of two explanations of one example ((L,) each) over the ``keep`` positions
    ((L,) bool; None: all), of |relevance| if ``absolute``: the per-example score of the
    model-randomisation check. NaN, never 0, when either is constant there: the correlation is
    undefined, and a constant explanation ignores the model as surely as ρ = 1 does (a failure)."""
    a, b = torch.as_tensor(a).double().reshape(-1), torch.as_tensor(b).double().reshape(-1)
    if keep is not None:
        a, b = a[keep], b[keep]
    return spearman(a.abs(), b.abs()) if absolute else spearman(a, b)


def randomize_weights(model: nn.Module, prefixes: Sequence[str] | None = None, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with its weights re-initialised (the original is untouched).

    Modules with ``reset_parameters`` (Linear, Embedding, LayerNorm, ...) reset themselves;
    parameters of other modules are redrawn from N(0, std of the trained tensor, or 0.02).

    Args:
        model: the trained model.
        prefixes: re-initialise only modules whose qualified name starts with one of these
            (e.g. ``["encoder.layers.1", "head"]``, a cascading step); None for all.
        seed: the torch seed of the new weights.
    """
    new = copy.deepcopy(model)
    chosen = lambda name: prefixes is None or any(name == p or name.startswith(p + ".") for p in prefixes)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        done: set[int] = set()
        for name, mod in new.named_modules():
            if chosen(name) and callable(getattr(mod, "reset_parameters", None)):
                mod.reset_parameters()
                done.update(id(p) for p in mod.parameters())
        for name, p in new.named_parameters():
            if id(p) not in done and chosen(name.rsplit(".", 1)[0] if "." in name else ""):
                std = float(p.std()) if p.numel() > 1 else 0.0
                p.normal_(0.0, std if std > 0 else 0.02)
    return new


def randomization_check(
    explain_fn: Callable[[nn.Module], Tensor] | dict[str, Callable[[nn.Module], Tensor]],
    model: nn.Module,
    *,
    prefixes: Sequence[str] | None = None,
    seed: int = 0,
    absolute: bool = False,
    keep: Tensor | None = None,
) -> dict[str, float]:
    """Model-parameter randomisation test (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

    Each explanation of the trained model is compared with the same explanation of a copy whose
    weights are re-initialised ALL AT ONCE (the test's "independent"/full variant; cascading
    from the top layer is available through ``prefixes``, one call per step). Returns the
    Spearman ρ per method (:func:`rank_agreement`): near 1 means the explanation ignores the
    weights (it fails the check), lower that it depends on them; NaN (constant on either model)
    fails too. A random baseline must draw anew on each call (seeded alike twice, it scores ρ = 1
    by construction). :func:`attnlab.explain.evaluation.randomization` runs it over many texts.

    Args:
        explain_fn: ``model -> (L,) relevance``, or a dict of them by method name.
        model: the trained model (left unchanged).
        prefixes: module-name prefixes to re-initialise (see :func:`randomize_weights`); None for all.
        seed: the seed of the random weights.
        absolute: compare |relevance| (Adebayo et al. report both).
        keep: (L,) bool positions compared (e.g. not [CLS]/[SEP]); None: all.
    """
    fns = explain_fn if isinstance(explain_fn, dict) else {"explanation": explain_fn}
    random_model = randomize_weights(model, prefixes, seed)
    return {name: rank_agreement(fn(model), fn(random_model), keep, absolute) for name, fn in fns.items()}


def faithfulness_scores(score_fn: ScoreFn, relevance: Tensor, bins: Sequence[float] = BINS, *,
                        protected=None) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one relevance vector (comprehensiveness and
    sufficiency as their mean over ``bins``).

    Args:
        score_fn: the target with unkept tokens removed (see :func:`masked_scorer`).
        relevance: (L,) one score per token.
        bins: the fractions of tokens for comprehensiveness and sufficiency.
        protected: (L,) bool positions never removed (default: the scorer's own).
    """
    return {"comprehensiveness": comprehensiveness(score_fn, relevance, bins, protected=protected).mean,
            "sufficiency": sufficiency(score_fn, relevance, bins, protected=protected).mean,
            "aopc": aopc(score_fn, relevance, protected=protected),
            "deletion_auc": deletion_auc(score_fn, relevance, protected=protected),
            "insertion_auc": insertion_auc(score_fn, relevance, protected=protected)}


# ----------------------------------------------------------------------------- table


def faithfulness_table(
    results: dict[str, dict[str, float]],
    higher_is_better: dict[str, bool] | None = None,
    ranked: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Rank methods per metric (1 = best, ties share the average rank), then by mean rank.

    The mean rank averages independent metrics: deletion AUC, AOPC's affine twin (:data:`TWIN_OF`),
    is ranked but not counted where AOPC is present, so the five default metrics give the mean
    over comprehensiveness, sufficiency, AOPC and insertion AUC.

    Args:
        results: method -> metric -> value, e.g. ``{"ig": {"aopc": 0.4, "sufficiency": 0.1}}``.
        higher_is_better: directions of extra metrics (added to :data:`HIGHER_IS_BETTER`).
        ranked: the metrics whose ranks the mean averages; None: all but a present twin.

    Returns:
        One row per method, best first: ``{"method", <metric>: value, "<metric>_rank": r,
        "mean_rank": m}``.
    """
    direction = {**HIGHER_IS_BETTER, **(higher_is_better or {})}
    methods = list(results)
    metrics = sorted({m for r in results.values() for m in r})
    for metric in metrics:
        if metric not in direction:
            raise ValueError(f"faithfulness_table: unknown direction of metric {metric!r}; known: "
                             f"{', '.join(direction)} (pass higher_is_better={{{metric!r}: ...}})")
    rows = {m: {"method": m, **results[m]} for m in methods}
    for metric in metrics:
        have = [m for m in methods if metric in results[m]]
        vals = torch.tensor([float(results[m][metric]) for m in have], dtype=torch.float64)
        ranks = rank(-vals if direction[metric] else vals)
        for m, r in zip(have, ranks.tolist()):
            rows[m][f"{metric}_rank"] = r
    counted = [m for m in metrics if TWIN_OF.get(m) not in metrics] if ranked is None else list(ranked)
    for row in rows.values():
        rs = [row[f"{metric}_rank"] for metric in counted if f"{metric}_rank" in row]
        row["mean_rank"] = sum(rs) / len(rs) if rs else float("nan")
    return sorted(rows.values(), key=lambda r: (r["mean_rank"], methods.index(r["method"])))


__all__ = [
    "HIGHER_IS_BETTER", "METRICS", "BINS", "DECOMPX_PERCENTS", "TWIN_OF", "faithfulness_scores", "Binned",
    "MaskedScorer", "masked_scorer", "comprehensiveness", "sufficiency", "aopc", "aopc_decompx",
    "deletion_curve", "insertion_curve", "deletion_auc", "insertion_auc", "bin_sizes", "rank", "spearman",
    "rank_agreement", "randomize_weights", "randomization_check", "faithfulness_table",
]
