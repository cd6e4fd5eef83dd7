"""Plumbing of the ``attnlab`` command line: the typer apps, the ``@command`` decorator that takes
option help from docstrings, and one-line errors (exit code 2)."""

from __future__ import annotations

import functools
import inspect
import re
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


def _user_errors() -> tuple[type[Exception], ...]:
    """Exceptions that mean bad input: shown as one line (exit 2) unless --debug."""
    from attnlab.config import ConfigError
    from attnlab.data.readers import DataError
    from attnlab.train.checkpoint import TrainCheckpointError
    from attnlab.train.rundir import RunDirError

    return (ConfigError, DataError, TrainCheckpointError, RunDirError, FileNotFoundError, ValueError)


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
