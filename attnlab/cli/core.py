"""`attnlab version`, `trace`, `models list/info` and `embed`."""

from __future__ import annotations

import typer

from .base import app, command, fail, models_app


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


@command(models_app, "info")
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


@command(app, "embed")
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
