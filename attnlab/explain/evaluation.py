"""Scores over many texts: the faithfulness table of several methods, and the head report.

    s = load_subject("path/to/all-MiniLM-L6-v2")            # or a trainer run dir (seq2seq)
    rows = explain_eval(s, texts, ("rollout", "chefer", "ig", "random"), out_dir="out/")
    print_table(rows)                                         # ranked, best first
    report = heads_report(s, texts, out_dir="out/")           # head importance, pruning curves

Both run through :mod:`attnlab.explain.pipeline` (the same tokenisation, targets and methods as
``attnlab explain``), so they work on Hugging Face-format checkpoints and trainer run dirs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from ..io import write_json
from .faithfulness import (
    METRICS, faithfulness_scores, faithfulness_table, masked_scorer, randomize_weights, rank_agreement,
)
from .pipeline import Example, Subject, _explain, prepare

DEFAULT_EVAL_METHODS = ("rollout", "chefer", "ig", "occlusion", "random")
SANITY = "randomization"  # the model-randomisation check's column: Spearman ρ, lower passes
SHORT = {"comprehensiveness": "compr ↑", "sufficiency": "suff ↓", "aopc": "AOPC ↑",
         "deletion_auc": "del AUC ↓", "insertion_auc": "ins AUC ↑", SANITY: "rand. ρ ↓"}


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
) -> list[dict[str, Any]]:
    """Faithfulness of each method over ``texts`` (the mean of each metric over examples), ranked
    by :func:`~attnlab.explain.faithfulness.faithfulness_table`, plus the model-randomisation
    check (Adebayo et al. 2018) in column ``"randomization"``.

    Tokens are removed by replacing them ([MASK]; the unknown token for seq2seq); special tokens
    are never removed. The randomisation check explains the same output (same class, same output
    tokens, same pair embedding) of a copy of the model with every weight re-initialised and
    reports the mean Spearman correlation with the trained model's explanation: near 1 means
    the method ignores the weights (the random baseline does, by construction). It is a sanity
    check, so it does not enter the mean rank.

    Args:
        subject: from :func:`~attnlab.explain.pipeline.load_subject`.
        texts: one input per item; ``"sentence<TAB>pair"`` carries its own pair (the cosine
            target's other sentence, or a seq2seq reference output) instead of ``pair``.
        methods: method names (see :meth:`~attnlab.explain.pipeline.Subject.known_methods`).
        target: the explained scalar (see :mod:`attnlab.explain.targets`); None: the default.
        pair: the pair text for every line without its own.
        out_dir: write ``faithfulness.json`` here.
        ig_steps: Integrated Gradients' quadrature points.
        sanity: run the randomisation check on the first this many examples (0: skip it).
        seed: seed of the random baseline and of the re-initialised weights.

    Returns:
        The table's rows, best first.
    """
    methods = subject.check_methods(methods)
    examples = _examples(subject, texts, target, pair)
    sums = {m: dict.fromkeys(METRICS, 0.0) for m in methods}
    explained = []
    for ex in examples:
        expl = _explain(subject, ex, methods, ig_steps=ig_steps, seed=seed)
        explained.append(expl.relevances)
        score = masked_scorer(subject.model, ex.inputs, ex.target.fn, replace_id=ex.replace_id, protected=ex.special)
        for m in methods:
            for k, v in faithfulness_scores(score, torch.tensor(expl.relevances[m], dtype=torch.float64)).items():
                sums[m][k] += v / len(examples)
    rows = faithfulness_table(sums)
    checked = examples[:max(0, sanity)]
    if checked:
        rho = randomization(subject, checked, methods, ig_steps=ig_steps, seed=seed, trained=explained)
        for r in rows:
            r[SANITY] = rho[r["method"]]
    if out_dir is not None:
        report = {"target": expl.target_description, "examples": len(examples), "randomization_examples": len(checked),
                  "methods": list(methods), "table": rows}
        write_json(Path(out_dir) / "faithfulness.json", report)
    return rows


def randomization(subject: Subject, examples: Sequence[Example], methods: Sequence[str], *,
                  ig_steps: int = 32, seed: int = 0,
                  trained: Sequence[dict[str, list[float]]] | None = None) -> dict[str, float]:
    """Adebayo et al.'s model-parameter randomisation test over ``examples``: per method, the mean
    Spearman correlation between the explanation of the trained model and of a copy with all
    weights re-initialised (the same target function, so the same output is explained).

    Args:
        subject: the trained model's subject (left unchanged).
        examples: prepared examples (:func:`~attnlab.explain.pipeline.prepare`).
        methods: method names.
        ig_steps: Integrated Gradients' quadrature points.
        seed: seed of the re-initialised weights and of the random baseline.
        trained: the trained model's relevances of ``examples`` (method -> scores), when the
            caller has them already; None computes them.
    """
    random_subject = dataclasses.replace(subject, model=randomize_weights(subject.model, seed=seed).eval(), notes=[])
    sums = dict.fromkeys(methods, 0.0)
    for i, ex in enumerate(examples):
        a = trained[i] if trained else _explain(subject, ex, methods, ig_steps=ig_steps, seed=seed).relevances
        b = _explain(random_subject, ex, methods, ig_steps=ig_steps, seed=seed).relevances
        for m in methods:  # special tokens are never scored
            ra, rb = (torch.tensor(r[m], dtype=torch.float64) for r in (a, b))
            sums[m] += rank_agreement(ra, rb, ~ex.special) / len(examples)
    return sums


def print_table(rows: list[dict[str, Any]], title: str = "faithfulness (mean over examples; rank 1 = best)") -> None:
    """The faithfulness table in the terminal (rich)."""
    from rich.console import Console
    from rich.table import Table

    sanity = all(SANITY in r for r in rows)
    table = Table(title=title, caption="arrows: which way is more faithful; rows best first by mean rank"
                  + ("; rand. ρ: Spearman with the explanation of a randomly re-initialised model "
                     "(near 1 = ignores the weights; not ranked)" if sanity else ""))
    table.add_column("method", no_wrap=True, min_width=max(len(r["method"]) for r in rows))
    for m in METRICS:
        table.add_column(SHORT[m], justify="right", no_wrap=True)
    table.add_column("mean rank", justify="right", no_wrap=True)
    if sanity:
        table.add_column(SHORT[SANITY], justify="right", no_wrap=True)
    for r in rows:
        table.add_row(r["method"], *(f"{r[m]:.3f}" for m in METRICS), f"{r['mean_rank']:.2f}",
                      *([f"{r[SANITY]:.2f}"] if sanity else []))
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


__all__ = ["explain_eval", "randomization", "print_table", "heads_report", "DEFAULT_EVAL_METHODS", "SANITY"]
