"""Bahdanau and Luong attention over RNN states: formulas, normalisation, padding."""

import pytest
import torch

from attnlab.layers import BahdanauAttention, LuongAttention

DT = torch.float64


def _states(B=3, Lk=5, Dk=6, Dq=4):
    torch.manual_seed(0)
    lengths = torch.tensor([5, 2, 3])[:B]
    mask = torch.arange(Lk)[None] < lengths[:, None]  # (B, Lk)
    return torch.randn(B, Dq, dtype=DT), torch.randn(B, Lk, Dk, dtype=DT), mask


def _masked_softmax(scores, mask):
    return scores.masked_fill(~mask, float("-inf")).softmax(-1)


def test_bahdanau_formula_and_padding():
    s, h, mask = _states()
    attn = BahdanauAttention(4, 6, attn_dim=7).to(DT)
    res = attn(s, h, mask=mask)
    e = torch.tanh(attn.query_proj(s)[:, None] + attn.key_proj(h)) @ attn.v.weight[0]  # (B, Lk)
    w = _masked_softmax(e, mask)
    torch.testing.assert_close(res.weights, w)
    torch.testing.assert_close(res.context, (w[..., None] * h).sum(1))
    torch.testing.assert_close(res.weights.sum(-1), torch.ones(3, dtype=DT))
    assert (res.weights[~mask] == 0).all()


@pytest.mark.parametrize("score", ["general", "dot"])
def test_luong_formula_and_padding(score):
    s, h, mask = _states(Dq=6)
    attn = LuongAttention(6, 6, score=score).to(DT)
    res = attn(s, h, mask=mask)
    q = s if score == "dot" else s @ attn.query_proj.weight.T  # s W h = (Wᵀ s)·h
    w = _masked_softmax(torch.einsum("bd,bld->bl", q, h), mask)
    torch.testing.assert_close(res.weights, w)
    torch.testing.assert_close(res.context, (w[..., None] * h).sum(1))
    assert (res.weights[~mask] == 0).all()


def test_several_queries_and_separate_values():
    _, h, mask = _states()
    q = torch.randn(3, 2, 4, dtype=DT)
    v = torch.randn(3, 5, 9, dtype=DT)
    for attn in (BahdanauAttention(4, 6).to(DT), LuongAttention(4, 6).to(DT)):
        res = attn(q, h, v, mask=mask)
        assert res.context.shape == (3, 2, 9) and res.weights.shape == (3, 2, 5)
        torch.testing.assert_close(res.weights.sum(-1), torch.ones(3, 2, dtype=DT))
        torch.testing.assert_close(res.context, res.weights @ v)


def test_errors():
    s, h, mask = _states()
    with pytest.raises(ValueError, match="needs query_dim == key_dim"):
        LuongAttention(4, 6, score="dot")
    with pytest.raises(ValueError, match="unknown score"):
        LuongAttention(4, 6, score="concat")
    with pytest.raises(ValueError, match=r"mask must be a bool \(B, Lk\)"):
        BahdanauAttention(4, 6).to(DT)(s, h, mask=mask.long())
