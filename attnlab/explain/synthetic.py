"""Explanations scored against a known ground truth: tasks where we planted what matters.

Two checks:

* **Marker classification.** Random filler tokens with 1-3 copies of one of C "marker" tokens
  planted at random positions; the label is the marker's class. Only the markers decide the
  label, so a faithful relevance puts them on top: :func:`ground_truth_report` measures
  precision@k against the planted positions and the faithfulness metrics of
  :mod:`~attnlab.explain.faithfulness` for every method, target the predicted class logit::

      task = MarkerTask()
      model, acc = train_marker_classifier(task)
      report = ground_truth_report(model, task.sample(64, seed=1), task=task)
      report.precision, report.table

* **Dates alignment.** A character-level encoder-decoder reads "3 March 2021" / "2021.03.03" /
  "03/03/2021" / "March 3, 2021" into ISO ``2021-03-03``. We render the source ourselves, so the
  span of each field (year, month, day) is known; :func:`dates_alignment_report` says how often
  the most relevant source characters of each output digit lie in its field's span.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.dates import MONTHS, MONTHS_ABBR
from ..models import SequenceClassificationHead, create
from .attribution import integrated_gradients, occlusion, random_relevance
from .capture import capture
from .faithfulness import faithfulness_scores, faithfulness_table, masked_scorer, randomize_weights, rank_agreement
from .methods import METHODS, grad_rollout_seq2seq, token_relevance

CLASSIFIER_METHODS = ("raw", "rollout", "flow", "chefer", "attn_x_grad", "ig", "occlusion", "random")
FLOW_MAX_LEN = 32  # attention flow runs one max-flow per token: only for short sequences
FIELDS = ("year", "month", "day")
ISO_FIELDS = {"year": range(0, 4), "month": range(5, 7), "day": range(8, 10)}  # output chars of "YYYY-MM-DD"


# ----------------------------------------------------------------------------- marker task


@dataclass(frozen=True)
class MarkerTask:
    """Ids: 0 pad, 1 [CLS], 2 [MASK], 3..3+C-1 markers, the rest filler.

    Args:
        length: tokens per example, [CLS] included.
        num_classes: C, the marker classes (= labels).
        max_markers: 1..max_markers copies of the example's marker are planted.
        vocab_size: all ids.
        mask_rate: in training, the fraction of filler replaced by [MASK], so that the masked
            inputs of the faithfulness metrics are not out of distribution.
    """

    length: int = 16
    num_classes: int = 4
    max_markers: int = 3
    vocab_size: int = 32
    mask_rate: float = 0.15

    PAD, CLS, MASK = 0, 1, 2

    def sample(self, n: int, seed: int | None = None, gen: torch.Generator | None = None,
               mask_rate: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
        """n examples: (ids (n, L), labels (n,), planted (n, L) bool marker positions)."""
        gen = gen or torch.Generator().manual_seed(0 if seed is None else seed)
        L, C = self.length, self.num_classes
        ids = torch.randint(3 + C, self.vocab_size, (n, L), generator=gen)  # (n, L) filler
        if mask_rate > 0:
            ids[torch.rand(n, L, generator=gen) < mask_rate] = self.MASK
        ids[:, 0] = self.CLS
        labels = torch.randint(0, C, (n,), generator=gen)  # (n,)
        count = torch.randint(1, self.max_markers + 1, (n,), generator=gen)  # (n,)
        slots = torch.argsort(torch.rand(n, L - 1, generator=gen), dim=1) + 1  # (n, L-1) distinct positions
        planted = torch.zeros(n, L, dtype=torch.bool)
        for j in range(self.max_markers):
            on = count > j
            planted[on, slots[on, j]] = True
        ids[planted] = (3 + labels)[:, None].expand(n, L)[planted]
        return ids, labels, planted


@dataclass
class MarkerOutput:
    """logits (B, C); attentions: per layer (B, H, L, L), if requested."""

    logits: Tensor
    attentions: tuple[Tensor, ...] | None = None


class MarkerClassifier(nn.Module):
    """An encoder and a [CLS]-pooled classification head as one module (what capture needs)."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                output_attentions: bool = False) -> MarkerOutput:
        out = self.encoder(input_ids, attention_mask=attention_mask, output_attentions=output_attentions)
        return MarkerOutput(self.head(out.last_hidden_state, attention_mask), out.attentions)  # (B, C)


