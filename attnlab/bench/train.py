"""Training benchmark: attnlab's encoder-decoder against Hugging Face's Marian, same size, same batches.

Both models are built at random init with the same dimensions (by default the Multi30k setup:
d_model 256, 3+3 post-norm layers, 4 heads, ffn 1024, a shared vocabulary of 8000 with tied
embeddings, sinusoidal positions, dropout 0.1) and trained in fp32 on the CPU with torch's default
threads, on the identical list of batches:

* synthetic sentence pairs: source length log-normal (mean ~15 tokens, clipped to 8..40), target
  length correlated with it; random ids above the special tokens, each side ends in ``eos``;
  ``decoder_input_ids`` = ``bos`` + target, ``labels`` = target + ``eos``, right-padded (-100);
* batched by :class:`~attnlab.train.batching.TokenBudgetBatcher` under ``max_tokens`` (padded
  size of the longer side).

A step is forward, loss, backward, ``clip_grad_norm_(1.0)``, ``AdamW.step`` and ``zero_grad``:

* attnlab: the trainer's loss, ``TokenCrossEntropy(ls)(model, batch)`` divided by the labelled
  tokens (the vocabulary projection runs on labelled positions only);
* Hugging Face: ``MarianMTModel(input_ids, attention_mask, decoder_input_ids)`` (its default
  attention implementation, sdpa; no decoder mask, as ``Seq2SeqTrainer``), loss
  ``F.cross_entropy(logits, labels, ignore_index=-100, label_smoothing=ls)`` as its Trainer's label
  smoother computes it.

The models alternate in rounds of ``round_steps`` steps (one round each, repeated) so machine noise
hits both alike. Reported: median ms per step, tokens/s over all timed steps (total tokens ÷ total
time, since batches differ in size), parameters, first and final losses, and attnlab's tokens/s ÷
Hugging Face's. ``transformers`` is imported lazily; without it attnlab runs alone with a note.
"""

from __future__ import annotations

import math
import os
import platform
import random
import time
from dataclasses import dataclass, field
from importlib.metadata import version as dist_version
from typing import Callable

import torch
import torch.nn.functional as F

from ..models.loss import IGNORE_INDEX
from .measure import cpu_name

Progress = Callable[[str], None]
PAD, BOS, EOS, FIRST_ID = 0, 1, 2, 3



class TrainBenchError(ValueError):
    """A bad benchmark setting; the message names it."""


@dataclass(frozen=True)
class TrainBenchConfig:
    """What ``attnlab bench train`` measures.

    Attributes:
        d_model, encoder_layers, decoder_layers, heads, ffn_dim, vocab: model sizes (both models;
            one shared vocabulary, tied embeddings).
        max_positions: positions of the models (Marian's ``max_position_embeddings``).
        dropout: dropout on embeddings and residual branches (attention dropout 0).
        max_tokens: token budget per batch (padded size of the longer side).
        sentences: size of the pool of synthetic sentence pairs (reused epoch after epoch).
        min_len, max_len, mean_len: sentence lengths in tokens, before ``eos``.
        lr, label_smoothing, clip: AdamW learning rate, loss smoothing, gradient-norm clip.
        warmup: untimed steps per model. steps: timed steps per model.
        round_steps: steps of one model before switching to the other.
        hf: also train Hugging Face's ``MarianMTModel`` (when installed).
        seed: seed of the data and of both models' init.
    """

    d_model: int = 256
    encoder_layers: int = 3
    decoder_layers: int = 3
    heads: int = 4
    ffn_dim: int = 1024
    vocab: int = 8000
    max_positions: int = 256
    dropout: float = 0.1
    max_tokens: int = 3000
    sentences: int = 4000
    min_len: int = 8
    max_len: int = 40
    mean_len: float = 15.0
    lr: float = 1e-3
    label_smoothing: float = 0.1
    clip: float = 1.0
    warmup: int = 4
    steps: int = 40
    round_steps: int = 5
    hf: bool = True
    seed: int = 0

    @classmethod
    def quick(cls) -> "TrainBenchConfig":
        """Default sizes, fewer steps: about 30-60 s on 2 CPU cores."""
        return cls(warmup=2, steps=10, round_steps=5)


