"""The step machinery: non-finite steps skipped (fp16 with a GradScaler), an empty training set as
one line, per-rank generator states, and the device and backend chosen before the process group."""

import os
import random
import subprocess
import sys

import pytest
import torch
import torch.distributed as torch_dist

from attnlab.train import TokenCrossEntropy, load_checkpoint, save_checkpoint
from attnlab.train.distributed import init_distributed
from attnlab.train.monitor import read_metrics


class PoisonedAt(TokenCrossEntropy):
    """Token cross-entropy whose ``at``-th batch has a NaN loss (a bad batch, an overflow)."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.calls = at, 0

    def __call__(self, model, batch):
        self.calls += 1
        loss = super().__call__(model, batch)
        return loss * float("nan") if self.calls == self.at else loss


@pytest.mark.parametrize("amp", ["none", "fp16"])
def test_a_non_finite_step_is_skipped_and_counted(tmp_path, toy, amp, capsys):
    res, model, trainer = toy.fit(tmp_path / "run", toy.cfg(max_steps=6, amp=amp), loss=PoisonedAt(3))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert res.step == 6 and trainer.state.skipped_steps >= 1
    records = {r["step"]: r for r in read_metrics(tmp_path / "run") if r["split"] == "train"}
    assert "skipped_steps" not in records[2] and records[3]["skipped_steps"] >= 1
    assert "step 3: loss nan" in capsys.readouterr().err
    if amp == "fp16":
        assert trainer.scaler.is_enabled() and trainer.scaler.get_scale() < 2.0**16  # lowered on the overflow
    else:
        assert trainer.state.skipped_steps == 1 and not trainer.scaler.is_enabled()


def test_an_empty_training_set_is_one_line_not_a_spin(tmp_path):
    """data.max_len below every example filters them all out; without max_epochs the loop used to
    wait forever for a batch."""
    args = ["train", "dates", "data.n_train=50", "data.n_val=10", "data.n_test=10", "data.max_len=2",
            "model.d_model=16", "model.layers=1", "model.heads=2", "model.ffn_dim=32", "train.progress=lines",
            "train.tensorboard=false", "--out", str(tmp_path / "run")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    res = subprocess.run([sys.executable, "-m", "attnlab", *args], env=env, capture_output=True, text=True,
                         timeout=180)
    assert res.returncode == 2, res.stderr[-2000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "no training batches" in errors[0] and "data.max_len" in errors[0]
    assert "Traceback" not in res.stderr


def _draws():
    return random.random(), torch.rand(3).tolist()


def test_every_rank_gets_its_own_generators_back(tmp_path):
    from attnlab.train.rng import rng_state

    model = torch.nn.Linear(2, 2)
    torch.manual_seed(0)
    random.seed(0)
    rank0 = rng_state()
    expected0 = _draws()
    torch.manual_seed(1)
    random.seed(1)
    rank1 = rng_state()
    expected1 = _draws()
    save_checkpoint(tmp_path, 5, model=model, rng_states=[rank0, rank1])
    for rank, expected in ((1, expected1), (0, expected0)):
        _draws()
        out = load_checkpoint(tmp_path, model=model, rank=rank)
        assert out["rng_ranks"] == 2 and _draws() == expected


def test_cuda_generators_are_restored_only_on_present_devices(monkeypatch):
    """A checkpoint from a machine with 2 GPUs resumes on one with 1 (older checkpoints hold a
    list of every device's state)."""
    from attnlab.train.rng import rng_state, set_rng_state

    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append(int(device)))
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", lambda state, device: restored.append(int(device)))
    state = rng_state()
    cuda = [torch.zeros(16, dtype=torch.uint8), torch.zeros(16, dtype=torch.uint8)]
    set_rng_state({**state, "cuda": cuda})
    assert restored == [0]
    restored.clear()
    set_rng_state({**state, "cuda": {"device": 1, "state": cuda[1]}})
    assert restored == []


def test_auto_is_resolved_before_the_backend_and_the_device_is_set(monkeypatch):
    calls = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.setdefault("device", torch.device(device)))
    monkeypatch.setattr(torch_dist, "is_initialized", lambda: False)
    monkeypatch.setattr(torch_dist, "init_process_group", lambda backend, **kw: calls.setdefault("backend", backend))
    info = init_distributed("auto")
    assert info.rank == 1 and info.local_rank == 1
    assert calls == {"device": torch.device("cuda", 1), "backend": "cpu:gloo,cuda:nccl"}

    calls.clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    init_distributed("auto")
    assert calls == {"backend": "gloo"}
    from attnlab.train.distributed import backend_for

    assert backend_for("cpu") == "gloo" and backend_for(torch.device("cuda", 0)) == "cpu:gloo,cuda:nccl"
