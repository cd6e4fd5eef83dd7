"""Crash-safe training checkpoints: round trip, pruning, crash leftovers, corruption, best, averaging."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from attnlab.train import (TrainCheckpointError, average_checkpoints, latest_checkpoint, load_checkpoint,
                           save_best, save_checkpoint)


class Tied(nn.Module):
    """An embedding whose weight the output projection shares."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.mid = nn.Linear(6, 6)
        self.out = nn.Linear(6, 11, bias=False)
        self.out.weight = self.emb.weight
        self.register_buffer("count", torch.tensor(3, dtype=torch.long))

    def forward(self, x):  # (B, T) -> (B, T, 11)
        return self.out(torch.tanh(self.mid(self.emb(x))))


def _train(model, opt, sched=None, steps=2):
    for _ in range(steps):
        loss = model(torch.randint(0, 11, (2, 5))).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()


def _draws():
    return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()


def _setup():
    torch.manual_seed(0)
    model = Tied()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    _train(model, opt, sched)
    return model, opt, sched


def test_round_trip_restores_weights_optimizer_scheduler_and_rng(tmp_path):
    model, opt, sched = _setup()
    path = save_checkpoint(tmp_path, 7, model=model, optimizer=opt, scheduler=sched,
                           extra={"epoch": 1, "position": 42})
    assert path == tmp_path / "checkpoints" / "step-00000007"
    assert {p.name for p in path.iterdir()} == {"model.safetensors", "trainer.pt", "DONE"}
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    exp_avg = {i: s["exp_avg"].clone() for i, s in enumerate(opt.state.values())}
    lr = sched.get_last_lr()
    expected_draws = _draws()

    _train(model, opt, sched, steps=3)  # mutate everything, RNGs included
    out = load_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched)

    assert out["step"] == 7 and out["extra"] == {"epoch": 1, "position": 42}
    assert "fallback_from" not in out
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, weights[k], rtol=0, atol=0)
    for i, s in enumerate(opt.state.values()):
        torch.testing.assert_close(s["exp_avg"], exp_avg[i], rtol=0, atol=0)
    assert sched.get_last_lr() == lr
    assert _draws() == expected_draws


def test_tied_weights_stay_tied_after_load(tmp_path):
    model, _, _ = _setup()
    save_checkpoint(tmp_path, 1, model=model)
    fresh = Tied()
    load_checkpoint(tmp_path, model=fresh, restore_rng=False)
    assert fresh.out.weight is fresh.emb.weight
    torch.testing.assert_close(fresh.emb.weight, model.emb.weight, rtol=0, atol=0)
    torch.testing.assert_close(fresh.mid.weight, model.mid.weight, rtol=0, atol=0)


def test_keep_last_prunes_oldest(tmp_path):
    model = Tied()
    for step in (10, 20, 30, 40, 50):
        save_checkpoint(tmp_path, step, model=model, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-00000040", "step-00000050"]
    # re-saving an older step never deletes the one just written
    save_checkpoint(tmp_path, 5, model=model, keep_last=1)
    assert (tmp_path / "checkpoints" / "step-00000005" / "DONE").is_file()


def test_crash_leftovers_are_ignored(tmp_path):
    model = Tied()
    save_checkpoint(tmp_path, 1, model=model)
    ckpts = tmp_path / "checkpoints"
    # a kill mid-write leaves a temp dir; a kill before DONE leaves no DONE
    (ckpts / ".tmp-step-00000009-123").mkdir()
    (ckpts / ".tmp-step-00000009-123" / "model.safetensors").write_bytes(b"partial")
    (ckpts / "step-00000008").mkdir()
    assert latest_checkpoint(tmp_path) == ckpts / "step-00000001"
    assert load_checkpoint(tmp_path, model=model)["step"] == 1
    with pytest.raises(TrainCheckpointError, match="step-00000008 is incomplete"):
        load_checkpoint(ckpts / "step-00000008", model=model)


def test_latest_checkpoint_orders_by_step_and_handles_empty_runs(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    model = Tied()
    for step in (9, 100, 12):
        save_checkpoint(tmp_path, step, model=model, keep_last=5)
    assert latest_checkpoint(tmp_path).name == "step-00000100"


def test_corrupt_newest_falls_back_with_warning(tmp_path):
    model = Tied()
    save_checkpoint(tmp_path, 1, model=model, extra={"pos": 1})
    with torch.no_grad():
        model.mid.weight.add_(1.0)
    bad = save_checkpoint(tmp_path, 2, model=model, extra={"pos": 2})
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])

    fresh = Tied()
    with pytest.warns(UserWarning, match="step-00000002"):
        out = load_checkpoint(tmp_path, model=fresh)
    assert out["step"] == 1 and out["extra"] == {"pos": 1}
    assert out["fallback_from"] == [bad]
    torch.testing.assert_close(fresh.mid.weight, model.mid.weight - 1.0)