@dataclass
class TrainRow:
    """One model's measurement.

    Attributes:
        impl: "attnlab" or "hf". attention: the attention implementation it ran.
        params: trainable parameters (tied matrices counted once).
        ms: median milliseconds per step. steps: timed steps.
        tokens_per_s: target tokens (labelled, non-pad) over all timed steps ÷ their total time.
        all_tokens_per_s: source (non-pad) + target tokens ÷ the same time.
        target_tokens, source_tokens: tokens the timed steps saw, as counted from the model side
            (attnlab's ``num_tokens``; HF's labels != -100), so equal counts = the same batches.
        first_loss: the loss of the first (warmup) step, on batch 0.
        final_loss: the mean loss of the last round.
        vs_hf: this row's tokens/s ÷ Hugging Face's (above 1 = faster); None without HF.
    """

    impl: str
    attention: str
    params: int
    ms: float
    steps: int
    tokens_per_s: float
    all_tokens_per_s: float
    target_tokens: int
    source_tokens: int
    first_loss: float
    final_loss: float
    vs_hf: float | None = None


@dataclass
class TrainBenchResult:
    """Everything a run measured, plus the setup and notes printed above the table."""

    setup: dict
    notes: list[str] = field(default_factory=list)
    rows: list[TrainRow] = field(default_factory=list)


# ----------------------------------------------------------------------------- data


@dataclass
class Batch:
    """One training batch; every tensor is right-padded."""

    src: torch.Tensor  # (B, S) long
    src_mask: torch.Tensor  # (B, S) bool, True on real tokens
    tgt_in: torch.Tensor  # (B, T) long: bos + target
    labels: torch.Tensor  # (B, T) long: target + eos, -100 on padding
    target_tokens: int
    source_tokens: int


def sentence_lengths(n: int, config: TrainBenchConfig, rng: random.Random) -> list[tuple[int, int]]:
    """``n`` (source, target) lengths: log-normal sources of mean ~``mean_len``, targets correlated."""
    sigma = 0.35
    mu = math.log(config.mean_len) - sigma ** 2 / 2  # the unclipped mean is mean_len
    out = []
    for _ in range(n):
        s = round(rng.lognormvariate(mu, sigma))
        t = round(s * rng.lognormvariate(0.0, 0.12) + rng.gauss(0.0, 1.0))
        out.append(tuple(min(config.max_len, max(config.min_len, x)) for x in (s, t)))
    return out


def make_batches(config: TrainBenchConfig, count: int) -> list[Batch]:
    """The first ``count`` batches (epoch after epoch over one pool of sentence pairs)."""
    from attnlab.train.batching import TokenBudgetBatcher, collate_pad

    rng = random.Random(config.seed)
    lengths = sentence_lengths(config.sentences, config, rng)
    pairs = [([rng.randrange(FIRST_ID, config.vocab) for _ in range(s)] + [EOS],
              [rng.randrange(FIRST_ID, config.vocab) for _ in range(t)]) for s, t in lengths]
    batcher = TokenBudgetBatcher([max(len(src), len(tgt) + 1) for src, tgt in pairs], config.max_tokens,
                                 shuffle=True, seed=config.seed, bucket_width=2)
    out: list[Batch] = []
    epoch = 0
    while len(out) < count:
        for indices in batcher.epoch_batches(epoch):
            src, src_mask = collate_pad([pairs[i][0] for i in indices], PAD)  # (B, S)
            tgt_in, _ = collate_pad([[BOS] + pairs[i][1] for i in indices], PAD)  # (B, T)
            labels, lab_mask = collate_pad([pairs[i][1] + [EOS] for i in indices], PAD)  # (B, T)
            labels[~lab_mask] = IGNORE_INDEX
            out.append(Batch(src, src_mask, tgt_in, labels, int(lab_mask.sum()), int(src_mask.sum())))
            if len(out) == count:
                break
        epoch += 1
    return out


# ----------------------------------------------------------------------------- models


def _transformers():
    try:
        import transformers
    except ImportError:
        return None
    return transformers


def build_attnlab(config: TrainBenchConfig) -> torch.nn.Module:
    """attnlab's encoder-decoder, Marian-shaped: post-norm, sinusoidal positions, tied vocabulary."""
    from attnlab.models.encoder_decoder import EncoderDecoder, EncoderDecoderConfig

    torch.manual_seed(config.seed)
    return EncoderDecoder(EncoderDecoderConfig(
        src_vocab_size=config.vocab, tgt_vocab_size=config.vocab, share_vocab=True, tie_output=True,
        d_model=config.d_model, num_encoder_layers=config.encoder_layers,
        num_decoder_layers=config.decoder_layers, num_heads=config.heads, ffn_dim=config.ffn_dim,
        max_len=config.max_positions, position="sinusoidal", norm_first=False, activation="relu",
        dropout=config.dropout, attn_dropout=0.0, pad_id=PAD, bos_id=BOS, eos_id=EOS,
    )).train()


