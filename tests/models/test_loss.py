"""token_loss against torch's cross_entropy over the full logits (float64), chunked or not."""

import pytest
import torch
import torch.nn.functional as F

import attnlab.models.loss as loss_mod
from attnlab.models.loss import IGNORE_INDEX, token_loss


@pytest.mark.parametrize("chunk_rows", [1, 37, 10_000])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_matches_cross_entropy(monkeypatch, chunk_rows, smoothing):
    torch.manual_seed(0)
    V = 50
    monkeypatch.setattr(loss_mod, "_CHUNK_FLOATS", V * chunk_rows)
    h = torch.randn(3, 20, 8, dtype=torch.float64, requires_grad=True)
    head = torch.nn.Linear(8, V).double()
    labels = torch.randint(0, V, (3, 20))
    labels[0, 5:] = IGNORE_INDEX
    labels[2, :3] = IGNORE_INDEX
    got, n = token_loss(h, head, labels, smoothing)
    ref = F.cross_entropy(head(h).reshape(-1, V), labels.reshape(-1), ignore_index=IGNORE_INDEX,
                          reduction="sum", label_smoothing=smoothing)
    assert int(n) == int((labels != IGNORE_INDEX).sum())
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    g1, = torch.autograd.grad(got, h)
    g2, = torch.autograd.grad(ref, h)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-12)


def test_identity_head_and_shape_error():
    logits = torch.randn(2, 4, 7, dtype=torch.float64)
    labels = torch.randint(0, 7, (2, 4))
    got, _ = token_loss(logits, lambda x: x, labels)
    torch.testing.assert_close(got, F.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1), reduction="sum"))
    with pytest.raises(ValueError, match="labels must be"):
        token_loss(logits, lambda x: x, labels[:, :3])