def train_marker_classifier(task: MarkerTask = MarkerTask(), steps: int = 400, batch_size: int = 64,
                            d_model: int = 32, lr: float = 3e-3, seed: int = 0) -> tuple[MarkerClassifier, float]:
    """Train a 2-layer, 4-head encoder on ``task`` (a few seconds on one thread).

    Returns:
        (the model in eval mode, accuracy on 1000 fresh unmasked examples).
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    enc = create("encoder-tiny", vocab_size=task.vocab_size, max_len=task.length, d_model=d_model,
                 ffn_dim=2 * d_model, num_layers=2, num_heads=4, pooler=False)
    model = MarkerClassifier(enc, SequenceClassificationHead(d_model, task.num_classes, pooling="cls"))
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        ids, y, _ = task.sample(batch_size, gen=gen, mask_rate=task.mask_rate)
        loss = F.cross_entropy(model(ids).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    ids, y, _ = task.sample(1000, seed=seed + 10_000)
    with torch.no_grad():
        acc = (model(ids).logits.argmax(-1) == y).float().mean().item()
    return model, acc


def classifier_relevance(model: MarkerClassifier, ids: Tensor, methods: Sequence[str] = CLASSIFIER_METHODS,
                         mask_id: int = MarkerTask.MASK, ig_steps: int = 32, seed: int = 0,
                         cls: int | None = None) -> dict[str, Tensor]:
    """Per-token relevance (L,) of one example (ids (1, L)) for a class logit (``cls``, default
    the predicted class), per method."""
    with torch.no_grad():
        pred = int(model(ids).logits[0].argmax()) if cls is None else cls
    target = lambda out: out.logits[0, pred]
    inputs = {"input_ids": ids}
    L = ids.shape[1]
    cap = capture(model, inputs, target=target)
    maps, grads = cap.maps("self"), cap.grads("self")
    out: dict[str, Tensor] = {}
    for name in methods:
        if name == "flow" and L > FLOW_MAX_LEN:
            continue
        if name in METHODS:
            r = token_relevance(name, maps, grads, 0)  # the [CLS] row
        elif name == "ig":
            keep = torch.zeros(L, dtype=torch.bool)
            keep[0] = True
            r, _ = integrated_gradients(model, inputs, target, model.encoder.embeddings.token,
                                        baseline_ids=mask_id, steps=ig_steps, keep=keep)
        elif name == "occlusion":
            r = occlusion(model, inputs, target, replace_id=mask_id)
        elif name == "random":
            r = random_relevance(L, seed=seed)
        else:
            raise ValueError(f"unknown method {name!r}; known: {', '.join(CLASSIFIER_METHODS)}")
        out[name] = r.detach().double().cpu()
    return out


def precision_at_k(relevance: Tensor, truth: Tensor, k: int | None = None, protected: Tensor | None = None) -> float:
    """|top-k ∩ truth| / min(k, |truth|) over unprotected positions; k=None: k = |truth|."""
    rel = relevance.double().clone()
    if protected is not None:
        rel[protected] = float("-inf")
    n = int(truth.sum())
    k = n if k is None else k
    top = torch.argsort(-rel, stable=True)[:k]
    return float(truth[top].sum()) / max(1, min(k, n))


@dataclass
class GroundTruthReport:
    """precision: method -> mean precision@k; faithfulness: method -> metric -> mean;
    table: :func:`faithfulness_table` rows, best first, each with the model-randomisation
    check's mean Spearman ρ under "randomization" (not ranked); n: examples."""

    precision: dict[str, float]
    faithfulness: dict[str, dict[str, float]]
    table: list[dict[str, Any]]
    n: int
    seconds: dict[str, float] = field(default_factory=dict)


