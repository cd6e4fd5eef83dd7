"""Scores over many texts: the faithfulness table of several methods, and the head report.

    s = load_subject("path/to/all-MiniLM-L6-v2")            # or a trainer run dir (seq2seq)
    rows = explain_eval(s, texts, ("rollout", "chefer", "ig", "random"), out_dir="out/")
    print_table(rows)                                         # ranked, best first
    rows = explain_eval(classifier, texts, protocol="decompx")   # DecompX's AOPC on the probability
    report = heads_report(s, texts, out_dir="out/")           # head importance, pruning curves

Both run through :mod:`attnlab.explain.pipeline` (the same tokenisation, targets and methods as
``attnlab explain``), so they work on Hugging Face-format checkpoints and trainer run dirs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ..io import write_json
from ..registry import Registry
from .attribution import random_relevance
from .faithfulness import (
    ScoreFn, aopc_decompx, faithfulness_scores, faithfulness_table, masked_scorer, randomize_weights, rank_agreement,
)
from .pipeline import Example, Subject, _explain, prepare

DEFAULT_EVAL_METHODS = ("rollout", "chefer", "ig", "occlusion", "random")
SANITY = "randomization"  # the model-randomisation check's column: Spearman ρ, lower passes
SHORT = {"comprehensiveness": "compr ↑", "sufficiency": "suff ↓", "aopc": "AOPC ↑",
         "deletion_auc": "del AUC ↓", "insertion_auc": "ins AUC ↑", "aopc_decompx": "AOPC DecompX ↑",
         SANITY: "rand. ρ ↓"}
RANDOM_DRAWS = 5  # draws of the random baseline averaged per example


@dataclass(frozen=True)
class Protocol:
    """A set of faithfulness metrics and the target they are defined on.

    Attributes:
        name: its registry name.
        scores: ``(score_fn, relevance (L,)) -> {metric: value}`` for one example.
        target: the target it scores (its base name, see :mod:`~attnlab.explain.targets`); None: any.
        kinds: the kinds of model it applies to.
        description: one line for listings.
    """

    name: str
    scores: Callable[[ScoreFn, Tensor], dict[str, float]]
    target: str | None = None
    kinds: tuple[str, ...] = ("encoder", "classifier", "seq2seq")
    description: str = ""


PROTOCOLS: Registry[Protocol] = Registry("faithfulness protocol")
for _p in (
    Protocol("default", faithfulness_scores, description="ERASER comprehensiveness and sufficiency, AOPC, "
             "deletion and insertion AUC on the chosen target"),
    Protocol("decompx", lambda score, r: {"aopc_decompx": aopc_decompx(score, r)}, "prob", ("classifier",),
             "DecompX's AOPC (Modarressi et al. 2023): 0, 10, ..., 90% of the tokens -> [MASK], the "
             "predicted class's probability drop"),
):
    PROTOCOLS.register(_p.name, _p)


def _protocol(name: str, subject: Subject, target: str | None) -> tuple[Protocol, str | None]:
    """The protocol ``name`` and the target to explain (its own when it has one)."""
    p = PROTOCOLS.get(name)
    if subject.kind not in p.kinds:
        raise ValueError(f"protocol {name!r} applies to {' and '.join(p.kinds)} models, not a {subject.kind}")
    if p.target is None:
        return p, target
    if target is not None and target.partition(":")[0] != p.target:
        raise ValueError(f"protocol {name!r} scores target {p.target}[:K], not {target!r}")
    return p, target or p.target


def random_draw(length: int, seed: int, example: int, draw: int, model: int = 0) -> Tensor:
    """(length,) draw ``draw`` of the random baseline for the ``example``-th text; ``model`` 1 is
    its independent twin explaining the re-initialised model of the randomisation check."""
    return random_relevance(length, seed, key=(example, draw, model))


def _examples(subject: Subject, texts: Sequence[str], target: str | None, pair: str | None) -> list[Example]:
    """One prepared example per non-blank line; ``"text<TAB>pair"`` gives a line its own pair."""
    out = []
    for line in texts:
        if not line.strip():
            continue
        text, tab, own_pair = line.partition("\t")
        out.append(prepare(subject, text, target, own_pair if tab else pair))
    if not out:
        raise ValueError("no texts to evaluate")
    return out


def explain_eval(
    subject: Subject,
    texts: Sequence[str],
    methods: Sequence[str] = DEFAULT_EVAL_METHODS,
    target: str | None = None,
    pair: str | None = None,
    *,
    out_dir: str | Path | None = None,
    ig_steps: int = 32,
    sanity: int = 8,
    seed: int = 0,
    protocol: str = "default",
    random_draws: int = RANDOM_DRAWS,
) -> list[dict[str, Any]]:
    """Faithfulness of each method over ``texts`` (the mean of each metric over examples), ranked
    by :func:`~attnlab.explain.faithfulness.faithfulness_table` (the mean rank leaves out
    deletion AUC, AOPC's affine twin), plus the model-randomisation check (Adebayo et al. 2018)
    in column ``"randomization"``.

    Tokens are removed by replacing them ([MASK]; the unknown token for seq2seq); special tokens
    are never removed. The random baseline draws its own order per text and per draw
    (:func:`random_draw`), its metrics averaged over ``random_draws`` draws. The randomisation
    check explains the same output (same class, same output tokens, same pair embedding) of a
    copy of the model with every weight re-initialised and reports the mean Spearman ρ with the
    trained model's explanation over the non-special tokens: near 1 means the method ignores the
    weights; the random baseline, drawn independently for the two models, shows the spread of ρ
    for unrelated explanations. ρ is NaN (``"randomization_undefined"``: the number of texts)
    when the explanation is constant on some text: a failure. It is a sanity check, so it does
    not enter the mean rank.

    Args:
        subject: from :func:`~attnlab.explain.pipeline.load_subject`.
        texts: one input per item; ``"sentence<TAB>pair"`` carries its own pair (the cosine
            target's other sentence, or a seq2seq reference output) instead of ``pair``.
        methods: method names (see :meth:`~attnlab.explain.pipeline.Subject.known_methods`).
        target: the explained scalar (see :mod:`attnlab.explain.targets`); None: the default
            (the protocol's own, e.g. ``prob`` for "decompx").
        pair: the pair text for every line without its own.
        out_dir: write ``faithfulness.json`` here (NaN written as null).
        ig_steps: Integrated Gradients' quadrature points.
        sanity: run the randomisation check on the first this many examples (0: skip it).
        seed: seed of the random baseline and of the re-initialised weights.
        protocol: the metrics, a name of :data:`PROTOCOLS`: "default" (the five of
            :data:`~attnlab.explain.faithfulness.METRICS`) or "decompx" (classifiers: DecompX's
            AOPC on the predicted class's probability, column ``"aopc_decompx"``).
        random_draws: draws of the random baseline averaged per text (at least 1).

    Returns:
        The table's rows, best first.
    """
    if random_draws < 1:
        raise ValueError(f"random_draws must be at least 1, got {random_draws}")
    proto, target = _protocol(protocol, subject, target)
    methods = subject.check_methods(methods)
    examples = _examples(subject, texts, target, pair)
    explained = [m for m in methods if m != "random"]
    sums: dict[str, dict[str, float]] = {m: {} for m in methods}

    def add(m: str, scores: dict[str, float], weight: float) -> None:
        for k, v in scores.items():
            sums[m][k] = sums[m].get(k, 0.0) + v * weight

    trained = []
    for i, ex in enumerate(examples):
        expl = _explain(subject, ex, explained, ig_steps=ig_steps, seed=seed)
        trained.append(expl.relevances)
        score = masked_scorer(subject.model, ex.inputs, ex.target.fn, replace_id=ex.replace_id, protected=ex.special)
        for m in explained:
            add(m, proto.scores(score, torch.tensor(expl.relevances[m], dtype=torch.float64)), 1 / len(examples))
        if "random" in methods:
            for d in range(random_draws):
                add("random", proto.scores(score, random_draw(len(ex.tokens), seed, i, d)),
                    1 / (len(examples) * random_draws))
    rows = faithfulness_table(sums)
    checked = examples[:max(0, sanity)]
    if checked:
        rho = _agreements(subject, checked, methods, ig_steps=ig_steps, seed=seed, trained=trained,
                          random_draws=random_draws)
        for r in rows:
            r[SANITY], r[f"{SANITY}_undefined"] = _mean(rho[r["method"]]), sum(map(math.isnan, rho[r["method"]]))
    if out_dir is not None:
        report = {"target": expl.target_description, "protocol": proto.name, "examples": len(examples),
                  "random_draws": random_draws, "randomization_examples": len(checked), "methods": list(methods),
                  "table": [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
                            for r in rows]}
        write_json(Path(out_dir) / "faithfulness.json", report)
    return rows


def _mean(values: Sequence[float]) -> float:
    """The mean; NaN when empty or when any value is NaN (an undefined ρ is never averaged away)."""
    return sum(values) / len(values) if values else float("nan")


def _agreements(subject: Subject, examples: Sequence[Example], methods: Sequence[str], *, ig_steps: int,
                seed: int, trained: Sequence[dict[str, list[float]]] | None,
                random_draws: int) -> dict[str, list[float]]:
    """Per method, the Spearman ρ of each example (NaN where undefined) of :func:`randomization`."""
    random_subject = dataclasses.replace(subject, model=randomize_weights(subject.model, seed=seed).eval(), notes=[])
    explained = [m for m in methods if m != "random"]
    out: dict[str, list[float]] = {m: [] for m in methods}
    for i, ex in enumerate(examples):
        keep = ~ex.special  # special tokens are never scored
        if int(keep.sum()) < 2:  # one token has no order to compare, whatever the method
            continue
        a = trained[i] if trained else _explain(subject, ex, explained, ig_steps=ig_steps, seed=seed).relevances
        b = _explain(random_subject, ex, explained, ig_steps=ig_steps, seed=seed).relevances
        for m in explained:
            out[m].append(rank_agreement(torch.tensor(a[m]), torch.tensor(b[m]), keep))
        if "random" in methods:  # independent draws for the two models
            L = len(ex.tokens)
            out["random"].append(_mean([rank_agreement(random_draw(L, seed, i, d), random_draw(L, seed, i, d, 1), keep)
                                        for d in range(random_draws)]))
    return out


def randomization(subject: Subject, examples: Sequence[Example], methods: Sequence[str], *,
                  ig_steps: int = 32, seed: int = 0, trained: Sequence[dict[str, list[float]]] | None = None,
                  random_draws: int = RANDOM_DRAWS) -> dict[str, float]:
    """Adebayo et al.'s model-parameter randomisation test over ``examples``: per method, the mean
    Spearman ρ (:func:`~attnlab.explain.faithfulness.rank_agreement`, over the non-special
    tokens) between the explanation of the trained model and of a copy with all weights
    re-initialised by ``randomize_weights(model, seed=seed)`` (the same target function, so the
    same output is explained): per example what
    :func:`~attnlab.explain.faithfulness.randomization_check` gives. NaN when ρ is undefined on
    any example (a constant explanation: a failure). Examples with fewer than two scored tokens
    are skipped. The random baseline gets independent draws for the two models
    (:func:`random_draw`, model 0 and 1), ρ averaged over ``random_draws``.

    Args:
        subject: the trained model's subject (left unchanged).
        examples: prepared examples (:func:`~attnlab.explain.pipeline.prepare`).
        methods: method names.
        ig_steps: Integrated Gradients' quadrature points.
        seed: seed of the re-initialised weights and of the random baseline.
        trained: the trained model's relevances of ``examples`` (method -> scores), when the
            caller has them already; None computes them.
        random_draws: draws of the random baseline per example.
    """
    rho = _agreements(subject, examples, methods, ig_steps=ig_steps, seed=seed, trained=trained,
                      random_draws=random_draws)
    return {m: _mean(v) for m, v in rho.items()}


def print_table(rows: list[dict[str, Any]], title: str = "faithfulness (mean over examples; rank 1 = best)") -> None:
    """The faithfulness table in the terminal (rich): the metric columns the rows have."""
    from rich.console import Console
    from rich.table import Table

    sanity = all(SANITY in r for r in rows)
    metrics = [m for m in SHORT if m != SANITY and m in rows[0]]
    twin = "deletion_auc" in metrics and "aopc" in metrics
    table = Table(title=title, caption="arrows: which way is more faithful; rows best first by mean rank"
                  + (" (of every metric but del AUC, which is AOPC's affine twin)" if twin else "")
                  + ("; rand. ρ: Spearman with the explanation of a randomly re-initialised model "
                     "(near 1 = ignores the weights; nan ✗ = constant on some text, a failure; not ranked)"
                     if sanity else ""))
    table.add_column("method", no_wrap=True, min_width=max(len(r["method"]) for r in rows))
    for m in metrics:
        table.add_column(SHORT[m], justify="right", no_wrap=True)
    table.add_column("mean rank", justify="right", no_wrap=True)
    if sanity:
        table.add_column(SHORT[SANITY], justify="right", no_wrap=True)
    for r in rows:
        rho = [("nan ✗" if math.isnan(r[SANITY]) else f"{r[SANITY]:.2f}")] if sanity else []
        table.add_row(r["method"], *(f"{r[m]:.3f}" for m in metrics), f"{r['mean_rank']:.2f}", *rho)
    console = Console()
    if not console.is_terminal:  # a pipe or a file: do not squeeze the columns into 80 characters
        console = Console(width=120)
    console.print(table)


# ----------------------------------------------------------------------------- heads


def _stack(subject: Subject) -> tuple[int, int]:
    """(layers, heads) of the self-attention the head mask scales (the encoder's, for seq2seq)."""
    layers = subject.model.encoder if subject.kind == "seq2seq" else subject.model.layers
    return len(layers), layers[0].self_attn.num_heads


def heads_report(
    subject: Subject,
    texts: Sequence[str],
    target: str | None = None,
    pair: str | None = None,
    *,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Head importance (Michel et al. 2019) with the target as the loss (no labels needed), and
    the target's mean over ``texts`` as ever more heads are masked, least important first vs a
    random order. Writes ``heads.json`` and ``pruning.png`` under ``out_dir`` when given.

    Args:
        subject: from :func:`~attnlab.explain.pipeline.load_subject`.
        texts: the inputs (``"text<TAB>pair"`` as in :func:`explain_eval`).
        target: the scalar whose mean over ``texts`` is the metric.
        pair: the pair text for every line without its own.
        out_dir: where to write the files.
    """
    from .heads import head_importance, pruning_curve

    if subject.rnn:
        raise ValueError(f"{subject.name}: an RNN seq2seq model has no attention heads to score")
    examples = _examples(subject, texts, target, pair)
    L, H = _stack(subject)

    def run(model, ex: Example, mask: Tensor) -> Tensor:
        return ex.target.fn(model(**ex.inputs, head_mask=mask))

    imp = head_importance(subject.model, examples, run, L, H, per_example=False)

    @torch.no_grad()
    def metric(model, mask: Tensor) -> float:
        return sum(float(run(model, ex, mask)) for ex in examples) / len(examples)

    curves = {order: pruning_curve(subject.model, metric, imp, order=order) for order in ("importance", "random")}
    descs = list(dict.fromkeys(ex.target.description for ex in examples))
    what = descs[0] if len(descs) == 1 else f"{descs[0]} (the first input's; it differs per input)"
    report = {"target": what, "examples": len(examples), "layers": L, "heads": H,
              "importance": imp.tolist(), "curves": {k: [list(p) for p in v] for k, v in curves.items()}}
    if out_dir is not None:
        from . import figures

        out = Path(out_dir)
        write_json(out / "heads.json", report)
        figures.plot_pruning_curve(curves, out / "pruning.png", "mean target")
    return report


__all__ = ["explain_eval", "randomization", "random_draw", "print_table", "heads_report", "Protocol", "PROTOCOLS",
           "DEFAULT_EVAL_METHODS", "SANITY", "RANDOM_DRAWS"]
