"""Normalisers against explicit references (float64), plus the masking promises they all keep."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.attention.kernels.math import math_attention
from attnlab.attention.normalizers import create_normalizer, normalizer_names, register_normalizer

DT = torch.float64
NINF = float("-inf")
ALL = ["softmax", "topk", "hardmax", "gumbel", "sparsemax"]
KWARGS = {"topk": {"k": 2}, "gumbel": {"tau": 0.5}}


def _make(name, **kw):
    return create_normalizer(name, **{**KWARGS.get(name, {}), **kw})


def _masked_scores(shape=(3, 4, 9), p_mask=0.4, seed=0):
    """Random float64 scores with -inf holes, one fully masked row and one fully live row."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(shape, generator=g, dtype=DT)
    keep = torch.rand(shape, generator=g) > p_mask
    keep[0, 0] = False
    keep[0, 1] = True
    return s.masked_fill(~keep, NINF), keep


def test_registry():
    assert set(ALL) <= set(normalizer_names())
    with pytest.raises(ValueError, match="known normalizers: .*softmax"):
        create_normalizer("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_normalizer("softmax")(lambda: None)
    with pytest.raises(ValueError):
        create_normalizer("topk", k=0)
    with pytest.raises(ValueError):
        create_normalizer("gumbel", tau=0.0)


# ----------------------------------------------------------------------------- shared promises


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("train", [True, False])
def test_masking_and_dead_rows(name, train):
    torch.manual_seed(0)
    norm = _make(name).train(train)
    s, keep = _masked_scores()
    s = s.requires_grad_()
    w = norm(s)
    assert w.shape == s.shape and torch.isfinite(w).all()
    assert (w[~keep] == 0).all()  # masked positions: exactly 0
    assert (w[0, 0] == 0).all()  # dead row: zeros
    alive = keep.any(-1)
    torch.testing.assert_close(w.sum(-1)[alive], torch.ones(int(alive.sum()), dtype=DT))
    assert (w >= 0).all()
    w.backward(torch.randn_like(w))
    assert torch.isfinite(s.grad).all()
    assert (s.grad[0, 0] == 0).all()


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(ALL), L=st.integers(1, 8), rows=st.integers(1, 5),
       p_mask=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
def test_masking_property(name, L, rows, p_mask, seed):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    s = (3 * torch.randn(rows, L, generator=g, dtype=DT)).requires_grad_()
    keep = torch.rand(rows, L, generator=g) >= p_mask
    w = _make(name)(s.masked_fill(~keep, NINF))
    assert torch.isfinite(w).all() and (w >= 0).all()
    assert (w[~keep] == 0).all()
    torch.testing.assert_close(w.sum(-1), keep.any(-1).to(DT))
    w.backward(torch.randn_like(w))
    assert torch.isfinite(s.grad).all()


# ----------------------------------------------------------------------------- softmax


def test_softmax_matches_torch():
    s = torch.randn(4, 5, 6, dtype=DT)
    torch.testing.assert_close(_make("softmax")(s), torch.softmax(s, -1), rtol=1e-14, atol=1e-14)


# ----------------------------------------------------------------------------- topk


def _topk_ref(s: torch.Tensor, k: int) -> torch.Tensor:
    """Row by row: sort the finite scores, softmax over the k largest."""
    out = torch.zeros_like(s)
    flat, res = s.reshape(-1, s.shape[-1]), out.view(-1, s.shape[-1])
    for r in range(flat.shape[0]):
        finite = [(float(x), j) for j, x in enumerate(flat[r].tolist()) if x != NINF]
        top = sorted(finite, reverse=True)[:k]
        if not top:
            continue
        e = torch.tensor([x for x, _ in top], dtype=DT).exp()
        for (x, j), p in zip(top, e / e.sum()):
            res[r, j] = p
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 20])
def test_topk_matches_reference(k):
    s, _ = _masked_scores(seed=k)
    w = _make("topk", k=k)(s)
    torch.testing.assert_close(w, _topk_ref(s, k), rtol=1e-12, atol=1e-12)
    assert ((w > 0).sum(-1) <= k).all()


def test_topk_short_rows():
    s = torch.tensor([[1.0, NINF, NINF, 0.0], [NINF, 2.0, NINF, NINF]], dtype=DT)
    w = _make("topk", k=3)(s)
    torch.testing.assert_close(w, torch.softmax(s, -1))


# ----------------------------------------------------------------------------- hardmax


def test_hardmax_one_hot_and_softmax_gradient():
    s, keep = _masked_scores()
    s1 = s.clone().requires_grad_()
    s2 = s.clone().requires_grad_()
    w = _make("hardmax")(s1)
    alive = keep.any(-1)
    assert set(w.unique().tolist()) <= {0.0, 1.0}
    assert (w.sum(-1) == alive.to(DT)).all()
    hot = w.argmax(-1)
    assert (hot[alive] == s.argmax(-1)[alive]).all()
    g = torch.randn_like(s)
    w.backward(g)
    _make("softmax")(s2).backward(g)
    torch.testing.assert_close(s1.grad, s2.grad, rtol=0, atol=0)


# ----------------------------------------------------------------------------- gumbel


def test_gumbel_eval_is_deterministic():
    s, _ = _masked_scores()
    soft = _make("gumbel", tau=0.5).eval()
    torch.testing.assert_close(soft(s), _make("softmax")(s / 0.5))
    hard = _make("gumbel", hard=True).eval()
    torch.testing.assert_close(hard(s), _make("hardmax")(s))
    # sample=True overrides eval mode
    assert not torch.equal(soft(s, sample=True), soft(s))


