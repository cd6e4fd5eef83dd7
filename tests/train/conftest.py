"""A toy task for the trainer tests: a model whose loss falls fast, its data, a config and a fit.

``tests/train/dist_worker.py`` loads this file too, to run the same task under torchrun.
"""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from attnlab.models.loss import IGNORE_INDEX, token_loss
from attnlab.train import TokenBudgetBatcher, Trainer, TrainConfig, collate_pad


class Toy(nn.Module):
    """Predicts each token's successor (mod V) from its embedding."""

    def __init__(self, vocab=13, dim=16, dropout=0.0):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, vocab)

    def forward(self, input_ids, labels=None):
        logits = self.head(self.drop(self.norm(self.emb(input_ids))))  # (B, T, V)
        if labels is None:
            return type("Out", (), {"logits": logits})()
        loss_sum, n = token_loss(logits, lambda x: x, labels)
        return type("Out", (), {"logits": logits, "loss_sum": loss_sum, "num_tokens": n})()


def toy_data(n=64, vocab=13, seed=0):
    """``n`` random sequences of 2-8 tokens and their collate (labels: each token + 1 mod V)."""
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(1, vocab, (int(torch.randint(2, 9, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]

    def collate(indices):
        ids, mask = collate_pad([seqs[i] for i in indices], 0)
        labels = torch.where(mask, (ids + 1) % vocab, torch.full_like(ids, IGNORE_INDEX))
        return {"input_ids": ids, "labels": labels}

    return seqs, collate


def toy_cfg(**kw) -> TrainConfig:
    base = dict(max_tokens=64, max_steps=12, eval_every=4, log_every=1, tensorboard=False, progress="lines",
                optim={"lr": 1e-2}, grad_clip=None)
    base.update(kw)
    return TrainConfig(**base)


def toy_eval(model) -> dict:
    """A validation loss that depends on the weights alone (so it is the same after a resume)."""
    _, collate = toy_data(16, seed=99)
    out = model(**collate(list(range(16))))
    return {"loss": float(out.loss_sum / out.num_tokens)}


def toy_fit(run_dir, cfg, *, evaluate=None, seed=0, dist=None, data_seed=0, dropout=0.0, **kw):
    """Build a fresh Toy (weights from ``seed``), its batcher, and fit; ``kw`` go to Trainer."""
    seqs, collate = toy_data(seed=data_seed)
    torch.manual_seed(seed)
    model = Toy(dropout=dropout)
    rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    batcher = TokenBudgetBatcher([len(s) for s in seqs], cfg.max_tokens, seed=cfg.seed, bucket_width=2,
                                 rank=rank, world_size=world)
    trainer = Trainer(cfg, model, batcher, collate, run_dir, evaluate=evaluate, dist=dist, **kw)
    return trainer.fit(), model, trainer


@pytest.fixture
def toy():
    return SimpleNamespace(Toy=Toy, data=toy_data, cfg=toy_cfg, fit=toy_fit, eval=toy_eval)
