"""The training loop on a toy model: token-normalised accumulation, schedules, optimizer groups,
stop conditions, early stopping, logs (metrics.jsonl, TensorBoard, plain lines) and resume."""

import io
import json
import math

import pytest
import torch
from torch import nn

from attnlab.config import ConfigError, load_config
from attnlab.models.loss import IGNORE_INDEX, token_loss
from attnlab.train import TokenBudgetBatcher, Trainer, TrainConfig, collate_pad
from attnlab.train.config import ScheduleConfig, parse_duration
from attnlab.train.monitor import Monitor, read_metrics
from attnlab.train.optim import build_optimizer, lr_factor


class Toy(nn.Module):
    """Predicts each token's successor (mod V) from its embedding: loss falls fast."""

    def __init__(self, vocab=13, dim=16):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, input_ids, labels=None):
        logits = self.head(self.norm(self.emb(input_ids)))  # (B, T, V)
        if labels is None:
            return type("Out", (), {"logits": logits})()
        loss_sum, n = token_loss(logits, lambda x: x, labels)
        return type("Out", (), {"logits": logits, "loss_sum": loss_sum, "num_tokens": n})()


def _data(n=64, vocab=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(1, vocab, (int(torch.randint(2, 9, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]

    def collate(indices):
        ids, mask = collate_pad([seqs[i] for i in indices], 0)
        labels = torch.where(mask, (ids + 1) % vocab, torch.full_like(ids, IGNORE_INDEX))
        return {"input_ids": ids, "labels": labels}

    return seqs, collate


def _cfg(**kw):
    base = dict(max_tokens=64, max_steps=12, eval_every=4, log_every=1, tensorboard=False, progress="lines",
                optim={"lr": 1e-2}, grad_clip=None)
    base.update(kw)
    return TrainConfig(**base)


def _fit(tmp_path, cfg, evaluate=None, seed=0, name="run"):
    seqs, collate = _data()
    torch.manual_seed(seed)
    model = Toy()
    batcher = TokenBudgetBatcher([len(s) for s in seqs], cfg.max_tokens, seed=cfg.seed, bucket_width=2)
    trainer = Trainer(cfg, model, batcher, collate, tmp_path / name, evaluate=evaluate)
    return trainer.fit(), model, trainer


def test_accumulation_normalises_by_the_step_tokens():
    """Two batches accumulated give the gradient of the token-mean loss over their union."""
    seqs, collate = _data()
    torch.manual_seed(0)
    model = Toy()
    a, b = collate([0, 1, 2]), collate([3, 4])
    total = int((a["labels"] != IGNORE_INDEX).sum() + (b["labels"] != IGNORE_INDEX).sum())
    for batch in (a, b):
        (model(**batch).loss_sum / total).backward()
    accumulated = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    both = collate([0, 1, 2, 3, 4])
    out = model(**both)
    (out.loss_sum / out.num_tokens).backward()
    for g, p in zip(accumulated, model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-7)


def test_accum_steps_two_equals_one_step_over_both_batches(tmp_path):
    """The trainer with accum_steps=2 and max_tokens=T follows the same losses as itself with one
    batch of the union: checked through the first step's loss against a hand computation."""
    res, model, trainer = _fit(tmp_path, _cfg(accum_steps=2, max_steps=1))
    rec = [r for r in read_metrics(tmp_path / "run") if r["split"] == "train"][0]
    seqs, collate = _data()
    batcher = TokenBudgetBatcher([len(s) for s in seqs], 64, seed=0, bucket_width=2)
    first_two = [i for b in batcher.epoch_batches(0)[:2] for i in b]
    torch.manual_seed(0)
    fresh = Toy()
    out = fresh(**collate(first_two))
    assert rec["loss"] == pytest.approx(float(out.loss_sum.detach() / out.num_tokens), rel=1e-6)


def test_lr_schedules():
    inv = ScheduleConfig(name="inverse_sqrt", warmup_steps=4)
    assert [lr_factor(s, inv, None) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(15, inv, None) == pytest.approx(math.sqrt(4 / 16))  # step 16: sqrt(warmup/step)
    cos = ScheduleConfig(name="cosine", warmup_steps=2, min_lr_ratio=0.1)
    assert lr_factor(1, cos, 10) == 1.0
    assert lr_factor(9, cos, 10) == pytest.approx(0.1)
    assert lr_factor(5, cos, 10) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))
    lin = ScheduleConfig(name="linear", warmup_steps=0)
    assert lr_factor(4, lin, 10) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="max_steps"):
        from attnlab.train.optim import build_scheduler
        build_scheduler(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1), cos, None)


def test_weight_decay_skips_biases_and_norms():
    model = Toy()
    opt = build_optimizer(model, TrainConfig(optim={"weight_decay": 0.1}).optim)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model.emb.weight), id(model.head.weight)}


