"""`attnlab train`, `eval`, `predict` and `recipes`."""

from __future__ import annotations

from pathlib import Path

import typer

from .base import _guarded, _split_overrides, app, command, fail


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
    events, report.json and predictions/. Ctrl-C saves a checkpoint and exits with 130, SIGTERM
    (preemption) likewise with 143; --resume continues exactly where it stopped. Runs under
    torchrun for several processes.

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
        if e.main:  # under torchrun every rank stops; one says so
            typer.echo(f"interrupted at step {e.step}; checkpoint saved: {e.checkpoint}", err=True)
            typer.echo(f"continue with: attnlab train --resume {e.run_dir}", err=True)
        raise typer.Exit(e.exit_code)
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
    data: Path | None = None,
    debug: bool = False,
) -> None:
    """Evaluate a trained run on a split, or on a labelled file in the recipe's format.

    Prints the metrics as one JSON object on stdout (progress goes to stderr) and writes
    eval-<split>.json (and, for seq2seq, predictions/<split>.hyp.txt) in the run directory.
    Seq2seq runs decode with beam search per their config (override with decode.beam=N).

    Args:
        overrides: KEY=VALUE overrides of the run's config, e.g. decode.beam=5.
        split: val or test.
        data: a labelled file in the recipe's own format (e.g. TSV text<TAB>label for sst2,
            CSV for banking77, CLINC's JSON with test/oos_test); overrides --split.
        debug: show tracebacks instead of one-line errors.
    """
    import json

    from attnlab.recipes.run import eval_run

    _, extra = _split_overrides(["-"] + list(overrides or []))
    metrics = _guarded(debug, lambda: eval_run(run_dir, None if data else split, extra,
                                               log=lambda m: typer.echo(m, err=True), data_file=data))
    typer.echo(json.dumps(metrics))


@command(app)
def predict(
    run_dir: Path = typer.Argument(..., help="a run directory made by `attnlab train`"),
    texts: list[str] = typer.Argument(None, metavar="[TEXT]..."),
    input: Path | None = None,
    output: Path | None = None,
    beam: int | None = None,
    probs: bool = False,
    debug: bool = False,
) -> None:
    """Run a trained model on texts: one output line per input, in order.

    Example: attnlab predict runs/dates-20261123-101500 "3rd of March 2021"

    Args:
        texts: the inputs (or use --input).
        input: a file with one input per line (plain or .gz).
        output: write the outputs here (atomically) instead of printing them.
        beam: beam size of a seq2seq run (default: the run's decode.beam).
        probs: classifiers: add the predicted label's probability after a tab.
        debug: show tracebacks instead of one-line errors.
    """
    from attnlab.data.readers import read_lines
    from attnlab.recipes.run import predict_run
    from attnlab.io import write_text

    items = list(texts or [])
    if input is not None:
        items += _guarded(debug, lambda: read_lines(input))
    if not items:
        fail("nothing to predict: give TEXT arguments or --input FILE")
    if beam is not None and beam < 1:
        fail(f"--beam: must be at least 1, got {beam}")
    options = {"beam": beam} if beam is not None else {}
    if probs:
        options["probs"] = True
    outs = _guarded(debug, lambda: predict_run(run_dir, items, log=lambda m: typer.echo(m, err=True), **options))
    if output is not None:
        write_text(output, "".join(o + "\n" for o in outs))
        typer.echo(f"wrote {len(outs)} lines to {output}", err=True)
    else:
        for o in outs:
            typer.echo(o)


@command(app)
def export(
    run_dir: Path = typer.Argument(..., help="a run directory made by `attnlab train`"),
    out: Path = typer.Option(..., help="the checkpoint directory to write"),
    merge: bool = False,
    debug: bool = False,
) -> None:
    """Write a trained run as a standalone checkpoint (config.json, model.safetensors, tokenizer)
    that `load_pretrained` and `attnlab explain`/`serve` read.

    Example: attnlab export runs/sst2-lora-20261201 --merge --out sst2-minilm

    Args:
        out: the directory to write.
        merge: fold a LoRA/AdaLoRA/IA3/BitFit run's weights into its base model (needed for
            such runs; prefix tuning and adapters cannot be merged).
        debug: show tracebacks instead of one-line errors.
    """
    from attnlab.recipes.run import export_run

    path = _guarded(debug, lambda: export_run(run_dir, out, merge, log=lambda m: typer.echo(m, err=True)))
    typer.echo(f"wrote {path}")


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
