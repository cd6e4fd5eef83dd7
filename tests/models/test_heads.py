"""Task heads: shapes, pooling over real tokens only, and that each head can learn its task."""

import pytest
import torch

from attnlab.models import (
    RegressionHead, SequenceClassificationHead, TokenClassificationHead, create, mean_pool,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_shapes_and_mean_pool_ignores_padding():
    h = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert SequenceClassificationHead(8, 3)(h, mask).shape == (2, 3)
    assert TokenClassificationHead(8, 4)(h).shape == (2, 5, 4)
    assert RegressionHead(8, 6)(h, mask).shape == (2, 6)
    torch.testing.assert_close(mean_pool(h, mask)[0], h[0, :3].mean(0))
    h2 = h.clone()
    h2[0, 3:] = 100.0  # padding must not leak into the pooled state
    head = RegressionHead(8, 6).eval()
    torch.testing.assert_close(head(h, mask), head(h2, mask))


def _encoder():
    return create("encoder-tiny", vocab_size=12, max_len=16)


def test_token_classification_learns_a_context_dependent_tag():
    """Tag = 1 where a token equals the sequence's first token, else 0: needs attention."""
    enc, head = _encoder(), TokenClassificationHead(32, 2)
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], lr=3e-3)
    losses = []
    for _ in range(150):
        ids = torch.randint(1, 6, (32, 10))
        tags = (ids == ids[:, :1]).long()  # (B, L)
        logits = head(enc(ids).last_hidden_state)  # (B, L, 2)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 2), tags.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


def test_regression_head_learns_a_count():
    """Target = how many times token 3 occurs among the real tokens."""
    enc, head = _encoder(), RegressionHead(32, 1)
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], lr=3e-3)
    losses = []
    for _ in range(150):
        ids = torch.randint(1, 6, (32, 10))
        y = (ids == 3).float().sum(1, keepdim=True)  # (B, 1)
        loss = torch.nn.functional.mse_loss(head(enc(ids).last_hidden_state), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