def test_gumbel_seeded_and_hard_one_hot():
    s, keep = _masked_scores()
    norm = _make("gumbel", hard=True)
    assert norm.training
    torch.manual_seed(7)
    a = norm(s)
    torch.manual_seed(7)
    b = norm(s)
    assert torch.equal(a, b)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert (a.sum(-1) == keep.any(-1).to(DT)).all()
    g = torch.Generator().manual_seed(7)
    assert torch.equal(norm(s, generator=g), norm(s, generator=torch.Generator().manual_seed(7)))


@pytest.mark.parametrize("tau", [0.5, 2.0])
def test_gumbel_max_frequencies_match_softmax(tau):
    """Gumbel-max trick: argmax(s + g) ~ Categorical(softmax(s)), whatever tau."""
    torch.manual_seed(0)
    s = torch.tensor([1.0, 0.0, -0.5, NINF, 0.7], dtype=DT)
    n = 20_000
    w = _make("gumbel", tau=tau, hard=True)(s.expand(n, -1))
    freq = w.mean(0)
    p = torch.softmax(s, -1)
    # 5 standard errors of a binomial proportion at worst
    assert (freq - p).abs().max() < 5 * (0.25 / n) ** 0.5
    assert freq[3] == 0


def test_gumbel_soft_sample_properties():
    torch.manual_seed(0)
    s = torch.tensor([2.0, 0.0, NINF, -1.0], dtype=DT)
    w = _make("gumbel", tau=0.1)(s.expand(2000, -1))
    # low temperature: samples are nearly one-hot and their argmax follows softmax(s)
    assert (w.amax(-1) > 0.9).float().mean() > 0.8
    freq = torch.nn.functional.one_hot(w.argmax(-1), 4).to(DT).mean(0)
    assert (freq - torch.softmax(s, -1)).abs().max() < 0.06


# ----------------------------------------------------------------------------- sparsemax


def _sparsemax_ref(s: torch.Tensor) -> torch.Tensor:
    """Projection onto the simplex: tau solves sum(max(z - tau, 0)) = 1, found by bisection."""
    out = torch.zeros_like(s)
    flat, res = s.reshape(-1, s.shape[-1]), out.view(-1, s.shape[-1])
    for r in range(flat.shape[0]):
        z = [x for x in flat[r].tolist() if x != NINF]
        if not z:
            continue
        lo, hi = max(z) - 1.0, max(z)
        for _ in range(200):
            mid = (lo + hi) / 2
            if sum(max(x - mid, 0.0) for x in z) > 1.0:
                lo = mid
            else:
                hi = mid
        tau = (lo + hi) / 2
        for j, x in enumerate(flat[r].tolist()):
            if x != NINF:
                res[r, j] = max(x - tau, 0.0)
    return out


def test_sparsemax_matches_threshold_reference():
    s, _ = _masked_scores(shape=(4, 5, 10), p_mask=0.2, seed=3)
    s = 2 * s
    w = _make("sparsemax")(s)
    torch.testing.assert_close(w, _sparsemax_ref(s), rtol=1e-10, atol=1e-10)
    assert (w == 0).sum() > (s == NINF).sum()  # exact zeros beyond the mask


def test_sparsemax_known_values():
    sm = _make("sparsemax")
    cases = [([0.0, 0.0], [0.5, 0.5]), ([3.0, 1.0, NINF], [1.0, 0.0, 0.0]),
             ([1.0, 0.5, -5.0], [0.75, 0.25, 0.0])]
    for s, want in cases:
        torch.testing.assert_close(sm(torch.tensor(s, dtype=DT)), torch.tensor(want, dtype=DT))


def test_sparsemax_gradcheck_and_jacobian():
    # values kept away from the kinks where an entry enters or leaves the support
    s = torch.tensor([[0.9, 0.6, 0.1, -1.0, NINF], [0.3, 0.1, 0.25, NINF, NINF]], dtype=DT)
    sm = _make("sparsemax")
    finite = torch.where(torch.isinf(s), torch.zeros_like(s), s).detach().requires_grad_()
    mask = torch.isinf(s).detach()
    assert torch.autograd.gradcheck(lambda x: sm(x.masked_fill(mask, NINF)), (finite,))
    # Martins & Astudillo: J = diag(S) - S Sᵀ / |S| on the support S
    p = sm(s[0].detach())
    S = (p > 0).to(DT)
    J = torch.autograd.functional.jacobian(sm, s[0].detach())
    torch.testing.assert_close(J, torch.diag(S) - torch.outer(S, S) / S.sum())


# ----------------------------------------------------------------------------- integration


def test_topk_in_math_attention():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 4, 5, generator=g, dtype=DT)
    k = torch.randn(2, 3, 6, 5, generator=g, dtype=DT)
    v = torch.randn(2, 3, 6, 5, generator=g, dtype=DT)
    mask = torch.rand(2, 1, 4, 6, generator=g) > 0.4
    mask[0, 0, 0] = False  # a fully masked query row
    out, w = math_attention(q, k, v, mask=mask, normalizer=create_normalizer("topk", k=2))
    keep = mask.expand_as(w)
    assert (w[~keep] == 0).all()
    assert ((w > 0).sum(-1) == keep.sum(-1).clamp(max=2)).all()
    assert (out[0, :, 0] == 0).all()
    s = (q @ k.transpose(-2, -1) / 5**0.5).masked_fill(~keep, NINF)
    torch.testing.assert_close(w, _topk_ref(s, 2), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, w @ v, rtol=1e-12, atol=1e-12)
