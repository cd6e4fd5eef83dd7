"""A tiny encoder with a classification head learns a label that depends on token positions."""

import pytest
import torch
import torch.nn.functional as F

from attnlab.models import SequenceClassificationHead, create, mean_pool

VOCAB, L = 12, 8


def _data(n, gen):
    """Label 1 iff the token at position 2 is larger than the token at position 5: the same
    multiset of tokens can carry either label, so the model must use positions."""
    ids = torch.randint(1, VOCAB, (n, L), generator=gen)
    return ids, (ids[:, 2] > ids[:, 5]).long()


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_loss_halves_within_200_steps(pooling):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    enc = create("encoder-tiny", vocab_size=VOCAB, num_layers=2, max_len=L, pooler=False)
    head = SequenceClassificationHead(enc.config.d_model, 2, pooling=pooling)
    params = [*enc.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=3e-3)
    mask = torch.ones(64, L, dtype=torch.long)
    losses = []
    for step in range(200):
        ids, y = _data(64, gen)
        logits = head(enc(ids, attention_mask=mask).last_hidden_state, mask)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
        if step >= 20 and last < first / 2:
            break  # learnt: stop early to keep the test fast
    assert last < first / 2, f"loss {first:.3f} -> {last:.3f} after 200 steps"
    ids, y = _data(512, gen)
    with torch.no_grad():
        acc = (head(enc(ids).last_hidden_state).argmax(-1) == y).float().mean()
    assert acc > 0.75, f"held-out accuracy {acc:.2f} after {step + 1} steps"


def test_mean_pooling_ignores_padding():
    h = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    pooled = mean_pool(h, mask)
    torch.testing.assert_close(pooled[0], h[0, :2].mean(0))
    torch.testing.assert_close(pooled[1], h[1].mean(0))
    head = SequenceClassificationHead(3, 5, pooling="mean")
    assert head(h, mask).shape == (2, 5)
    with pytest.raises(ValueError, match="unknown pooling 'max'; known: cls, mean"):
        SequenceClassificationHead(3, 5, pooling="max")