def ground_truth_report(model: MarkerClassifier, examples: tuple[Tensor, Tensor, Tensor],
                        methods: Sequence[str] = CLASSIFIER_METHODS, k: int | None = None,
                        task: MarkerTask = MarkerTask(), ig_steps: int = 32, sanity: int = 32) -> GroundTruthReport:
    """Score each method's relevance on ``examples`` against the planted markers.

    Args:
        model: a trained :class:`MarkerClassifier` (eval mode).
        examples: (ids (N, L), labels (N,), planted (N, L) bool), as :meth:`MarkerTask.sample`.
        methods: names among :data:`CLASSIFIER_METHODS`.
        k: precision@k; None uses each example's number of markers (R-precision).
        task: gives the [MASK] id that removes tokens in IG, occlusion and the faithfulness metrics.
        ig_steps: quadrature points of Integrated Gradients.
        sanity: the model-randomisation check (Adebayo et al. 2018) on the first this many
            examples: Spearman ρ between the explanation of the trained model and of a copy with
            every weight re-initialised, the same class logit explained ([CLS] excluded).
    """
    ids, _, planted = examples
    prec: dict[str, list[float]] = {}
    faith: dict[str, dict[str, list[float]]] = {}
    rho: dict[str, list[float]] = {}
    secs: dict[str, float] = {}
    protected = torch.zeros(ids.shape[1], dtype=torch.bool)
    protected[0] = True  # [CLS]
    random_model = randomize_weights(model, seed=0).eval() if sanity > 0 else None
    for i in range(ids.shape[0]):
        x = ids[i:i + 1]
        with torch.no_grad():
            pred = int(model(x).logits[0].argmax())
        score = masked_scorer(model, {"input_ids": x}, lambda out, p=pred: out.logits[0, p],
                              replace_id=task.MASK, protected=protected)
        for name in methods:  # one method at a time, so each can be timed
            t0 = time.perf_counter()
            rels = classifier_relevance(model, x, [name], mask_id=task.MASK, ig_steps=ig_steps, seed=i)
            secs[name] = secs.get(name, 0.0) + time.perf_counter() - t0
            if name not in rels:
                continue
            r = rels[name]
            prec.setdefault(name, []).append(precision_at_k(r, planted[i], k, protected))
            for m, v in faithfulness_scores(score, r).items():
                faith.setdefault(name, {}).setdefault(m, []).append(v)
            if i < sanity:
                rr = classifier_relevance(random_model, x, [name], mask_id=task.MASK, ig_steps=ig_steps, seed=i,
                                          cls=pred)[name]
                rho.setdefault(name, []).append(rank_agreement(r, rr, ~protected))
    mean = lambda v: sum(v) / len(v)
    faithfulness = {n: {m: mean(v) for m, v in d.items()} for n, d in faith.items()}
    table = faithfulness_table(faithfulness)
    for row in table:
        if row["method"] in rho:
            row["randomization"] = mean(rho[row["method"]])
    return GroundTruthReport({n: mean(v) for n, v in prec.items()}, faithfulness, table, ids.shape[0], secs)


# ----------------------------------------------------------------------------- dates alignment


def _month_name(d: dt.date, rng: random.Random) -> str:
    return rng.choice((MONTHS, MONTHS_ABBR))[d.month - 1]


# Each format: date -> parts, a part is (field or None, text); the spans follow from the parts.
DATE_PARTS = {
    "d_month_yyyy": lambda d, r: [("day", str(d.day)), (None, " "), ("month", _month_name(d, r)),
                                  (None, " "), ("year", f"{d.year:04d}")],
    "dotted_ymd": lambda d, r: [("year", f"{d.year:04d}"), (None, "."), ("month", f"{d.month:02d}"),
                                (None, "."), ("day", f"{d.day:02d}")],
    "slash_dmy": lambda d, r: [("day", f"{d.day:02d}"), (None, "/"), ("month", f"{d.month:02d}"),
                               (None, "/"), ("year", f"{d.year:04d}")],
    "month_d_yyyy": lambda d, r: [("month", _month_name(d, r)), (None, " "), ("day", str(d.day)),
                                  (None, ", "), ("year", f"{d.year:04d}")],
}


