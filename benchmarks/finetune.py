"""Fine-tuning benchmark: the same as ``attnlab bench finetune`` (see benchmarks/README.md).

    python benchmarks/finetune.py --quick
    python benchmarks/finetune.py --json results/finetune.json
"""

import sys

from attnlab.cli import app

if __name__ == "__main__":
    app(["bench", "finetune", *sys.argv[1:]], prog_name="benchmarks/finetune.py")
