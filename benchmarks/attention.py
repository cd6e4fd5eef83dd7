"""Attention benchmark: the same as ``attnlab bench attention`` (see benchmarks/README.md).

    python benchmarks/attention.py --quick
    python benchmarks/attention.py --lengths 128..8192 --json results/attention.json
"""

import sys

from attnlab.cli import app

if __name__ == "__main__":  # the guard matters: benchmark children re-import this file
    app(["bench", "attention", *sys.argv[1:]], prog_name="benchmarks/attention.py")