def render_date(d: dt.date, fmt: str, rng: random.Random) -> tuple[str, dict[str, tuple[int, int]]]:
    """(source text, field -> [start, end) character span) of ``d`` in format ``fmt``."""
    text, spans = "", {}
    for name, piece in DATE_PARTS[fmt](d, rng):
        if name is not None:
            spans[name] = (len(text), len(text) + len(piece))
        text += piece
    return text, spans


class CharVocab:
    """Characters of the date sources and targets; 0 pad, 1 bos, 2 eos."""

    PAD, BOS, EOS = 0, 1, 2

    def __init__(self):
        chars = sorted(set("0123456789-./, ") | set("".join(MONTHS + MONTHS_ABBR)))
        self.itos = ["<pad>", "<s>", "</s>", *chars]
        self.stoi = {c: i for i, c in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi[c] for c in text] + [self.EOS]


def date_examples(n: int, seed: int, test: bool = False) -> list[tuple[str, str, dict[str, tuple[int, int]]]]:
    """n (source, ISO target, spans); test dates (day number divisible by 7) never occur in training."""
    rng = random.Random(seed)
    start, out = dt.date(1900, 1, 1), []
    while len(out) < n:
        d = start + dt.timedelta(days=rng.randint(0, 73_000))
        if (d.toordinal() % 7 == 0) != test:
            continue
        text, spans = render_date(d, rng.choice(list(DATE_PARTS)), rng)
        out.append((text, d.isoformat(), spans))
    return out


def _batch(vocab: CharVocab, rows) -> tuple[Tensor, Tensor, Tensor]:
    """(src (B, S) padded, decoder input (B, 11) from BOS, labels (B, 11) ending in EOS)."""
    src = [vocab.encode(s) for s, _, _ in rows]
    S = max(map(len, src))
    src_t = torch.tensor([x + [vocab.PAD] * (S - len(x)) for x in src])  # (B, S)
    tgt = torch.tensor([vocab.encode(t) for _, t, _ in rows])  # (B, 11)
    dec = torch.cat([torch.full((len(rows), 1), vocab.BOS), tgt[:, :-1]], 1)  # (B, 11)
    return src_t, dec, tgt


