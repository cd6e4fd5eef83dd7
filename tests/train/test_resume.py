"""Resuming on the toy task: overrides that apply, batch plans that must not change, logs that read
as one run, Ctrl-C at an evaluation step, and a kill at every write of the checkpoints and best/."""

import io
import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

import attnlab.train.checkpoint as checkpoint_module
from attnlab.train import TokenBudgetBatcher, TrainCheckpointError, Trainer, TrainingInterrupted
from attnlab.train.monitor import Monitor, read_metrics
from attnlab.train.optim import lr_factor


def _train_records(run):
    return [r for r in read_metrics(run) if r["split"] == "train"]


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ------------------------------------------------------------------ overrides and plans


def test_a_changed_lr_applies_on_resume(tmp_path, toy, capsys):
    schedule = {"name": "inverse_sqrt", "warmup_steps": 2}
    toy.fit(tmp_path / "run", toy.cfg(max_steps=4, schedule=schedule, optim={"lr": 1e-2}))
    res, _, trainer = toy.fit(tmp_path / "run", toy.cfg(max_steps=8, schedule=schedule, optim={"lr": 1e-3}))
    assert res.resumed_from.name == "step-00000004"
    lrs = {r["step"]: r["lr"] for r in _train_records(tmp_path / "run")}
    sched = trainer.cfg.schedule
    assert lrs[4] == pytest.approx(1e-2 * lr_factor(3, sched, 8))  # before the resume: the old peak
    for step in (5, 8):
        assert lrs[step] == pytest.approx(1e-3 * lr_factor(step - 1, sched, 8))
    assert "train.optim.lr 0.01 -> 0.001" in capsys.readouterr().out


@pytest.mark.parametrize("change, needle", [
    ("max_tokens", "max_tokens 64 -> 48"), ("world_size", "world_size 1 -> 2"),
    ("data", "example lengths"), ("seed", "seed 0 -> 1"),
])
def test_resume_refuses_a_different_batch_plan(tmp_path, toy, change, needle):
    toy.fit(tmp_path / "run", toy.cfg(max_steps=4))
    seqs, collate = toy.data(seed=1 if change == "data" else 0)
    cfg = toy.cfg(max_steps=8, max_tokens=48 if change == "max_tokens" else 64, seed=1 if change == "seed" else 0)
    batcher = TokenBudgetBatcher([len(s) for s in seqs], cfg.max_tokens, seed=cfg.seed, bucket_width=2,
                                 world_size=2 if change == "world_size" else 1)
    trainer = Trainer(cfg, toy.Toy(), batcher, collate, tmp_path / "run")
    with pytest.raises(TrainCheckpointError, match=f"cannot resume .*{needle}"):
        trainer.fit()


# ------------------------------------------------------------------ logs


def test_tensorboard_keeps_the_checkpoint_step_on_resume(tmp_path, toy):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    toy.fit(tmp_path / "run", toy.cfg(max_steps=8, tensorboard=True), evaluate=toy.eval)
    toy.fit(tmp_path / "run", toy.cfg(max_steps=12, tensorboard=True), evaluate=toy.eval)
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 13))
    assert [e.step for e in events.Scalars("val/loss")] == [4, 8, 12]


def test_a_resume_without_checkpoint_starts_the_log_afresh(tmp_path, toy):
    run = tmp_path / "run"
    run.mkdir()
    # an attempt killed before its first checkpoint
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "split": "train", "loss": 9.0}) + "\n"
                                               for s in (1, 2, 3)))
    toy.fit(run, toy.cfg(max_steps=4))
    assert [r["step"] for r in _train_records(run)] == [1, 2, 3, 4]
    assert all(r["loss"] != 9.0 for r in _train_records(run))


def test_a_torn_last_line_is_cut_before_appending(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "split": "train", "loss": 1.0}\n{"step": 2, "spl')
    mon = Monitor(tmp_path, tensorboard=False, stream=io.StringIO())
    mon.log_eval(3, "val", {"loss": 0.5})
    mon.close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 3]


# ------------------------------------------------------------------ Ctrl-C


