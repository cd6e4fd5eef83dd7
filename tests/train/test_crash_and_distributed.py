"""Crash safety (SIGKILL mid-run, resume, identical result) and torchrun with 2 gloo processes
(the same losses as 1 process at the same global batch)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from attnlab.train.monitor import read_metrics

TINY = [
    "data.n_train=600", "data.n_val=30", "data.n_test=30", "model.d_model=48", "model.layers=2",
    "model.heads=2", "model.ffn_dim=96", "train.max_tokens=1024", "train.log_every=1",
    "train.progress=lines", "train.tensorboard=false", "decode.batch_size=64", "model.dropout=0.1",
]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def _cli(*args):
    return [sys.executable, "-m", "attnlab", *args]


def _reproducible(metrics: dict) -> dict:
    """A report section without its timing fields (``*_s``): those depend on the machine."""
    return {k: v for k, v in metrics.items() if not k.endswith("_s")}


ARGS = ["train", "dates", *TINY, "train.max_steps=60", "train.eval_every=20", "train.save_every=5"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of ARGS."""
    out = tmp_path_factory.mktemp("one") / "ref"
    ref = subprocess.run(_cli(*ARGS, "--out", str(out)), env=_env(), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    return out


def _same_run(ref, run):
    a, b = load_file(str(ref / "model" / "model.safetensors")), load_file(str(run / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    ra, rb = (json.loads((d / "report.json").read_text()) for d in (ref, run))
    for split in ("val", "test"):
        assert _reproducible(ra[split]) == _reproducible(rb[split]), split
    # the resumed log reads as one run: every step once, the same losses
    la = [(r["step"], r["loss"]) for r in read_metrics(ref) if r["split"] == "train"]
    lb = [(r["step"], r["loss"]) for r in read_metrics(run) if r["split"] == "train"]
    assert la == lb


def test_sigkill_then_resume_gives_identical_weights_and_metrics(reference, tmp_path):
    args = ARGS
    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*args, "--out", str(run)), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (run / "checkpoints" / "step-00000010" / "DONE").exists():
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "report.json").exists(), "the run finished before the kill"

    res = subprocess.run(_cli("train", "--resume", str(run)), env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert "resuming from" in res.stdout
    _same_run(reference, run)


def test_sigterm_saves_exits_143_and_resumes_identically(reference, tmp_path):
    """SIGTERM (preemption: Slurm, Kubernetes, torchrun's shutdown) is handled like Ctrl-C."""
    run = tmp_path / "preempted"
    proc = subprocess.Popen(_cli(*ARGS, "--out", str(run)), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not any(r["split"] == "train" and r["step"] >= 7 for r in read_metrics(run)):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "SIGTERM: saving a checkpoint" in out and "interrupted at step" in err and "Traceback" not in err
    step = int(err.split("interrupted at step ")[1].split(";")[0])
    ckpt = run / "checkpoints" / f"step-{step:08d}"
    assert (ckpt / "DONE").is_file()
    load_file(str(ckpt / "model.safetensors"))
    res = subprocess.run(_cli("train", "--resume", str(run)), env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    _same_run(reference, run)


def test_two_gloo_processes_match_one_process(tmp_path):
    common = ["train", "dates", *TINY, "model.dropout=0.0", "train.max_steps=4", "train.eval_every=100",
              "train.max_tokens=512"]
    one = subprocess.run(_cli(*common, "train.accum_steps=2", "--out", str(tmp_path / "one")), env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
         "attnlab", *common, "--out", str(tmp_path / "two")],
        env=_env(), capture_output=True, text=True, timeout=300)
    if two.returncode != 0 and "gloo" in two.stderr.lower() and "address" in two.stderr.lower():
        pytest.skip(f"gloo cannot open local sockets here: {two.stderr[-300:]}")
    assert two.returncode == 0, two.stderr[-3000:]
    la = [r for r in read_metrics(tmp_path / "one") if r["split"] == "train"]
    lb = [r for r in read_metrics(tmp_path / "two") if r["split"] == "train"]
    assert [r["step"] for r in la] == [r["step"] for r in lb] == [1, 2, 3, 4]
    for x, y in zip(la, lb):
        assert y["loss"] == pytest.approx(x["loss"], abs=1e-5)
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-4)
    # the global token count per step is the same too: one process saw both halves
    assert json.loads((tmp_path / "two" / "report.json").read_text())["train_tokens"] == \
        json.loads((tmp_path / "one" / "report.json").read_text())["train_tokens"]


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path):
    run = tmp_path / "run"
    args = ["train", "dates", *TINY, "train.max_steps=100000", "train.save_every=100000", "--out", str(run)]
    proc = subprocess.Popen(_cli(*args), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not any(r["split"] == "train" and r["step"] >= 3 for r in read_metrics(run)):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "attnlab train --resume" in err and "Traceback" not in err
    saved = sorted((run / "checkpoints").glob("step-*/DONE"))
    assert len(saved) == 1  # written on Ctrl-C, not by the schedule
    res = subprocess.run(_cli("train", "--resume", str(run), "train.max_steps=" + str(int(saved[0].parent.name[5:]) + 2)),
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
