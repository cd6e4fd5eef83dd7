"""Model benchmark: the same as ``attnlab bench model`` (see benchmarks/README.md).

    python benchmarks/model.py --quick
    python benchmarks/model.py --json results/model.json
"""

import sys

from attnlab.cli import app

if __name__ == "__main__":
    app(["bench", "model", *sys.argv[1:]], prog_name="benchmarks/model.py")
