"""The ``attnlab`` command line: subcommands mapped to plain typed functions.

This package is the only place that parses arguments. Each subcommand parses, calls a plain function
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

import sys

from . import core, train, explain, bench  # noqa: F401, I001  (each registers its commands, in this order)
from .base import app, bench_app, command, fail, models_app, split_docstring

__all__ = ["app", "bench_app", "models_app", "command", "fail", "split_docstring", "main"]


def main() -> None:
    """Console entry point (``attnlab``)."""
    app()


if __name__ == "__main__":
    sys.exit(main())