@torch.no_grad()
def greedy_dates(model: nn.Module, vocab: CharVocab, sources: list[str]) -> list[str]:
    """Greedy decoding of 10 characters (the ISO length)."""
    src, _, _ = _batch(vocab, [(s, "0000-00-00", {}) for s in sources])
    mask = (src != vocab.PAD).long()
    dec = torch.full((len(sources), 1), vocab.BOS)
    for _ in range(10):
        logits = model(input_ids=src, decoder_input_ids=dec, attention_mask=mask).logits  # (B, t, V)
        dec = torch.cat([dec, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return ["".join(vocab.itos[i] for i in row[1:].tolist()) for row in dec]


def train_dates_model(seconds: float = 120.0, max_steps: int = 1500, batch_size: int = 64, d_model: int = 64,
                      lr: float = 2e-3, seed: int = 0) -> tuple[nn.Module, CharVocab, dict[str, float]]:
    """Train a 2+2-layer character encoder-decoder on fresh dates until ``seconds`` or ``max_steps``.

    Returns:
        (model in eval mode, vocab, {"steps", "seconds", "loss", "exact_match" on 300 test dates}).
    """
    torch.manual_seed(seed)
    vocab = CharVocab()
    model = create("encoder-decoder-tiny", src_vocab_size=len(vocab), tgt_vocab_size=len(vocab), share_vocab=False,
                   tie_output=False, d_model=d_model, ffn_dim=2 * d_model, max_len=32)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max_steps, pct_start=0.1)
    model.train()
    t0, step, loss = time.perf_counter(), 0, float("nan")
    while step < max_steps and time.perf_counter() - t0 < seconds:
        src, dec, tgt = _batch(vocab, date_examples(batch_size, seed=seed * 1_000_003 + step))
        out = model(input_ids=src, decoder_input_ids=dec, attention_mask=(src != vocab.PAD).long(), labels=tgt)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        sched.step()
        step, loss = step + 1, out.loss.item()
    secs = time.perf_counter() - t0
    model.eval()
    test = date_examples(300, seed=seed + 999, test=True)
    hyps = greedy_dates(model, vocab, [s for s, _, _ in test])
    em = sum(h == t for h, (_, t, _) in zip(hyps, test)) / len(test)
    return model, vocab, {"steps": step, "seconds": secs, "loss": loss, "exact_match": em}


DATE_METHODS = ("cross_last", "cross_mean", "chefer", "ig", "occlusion", "random")


def dates_alignment_report(model: nn.Module, vocab: CharVocab, examples, methods: Sequence[str] = DATE_METHODS,
                           ig_steps: int = 16) -> dict[str, dict[str, float]]:
    """How often each method's top source character for an output digit lies in its field's span.

    For every example and every digit of the ISO output (teacher-forced on the reference), the
    relevance of the source characters (EOS excluded) for that output token: cross-attention of
    the last decoder layer or the mean over layers (mean over heads), Chefer et al.'s
    encoder-decoder rules (:func:`~attnlab.explain.methods.grad_rollout_seq2seq`), or IG / occlusion of the
    token's log-probability (source characters removed to pad). Returns method ->
    {"<field>": top-1 hit rate, "all": over all digits, "p@span": precision at the span's width}.
    """
    hits: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    for n, (text, iso, spans) in enumerate(examples):
        src, dec, tgt = _batch(vocab, [(text, iso, spans)])
        S = src.shape[1] - 1  # source characters, EOS excluded
        inputs = {"input_ids": src, "decoder_input_ids": dec}
        with torch.no_grad():
            cross = model(**inputs, output_attentions=True).cross_attentions  # layers x (1, H, T, S+1)
        keep = torch.zeros(S + 1, dtype=torch.bool)
        keep[S] = True
        for fname in FIELDS:
            lo, hi = spans[fname]
            for t in ISO_FIELDS[fname]:
                target = lambda out, t=t, y=int(tgt[0, t]): out.logits[0, t].log_softmax(-1)[y]
                for m in methods:
                    if m == "cross_last":
                        r = cross[-1][0, :, t].mean(0)
                    elif m == "cross_mean":
                        r = torch.stack([c[0, :, t].mean(0) for c in cross]).mean(0)
                    elif m == "chefer":
                        cap = capture(model, inputs, target=target)
                        r = grad_rollout_seq2seq(cap.maps("encoder"), cap.grads("encoder"), cap.maps("self"),
                                                 cap.grads("self"), cap.maps("cross"), cap.grads("cross"))[t]
                    elif m == "ig":
                        r, _ = integrated_gradients(model, inputs, target, model.src_embed, baseline_ids=vocab.PAD,
                                                    steps=ig_steps, keep=keep)
                    elif m == "occlusion":
                        r = occlusion(model, inputs, target, replace_id=vocab.PAD, positions=range(S))
                    elif m == "random":
                        r = random_relevance(S + 1, seed=n * 10 + t)
                    else:
                        raise ValueError(f"unknown method {m!r}; known: {', '.join(DATE_METHODS)}")
                    r = r[:S].double()
                    truth = torch.zeros(S, dtype=torch.bool)
                    truth[lo:hi] = True
                    top1 = float(truth[int(r.argmax())])
                    hits[m].setdefault(fname, []).append(top1)
                    hits[m].setdefault("all", []).append(top1)
                    hits[m].setdefault("p@span", []).append(precision_at_k(r, truth))
    return {m: {k: sum(v) / len(v) for k, v in d.items()} for m, d in hits.items()}
