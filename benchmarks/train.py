"""Training benchmark: the same as ``attnlab bench train`` (see benchmarks/README.md).

    python benchmarks/train.py --quick
    python benchmarks/train.py --json results/train.json
"""

import sys

from attnlab.cli import app

if __name__ == "__main__":
    app(["bench", "train", *sys.argv[1:]], prog_name="benchmarks/train.py")
