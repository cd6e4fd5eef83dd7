"""Two gloo processes under torchrun: ranks that disagree about the time stop together, Ctrl-C
saves on every rank, and a SIGKILLed run with dropout resumes to the same weights as an
uninterrupted one (every rank's generators are in the checkpoint)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from attnlab.train.monitor import read_metrics

TINY = [
    "data.n_train=600", "data.n_val=30", "data.n_test=30", "model.d_model=48", "model.layers=2",
    "model.heads=2", "model.ffn_dim=96", "train.max_tokens=512", "train.log_every=1",
    "train.progress=lines", "train.tensorboard=false", "decode.batch_size=64", "model.dropout=0.1",
    "train.max_steps=40", "train.eval_every=20", "train.save_every=5",
]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
WORKER = str(Path(__file__).with_name("dist_worker.py"))


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(key, None)
    return env


def _check_gloo(res):
    if res.returncode != 0 and "gloo" in res.stderr.lower() and "address" in res.stderr.lower():
        pytest.skip(f"gloo cannot open local sockets here: {res.stderr[-300:]}")


def _run(cmd, timeout):
    """``subprocess.run`` for torchrun: on a timeout (a hang) the workers are killed too."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_all(proc)
        proc.communicate()
        pytest.fail(f"{' '.join(cmd[-4:])} did not end within {timeout} s (a hang)")
    res = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    _check_gloo(res)
    return res


def _train(*args, timeout=300):
    res = _run([*TORCHRUN, "-m", "attnlab", "train", *args], timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _wait_for(proc, done, what, limit=240):
    deadline = time.monotonic() + limit
    while not done():
        assert proc.poll() is None, f"training ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (torchrun starts each worker in its own session, so
    a signal to torchrun's process group does not reach them)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _kill_all(proc) -> list[int]:
    """SIGKILL torchrun's workers, then torchrun; wait until the workers are gone. Returns their pids."""
    workers = _children(proc.pid)
    for pid in [*workers, proc.pid]:  # the workers first: torchrun would restart or stop them
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers):  # reparented to init, which reaps them
        assert time.monotonic() < deadline, "the workers outlived SIGKILL"
        time.sleep(0.05)
    return workers


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _same_run(a: Path, b: Path):
    wa, wb = (load_file(str(d / "model" / "model.safetensors")) for d in (a, b))
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    la, lb = ([(r["step"], r["loss"]) for r in read_metrics(d) if r["split"] == "train"] for d in (a, b))
    assert la == lb


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted two-process run with dropout."""
    out = tmp_path_factory.mktemp("two") / "ref"
    _train("dates", *TINY, "--out", str(out))
    return out


def test_max_time_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    """Rank 1's clock runs out (max_time) while rank 0's never does; both must stop after the same
    step with the same reason (each rank deciding alone hung in mismatched collectives)."""
    options = {"max_steps": 100_000, "eval_every": 1_000_000, "save_every": 5, "log_every": 10,
               "rank_overrides": {"1": {"max_time": 2.0}}}
    res = _run([*TORCHRUN, WORKER, str(tmp_path / "run"), str(tmp_path), json.dumps(options)], timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] and ranks[0]["stop_reason"] == "max_time", ranks
    saved = sorted((tmp_path / "run" / "checkpoints").glob("step-*/DONE"))
    assert saved[-1].parent.name == f"step-{ranks[0]['step']:08d}"
    assert [r["step"] for r in read_metrics(tmp_path / "run") if r["split"] == "val"] == [ranks[0]["step"]]


def test_two_process_sigkill_with_dropout_resumes_to_identical_weights(reference, tmp_path):
    run = tmp_path / "killed"
    proc = subprocess.Popen([*TORCHRUN, "-m", "attnlab", "train", "dates", *TINY, "--out", str(run)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(proc, lambda: (run / "checkpoints" / "step-00000010" / "DONE").exists(), "the kill")
    finally:
        workers = _kill_all(proc)
    assert len(workers) == 2
    newest = sorted((run / "checkpoints").glob("step-*/DONE"))[-1].parent.name
    assert newest < "step-00000040" and not (run / "report.json").exists(), "the run finished before the kill"
    res = _train("--resume", str(run))
    assert "resuming from" in res.stdout
    _same_run(reference, run)


def test_ctrl_c_in_a_terminal_saves_on_every_rank_and_resumes_identically(reference, tmp_path):
    """Ctrl-C reaches torchrun, which forwards it to its workers (they run in their own sessions);
    every rank stops after the same step and rank 0 saves. Rank 1 used to fail in the CLI: it
    had no checkpoint path of its own."""
    run = tmp_path / "cut"
    proc = subprocess.Popen([*TORCHRUN, "-m", "attnlab", "train", "dates", *TINY, "--out", str(run)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for(proc, lambda: any(r["split"] == "train" and r["step"] >= 7 for r in read_metrics(run)),
                  "step 7")
        os.killpg(proc.pid, signal.SIGINT)  # torchrun's process group, as a terminal's Ctrl-C
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            _kill_all(proc)
    assert "interrupted at step" in err and f"attnlab train --resume {run}" in err, err[-3000:]
    assert "AttributeError" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    step = int(err.split("interrupted at step ")[1].split(";")[0])
    assert (run / "checkpoints" / f"step-{step:08d}" / "DONE").is_file()
    _train("--resume", str(run))
    _same_run(reference, run)
