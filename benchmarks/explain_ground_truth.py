"""Explanations against a planted ground truth (see attnlab/explain/synthetic.py).

    python benchmarks/explain_ground_truth.py --quick      # about a minute on one CPU thread
    python benchmarks/explain_ground_truth.py              # more examples, longer dates training
    python benchmarks/explain_ground_truth.py --no-dates   # the marker tables only (~3 min)

1. Marker classification, twice: one planted marker, then 1-3 redundant copies of it (where
   leave-one-out occlusion saturates). Precision@k of each method's relevance vs the planted
   positions (k = the example's number of markers), the faithfulness metrics ranked by
   ``faithfulness_table`` (the mean rank over compr, suff, AOPC and ins AUC: del AUC is AOPC's
   affine twin) and the model-randomisation check; target: the predicted class logit; tokens
   removed by [MASK].
2. Dates (character encoder-decoder): how often the top source character of each ISO output digit
   lies in the span that spells its field (year / month / day), per method.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

import attnlab
from attnlab.explain.faithfulness import METRICS
from attnlab.explain.synthetic import (
    CLASSIFIER_METHODS, DATE_METHODS, DATE_PARTS, MarkerTask, date_examples, dates_alignment_report,
    ground_truth_report, train_dates_model, train_marker_classifier,
)



def table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths), *map(line, cells[1:])])


def marker_section(task: MarkerTask, n_marker: int, ig_steps: int, seed: int) -> dict:
    t0 = time.perf_counter()
    model, acc = train_marker_classifier(task, steps=400, seed=seed)
    train_s = time.perf_counter() - t0
    print(f"\n## Marker task: L={task.length} ([CLS] + {task.length - 1}), {task.num_classes} classes, "
          f"1-{task.max_markers} copies of the class's marker planted, vocab {task.vocab_size}; "
          f"encoder 2 layers x 4 heads, d_model 32, [CLS] pooling; 400 steps x 64 "
          f"({train_s:.1f} s), test accuracy {acc:.3f}")
    print(f"{n_marker} test examples; target = predicted class logit; IG {ig_steps} steps, baseline [MASK] "
          f"([CLS] kept); occlusion and the metrics replace tokens by [MASK]; raw / attn_x_grad: last layer, "
          f"[CLS] row; k = the example's number of markers")
    t0 = time.perf_counter()
    rep = ground_truth_report(model, task.sample(n_marker, seed=seed + 1), CLASSIFIER_METHODS,
                              task=task, ig_steps=ig_steps)
    print(f"({time.perf_counter() - t0:.1f} s)\n")
    print(table([[m, rep.precision[m], rep.seconds[m] / rep.n * 1000] for m in CLASSIFIER_METHODS],
                ["method", "precision@k", "ms/example"]))
    print("\nFaithfulness (mean over examples; ranks per metric, best first by the mean rank of compr, suff, "
          "AOPC and ins AUC; rand ρ: Spearman with the explanation of a re-initialised model, Adebayo et al. "
          "2018, not ranked):\n")
    print(table([[r["method"], *[r[m] for m in METRICS], r["mean_rank"], r["randomization"]] for r in rep.table],
                ["method", "compr ↑", "suff ↓", "aopc ↑", "del_auc ↓", "ins_auc ↑", "mean rank", "rand ρ ↓"]))
    return {"accuracy": acc, "precision": rep.precision, "faithfulness": rep.table}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer examples and a shorter dates training")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--no-dates", action="store_true", help="skip the dates section (the marker tables only)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    n_marker, ig_steps = (32, 16) if args.quick else (128, 32)
    dates_steps, dates_seconds, n_dates = (500, 60.0, 16) if args.quick else (1500, 180.0, 60)
    print(f"attnlab {attnlab.__version__}, torch {torch.__version__}, python {platform.python_version()}, "
          f"{torch.get_num_threads()} thread(s), CPU")

    marker = {}
    for task in (MarkerTask(max_markers=1), MarkerTask(max_markers=3)):
        marker[f"markers_1_{task.max_markers}"] = marker_section(task, n_marker, ig_steps, args.seed)

    results = {"marker": marker}
    if args.no_dates:
        return _write(results, args.json)
    # ---------------------------------------------------------------- dates
    model, vocab, info = train_dates_model(seconds=dates_seconds, max_steps=dates_steps, seed=args.seed)
    print(f"\n## Dates: formats {', '.join(DATE_PARTS)}; char encoder-decoder 2+2 layers x 4 heads, "
          f"d_model 64; {info['steps']} steps x 64 ({info['seconds']:.1f} s), final loss {info['loss']:.4f}, "
          f"exact match {info['exact_match']:.3f} on 300 unseen test dates")
    print(f"{n_dates} test dates x 8 output digits, teacher-forced on the reference; top-1 = the most "
          f"relevant source character lies in the field's span; p@span = precision at the span's width; "
          f"IG/occlusion on the digit's log-prob, source chars -> pad\n")
    t0 = time.perf_counter()
    dates = dates_alignment_report(model, vocab, date_examples(n_dates, seed=args.seed + 5, test=True), DATE_METHODS)
    print(table([[m, d["year"], d["month"], d["day"], d["all"], d["p@span"]] for m, d in dates.items()],
                ["method", "top-1 year", "top-1 month", "top-1 day", "top-1 all", "p@span"]))
    print(f"({time.perf_counter() - t0:.1f} s)")
    results["dates"] = {"train": info, "alignment": dates}
    return _write(results, args.json)


def _write(results: dict, path: str | None) -> dict:
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return results


if __name__ == "__main__":
    main()