def test_durations_and_config_errors():
    assert parse_duration("55m") == 3300 and parse_duration("1.5h") == 5400 and parse_duration(90) == 90
    assert load_config(TrainConfig, {"max_time": "2m"}).max_time == 120
    with pytest.raises(ConfigError, match="max_time"):
        load_config(TrainConfig, {"max_time": "soon"})
    with pytest.raises(ConfigError, match="did you mean 'optim.lr'"):
        load_config(TrainConfig, {}, ["optim.lrr=1"])


def test_loss_falls_and_logs_are_written(tmp_path):
    evals = []

    def evaluate(m):
        evals.append(1)
        return {"loss": 1.0 / len(evals)}

    res, model, _ = _fit(tmp_path, _cfg(max_steps=40, eval_every=10, tensorboard=True, optim={"lr": 0.05}), evaluate)
    recs = read_metrics(tmp_path / "run")
    train = [r for r in recs if r["split"] == "train"]
    assert train[-1]["loss"] < 0.5 * train[0]["loss"]
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "epoch"} <= set(train[0])
    assert [r["step"] for r in recs if r["split"] == "val"] == [10, 20, 30, 40]
    assert res.stop_reason == "max_steps" and res.best_step == 40
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))
    assert (tmp_path / "run" / "checkpoints" / "best" / "best.json").is_file()


def test_early_stopping_and_max_epochs(tmp_path):
    res, _, _ = _fit(tmp_path, _cfg(max_steps=100, eval_every=2, patience=2), lambda m: {"loss": 1.0}, name="a")
    assert res.stop_reason == "early_stopping" and res.step == 6  # best at 2, no better at 4 and 6
    res, _, trainer = _fit(tmp_path, _cfg(max_steps=None, max_epochs=2), name="b")
    assert res.stop_reason == "max_epochs" and res.epoch == 2.0
    assert res.step == 2 * len(trainer.batcher)


def test_resume_continues_exactly(tmp_path):
    full, model_full, _ = _fit(tmp_path, _cfg(max_steps=12), name="full")
    _fit(tmp_path, _cfg(max_steps=8), name="part")  # checkpoints at 4 and 8
    resumed, model_res, _ = _fit(tmp_path, _cfg(max_steps=12), name="part", seed=123)  # init ignored
    assert resumed.resumed_from.name == "step-00000008" and resumed.step == 12
    for a, b in zip(model_full.state_dict().values(), model_res.state_dict().values()):
        assert torch.equal(a, b)
    steps = [r["step"] for r in read_metrics(tmp_path / "part") if r["split"] == "train"]
    assert steps == list(range(1, 13))  # no duplicates after the resume


def test_plain_progress_lines_when_not_a_tty(tmp_path):
    buf = io.StringIO()
    mon = Monitor(tmp_path, tensorboard=False, progress="auto", stream=buf)
    assert not mon.bar
    mon.start(0, 10, None)
    mon.log_train(5, {"loss": 1.5, "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 1000.0, "epoch": 0.5,
                      "elapsed": 3.0})
    mon.log_eval(5, "val", {"bleu": 12.5})
    mon.close()
    text = buf.getvalue()
    assert "step 5/10" in text and "loss 1.5000" in text and "1,000 tok/s" in text and "bleu 12.5" in text
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [5, 5]
