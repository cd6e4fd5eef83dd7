"""The toy task of ``conftest.py`` under torchrun, for ``test_multiprocess.py``::

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/train/dist_worker.py \\
        RUN_DIR OUT_DIR '{"max_steps": 100, "rank_overrides": {"1": {"max_time": 2}}}'

The JSON holds TrainConfig keys; ``rank_overrides`` gives one rank other values (a clock that
runs out earlier, say). Each rank writes ``OUT_DIR/rank-<r>.json`` with its step and stop reason.
"""

import importlib.util
import json
import sys
from pathlib import Path

from attnlab.train import init_distributed
from attnlab.train.distributed import shutdown

spec = importlib.util.spec_from_file_location("train_toy", Path(__file__).with_name("conftest.py"))
toy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(toy)

run_dir, out_dir, options = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
dist = init_distributed("cpu")
own = options.pop("rank_overrides", {}).get(str(dist.rank), {})
try:
    res, _, _ = toy.toy_fit(run_dir, toy.toy_cfg(**{**options, **own}), evaluate=toy.toy_eval, dist=dist)
    (out_dir / f"rank-{dist.rank}.json").write_text(json.dumps({"step": res.step, "stop_reason": res.stop_reason}))
finally:
    shutdown()