def build_hf(config: TrainBenchConfig):
    """Hugging Face's ``MarianMTModel`` of the same dimensions (random init), or None."""
    transformers = _transformers()
    if transformers is None:
        return None
    hf_cfg = transformers.MarianConfig(
        vocab_size=config.vocab, decoder_vocab_size=config.vocab, d_model=config.d_model,
        encoder_layers=config.encoder_layers, decoder_layers=config.decoder_layers,
        encoder_attention_heads=config.heads, decoder_attention_heads=config.heads,
        encoder_ffn_dim=config.ffn_dim, decoder_ffn_dim=config.ffn_dim,
        max_position_embeddings=config.max_positions, dropout=config.dropout, attention_dropout=0.0,
        activation_dropout=0.0, activation_function="relu", scale_embedding=True,
        share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
        pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=BOS,
    )
    torch.manual_seed(config.seed)
    return transformers.MarianMTModel(hf_cfg).train()  # default attention implementation: sdpa


def num_params(model: torch.nn.Module) -> int:
    """Trainable parameters; a tied matrix is counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def attnlab_loss(model, b: Batch, smoothing: float) -> tuple[torch.Tensor, int]:
    from ..train.losses import TokenCrossEntropy

    loss = TokenCrossEntropy(smoothing)
    batch = {"input_ids": b.src, "decoder_input_ids": b.tgt_in, "attention_mask": b.src_mask, "labels": b.labels}
    n = loss.count(batch)
    return loss(model, batch) / max(1, n), n


def hf_loss(model, b: Batch, smoothing: float) -> tuple[torch.Tensor, int]:
    logits = model(input_ids=b.src, attention_mask=b.src_mask, decoder_input_ids=b.tgt_in).logits  # (B, T, V)
    loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), b.labels.view(-1), ignore_index=IGNORE_INDEX,
                           label_smoothing=smoothing)
    return loss, int((b.labels != IGNORE_INDEX).sum())


class _Trainer:
    """One model, its optimizer and what its timed steps measured."""

    def __init__(self, impl: str, model, loss_fn, config: TrainBenchConfig):
        self.impl, self.model, self.loss_fn, self.config = impl, model, loss_fn, config
        self.opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
        self.times: list[float] = []
        self.losses: list[float] = []
        self.first_loss: float | None = None
        self.target_tokens = self.source_tokens = 0

    def step(self, b: Batch, timed: bool) -> None:
        t0 = time.perf_counter()
        loss, n = self.loss_fn(self.model, b, self.config.label_smoothing)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        value = float(loss.detach())
        if self.first_loss is None:
            self.first_loss = value
        if timed:
            self.times.append(dt)
            self.losses.append(value)
            self.target_tokens += n
            self.source_tokens += int(b.src_mask.sum())

    def row(self, attention: str) -> TrainRow:
        total = sum(self.times)
        last = self.losses[-self.config.round_steps:]
        return TrainRow(
            impl=self.impl, attention=attention, params=num_params(self.model),
            ms=float(torch.tensor(self.times).median()) * 1e3, steps=len(self.times),
            tokens_per_s=self.target_tokens / total,
            all_tokens_per_s=(self.target_tokens + self.source_tokens) / total,
            target_tokens=self.target_tokens, source_tokens=self.source_tokens,
            first_loss=self.first_loss, final_loss=sum(last) / len(last),
        )


def _kernels_ran(model: torch.nn.Module, fn: Callable[[], object]) -> str:
    """The kernels the attention modules of ``model`` ran during ``fn()`` (no gradients kept)."""
    from attnlab.attention import MultiHeadAttention

    seen: list[str] = []
    hooks = [m.register_forward_hook(lambda _m, _a, out: seen.append(out.kernel))
             for m in model.modules() if isinstance(m, MultiHeadAttention)]
    try:
        with torch.no_grad():
            fn()
    finally:
        for h in hooks:
            h.remove()
    return ",".join(dict.fromkeys(seen)) or "?"


# ----------------------------------------------------------------------------- run


def _check(config: TrainBenchConfig) -> None:
    for key in ("d_model", "encoder_layers", "decoder_layers", "heads", "ffn_dim", "max_tokens",
                "sentences", "steps", "round_steps"):
        if getattr(config, key) < 1:
            raise TrainBenchError(f"--{key.replace('_', '-')}: must be >= 1, got {getattr(config, key)}")
    if config.warmup < 0:
        raise TrainBenchError(f"--warmup: must be >= 0, got {config.warmup}")
    if config.vocab <= FIRST_ID:
        raise TrainBenchError(f"--vocab: must be > {FIRST_ID}, got {config.vocab}")
    if config.d_model % config.heads:
        raise TrainBenchError(f"--heads: {config.heads} does not divide d_model {config.d_model}")
    if not 1 <= config.min_len <= config.max_len or config.max_len + 1 > config.max_positions:
        raise TrainBenchError(f"lengths: need 1 <= min_len <= max_len < max_positions, got "
                              f"{config.min_len}, {config.max_len}, {config.max_positions}")
    if config.max_len + 1 > config.max_tokens:
        raise TrainBenchError(f"--max-tokens: {config.max_tokens} cannot hold one sentence of {config.max_len + 1}")


def setup_info(config: TrainBenchConfig, batches: list[Batch]) -> dict:
    """Versions, CPU, threads, sizes and batch statistics: printed at the top and saved in the JSON."""
    try:
        hf_version = dist_version("transformers")
    except Exception:  # noqa: BLE001 - not installed
        hf_version = None
    timed = batches[config.warmup:]
    return {
        "attnlab": dist_version("attnlab"), "torch": torch.__version__, "transformers": hf_version,
        "python": platform.python_version(), "device": "cpu", "device_name": cpu_name(),
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "dtype": "float32",
        "d_model": config.d_model, "encoder_layers": config.encoder_layers,
        "decoder_layers": config.decoder_layers, "heads": config.heads, "ffn_dim": config.ffn_dim,
        "vocab": config.vocab, "dropout": config.dropout, "max_tokens": config.max_tokens,
        "lengths": f"{config.min_len}..{config.max_len}, mean ~{config.mean_len:g} (+eos)",
        "batch_sentences": round(sum(b.src.shape[0] for b in timed) / len(timed), 1),
        "batch_target_tokens": round(sum(b.target_tokens for b in timed) / len(timed), 1),
        "batch_source_tokens": round(sum(b.source_tokens for b in timed) / len(timed), 1),
        "lr": config.lr, "label_smoothing": config.label_smoothing, "clip": config.clip,
        "warmup": config.warmup, "steps": config.steps, "round_steps": config.round_steps,
        "seed": config.seed,
    }


def run_train_bench(config: TrainBenchConfig, progress: Progress | None = print) -> TrainBenchResult:
    """Train both models on the same batches, alternating in rounds, and compare throughput.

    Args:
        config: what to measure.
        progress: called with a line before each phase (e.g. ``Console(stderr=True).print``).

    Raises:
        TrainBenchError: a bad setting.
    """
    _check(config)
    say = progress or (lambda _msg: None)
    batches = make_batches(config, config.warmup + config.steps)
    result = TrainBenchResult(setup=setup_info(config, batches))

    trainers = [_Trainer("attnlab", build_attnlab(config), attnlab_loss, config)]
    attention = {"attnlab": _kernels_ran(trainers[0].model, lambda: attnlab_loss(trainers[0].model, batches[0], 0.0))}
    if config.hf:
        hf = build_hf(config)
        if hf is None:
            result.notes.append("transformers is not installed: attnlab alone (pip install transformers "
                                "for the Hugging Face row)")
        else:
            trainers.append(_Trainer("hf", hf, hf_loss, config))
            attention["hf"] = hf.config._attn_implementation
            result.notes.append("Hugging Face: MarianMTModel, its default attention implementation "
                                f"({attention['hf']}); logits on every target position, padding included")
    result.setup["threads"] = torch.get_num_threads()

    say(f"warmup: {config.warmup} steps each")
    for t in trainers:
        for b in batches[:config.warmup]:
            t.step(b, timed=False)
    timed = batches[config.warmup:]
    for start in range(0, len(timed), config.round_steps):
        say(f"steps {start + 1}..{min(start + config.round_steps, len(timed))} of {len(timed)}")
        for t in trainers:
            for b in timed[start:start + config.round_steps]:
                t.step(b, timed=True)

    result.rows = [t.row(attention[t.impl]) for t in trainers]
    if len(result.rows) == 2:
        ref = result.rows[1]
        ref.vs_hf = 1.0
        result.rows[0].vs_hf = result.rows[0].tokens_per_s / ref.tokens_per_s
    return result


__all__ = ["TrainBenchConfig", "TrainBenchError", "TrainBenchResult", "TrainRow", "Batch",
           "make_batches", "build_attnlab", "build_hf", "run_train_bench"]