def test_all_corrupt_raises(tmp_path):
    model = Tied()
    for step in (1, 2):
        path = save_checkpoint(tmp_path, step, model=model)
        (path / "trainer.pt").write_bytes(b"\x00garbage")
    with pytest.warns(UserWarning), pytest.raises(TrainCheckpointError, match="no loadable checkpoint"):
        load_checkpoint(tmp_path, model=model)
    # naming one corrupt checkpoint directly raises without fallback
    with pytest.raises(TrainCheckpointError, match="step-00000001 is corrupt"):
        load_checkpoint(path.parent / "step-00000001", model=model)


def test_not_a_run_dir_is_a_clear_error(tmp_path):
    with pytest.raises(TrainCheckpointError, match=f"{tmp_path}.*not a run directory"):
        load_checkpoint(tmp_path, model=Tied())


def test_save_best_replaces_atomically(tmp_path):
    model = Tied()
    save_best(tmp_path, 3, model, "bleu", 12.5)
    with torch.no_grad():
        model.mid.bias.fill_(0.25)
    best = save_best(tmp_path, 8, model, "bleu", 20.0)
    assert best == tmp_path / "checkpoints" / "best"
    assert json.loads((best / "best.json").read_text()) == {"step": 8, "metric": "bleu", "value": 20.0}
    assert not [p for p in best.parent.iterdir() if p.name.startswith(".tmp-")]
    fresh = Tied()
    average_checkpoints([best], fresh)  # the mean of one checkpoint is that checkpoint
    torch.testing.assert_close(fresh.mid.bias, torch.full((6,), 0.25))
    assert latest_checkpoint(tmp_path) is None  # best/ is not a step checkpoint


def test_save_best_takes_over_a_best_directory_of_an_older_version(tmp_path):
    model = Tied()
    legacy = tmp_path / "checkpoints" / "best"
    legacy.mkdir(parents=True)
    (legacy / "best.json").write_text(json.dumps({"step": 3, "metric": "bleu", "value": 1.0}))
    best = save_best(tmp_path, 8, model, "bleu", 2.0)
    assert best.is_symlink() and json.loads((best / "best.json").read_text())["step"] == 8
    assert sorted(p.name for p in best.parent.iterdir()) == ["best", "best-step-00000008"]


def test_average_checkpoints_is_the_mean(tmp_path):
    states, paths = [], []
    for step in range(3):
        torch.manual_seed(step)
        model = Tied()
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        paths.append(save_checkpoint(tmp_path, step, model=model))
    avg = Tied()
    average_checkpoints(paths, avg)
    for k, v in avg.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, sum(s[k] for s in states) / 3)
    assert avg.out.weight is avg.emb.weight


_SAVER = """
import sys, pathlib, torch
from attnlab.train import save_checkpoint
run = pathlib.Path(sys.argv[1])
model = torch.nn.Linear(64, 64)
opt = torch.optim.AdamW(model.parameters())
step = 0
while True:
    step += 1
    save_checkpoint(run, step, model=model, optimizer=opt, keep_last=2)
    (run / "ready").touch()
"""


def test_sigkill_mid_save_leaves_a_loadable_checkpoint(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(tmp_path)])
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "ready").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "saver did not start"
            time.sleep(0.02)
        time.sleep(random.uniform(0.05, 0.3))  # kill at an arbitrary point of a later save
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    out = load_checkpoint(tmp_path, model=nn.Linear(64, 64), restore_rng=False)
    assert out["step"] >= 1 and "fallback_from" not in out