def test_ctrl_c_at_an_evaluation_step_evaluates_then_saves(tmp_path, toy):
    def press_ctrl_c(model, step):
        if step == 3:  # taken at the next step, 4, which evaluates
            os.kill(os.getpid(), signal.SIGINT)

    cfg = toy.cfg(max_steps=12, save_every=100)
    with pytest.raises(TrainingInterrupted) as info:
        toy.fit(tmp_path / "cut", cfg, evaluate=toy.eval, callbacks=(press_ctrl_c,))
    assert info.value.step == 4
    assert [r["step"] for r in read_metrics(tmp_path / "cut") if r["split"] == "val"] == [4]
    state = torch.load(info.value.checkpoint / "trainer.pt", weights_only=True)["extra"]["state"]
    assert state["last_eval_step"] == 4 and state["best_step"] == 4
    assert json.loads((tmp_path / "cut" / "checkpoints" / "best" / "best.json").read_text())["step"] == 4
    assert info.value.exit_code == 130 and info.value.run_dir == tmp_path / "cut"

    resumed, model_cut, _ = toy.fit(tmp_path / "cut", cfg, evaluate=toy.eval)
    full, model_full, _ = toy.fit(tmp_path / "full", cfg, evaluate=toy.eval)
    assert _same_weights(model_cut, model_full) and resumed.best_step == full.best_step
    vals = [[(r["step"], r["loss"]) for r in read_metrics(tmp_path / d) if r["split"] == "val"]
            for d in ("cut", "full")]
    assert vals[0] == vals[1]


# ------------------------------------------------------------------ a kill at any write


class Killed(Exception):
    """Stands for a SIGKILL at one filesystem operation."""


def _count_replaces(monkeypatch, kill_at=None):
    """Wrap os.replace (used for every rename of a checkpoint write) and count the calls inside
    checkpoints/; raise Killed at call ``kill_at``. Records whether a rename onto ``best`` succeeded."""
    real = os.replace
    seen = {"n": 0, "best_done": False}

    def replace(src, dst):
        if "checkpoints" in str(dst):
            seen["n"] += 1
            if seen["n"] == kill_at:
                raise Killed(f"killed at rename {kill_at}: {src} -> {dst}")
        real(src, dst)
        if os.path.basename(str(dst)) == "best":
            seen["best_done"] = True

    monkeypatch.setattr(checkpoint_module.os, "replace", replace)
    return seen


def test_a_kill_at_any_checkpoint_write_leaves_a_consistent_run(tmp_path, toy, monkeypatch):
    cfg = toy.cfg(max_steps=12, eval_every=2, save_every=4, keep_last=1)  # evaluations between saves too
    with monkeypatch.context() as m:
        counter = _count_replaces(m)
        full, model_full, _ = toy.fit(tmp_path / "full", cfg, evaluate=toy.eval)
    renames = counter["n"]
    best_full = load_file(str(tmp_path / "full" / "checkpoints" / "best" / "model.safetensors"))
    assert renames > 6
    layouts = []
    for kill_at in range(1, renames + 1):
        run = tmp_path / f"kill-{kill_at}"
        with monkeypatch.context() as m:
            seen = _count_replaces(m, kill_at)
            with pytest.raises(Killed):
                toy.fit(run, cfg, evaluate=toy.eval)
        best = run / "checkpoints" / "best"
        if seen["best_done"]:  # once there was a best/, there is one, complete, at every moment
            assert (best / "best.json").is_file(), f"no best/ after a kill at rename {kill_at}"
            load_file(str(best / "model.safetensors"))
        res, model, _ = toy.fit(run, cfg, evaluate=toy.eval)
        assert _same_weights(model, model_full), kill_at
        assert res.best_step == full.best_step
        assert json.loads((best / "best.json").read_text())["step"] == full.best_step, kill_at
        again = load_file(str(best / "model.safetensors"))
        assert all(torch.equal(again[k], best_full[k]) for k in best_full), kill_at
        layouts.append(sorted(p.name for p in (run / "checkpoints").iterdir()))
    # no leftovers: the temp dirs of the killed writer are gone, and only the best's own directory is kept
    want = ["best", f"best-step-{full.best_step:08d}", "step-00000012"]
    assert [(k, layout) for k, layout in enumerate(layouts, 1) if layout != want] == []
