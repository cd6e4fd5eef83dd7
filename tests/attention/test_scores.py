"""Score functions against explicit einsum / loop references (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.attention.api import attend
from attnlab.attention.kernels.math import math_attention
from attnlab.attention.scores import Score, create_score, register_score, score_names

DT = torch.float64
DOT_SCORES = ["scaled_dot", "dot", "general", "cosine"]


def _qkv(B=2, H=4, Hkv=2, Lq=5, Lk=7, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Lq, D, generator=g, dtype=DT)
    k = torch.randn(B, Hkv, Lk, D, generator=g, dtype=DT)
    v = torch.randn(B, Hkv, Lk, D, generator=g, dtype=DT)
    return q, k, v


def _make(name, H=4, D=8, **kw):
    torch.manual_seed(1)
    score = create_score(name, head_dim=D, num_heads=H, **kw).to(DT)
    if name == "general":  # move off the identity so the test sees W
        with torch.no_grad():
            score.W.add_(0.3 * torch.randn_like(score.W))
    return score


def _ref(name, score, q, k):
    """Independent einsum reference; k is expanded to q's heads by hand."""
    groups = q.shape[1] // k.shape[1]
    kk = torch.stack([k[:, h // groups] for h in range(q.shape[1])], dim=1)  # (B, H, Lk, D)
    if name == "scaled_dot":
        return torch.einsum("bhqd,bhkd->bhqk", q, kk) / math.sqrt(q.shape[-1])
    if name == "dot":
        return torch.einsum("bhqd,bhkd->bhqk", q, kk)
    if name == "general":
        return torch.einsum("bhqd,hde,bhke->bhqk", q, score.W, kk)
    if name == "cosine":
        qn = q / q.norm(dim=-1, keepdim=True)
        kn = kk / kk.norm(dim=-1, keepdim=True)
        return torch.einsum("bhqd,bhkd->bhqk", qn, kn) * min(math.exp(score.logit_scale.item()), 100.0)
    raise KeyError(name)


def test_registry():
    assert {"scaled_dot", "dot", "cosine", "general", "additive"} <= set(score_names())
    with pytest.raises(ValueError, match="known scores: .*scaled_dot"):
        create_score("nope", head_dim=4, num_heads=2)
    with pytest.raises(ValueError, match="already registered"):
        register_score("dot")(Score)


@pytest.mark.parametrize("name", DOT_SCORES)
@pytest.mark.parametrize("Hkv", [4, 2, 1])
def test_forward_matches_einsum(name, Hkv):
    q, k, _ = _qkv(Hkv=Hkv)
    score = _make(name)
    assert score.dot_product
    torch.testing.assert_close(score(q, k), _ref(name, score, q, k), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", DOT_SCORES)
@pytest.mark.parametrize("kernel", ["math", "sdpa"])
@pytest.mark.parametrize("Hkv", [4, 2])
def test_prepare_through_attend(name, kernel, Hkv):
    q, k, v = _qkv(Hkv=Hkv)
    mask = torch.rand(2, 1, 5, 7, generator=torch.Generator().manual_seed(3)) > 0.3
    score = _make(name)
    q2, k2, s = score.prepare(q, k)
    assert isinstance(s, float)
    got = attend(q2, k2, v, scale=s, mask=mask, kernel=kernel).out
    want, _ = math_attention(q, k, v, mask=mask, scores=score(q, k))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_scaled_dot_and_dot_scales():
    q, k, _ = _qkv(D=16)
    assert _make("scaled_dot", D=16).prepare(q, k)[2] == pytest.approx(0.25)
    assert _make("dot", D=16).prepare(q, k)[2] == 1.0


def test_cosine_temperature():
    score = create_score("cosine", head_dim=8, num_heads=4)
    assert score.scale.item() == pytest.approx(10.0)
    assert create_score("cosine", head_dim=8, num_heads=4, init_scale=3.0).scale.item() == pytest.approx(3.0)
    with torch.no_grad():
        score.logit_scale.fill_(math.log(500.0))
    assert score.scale.item() == pytest.approx(100.0)  # clamped like CLIP
    q, k, _ = _qkv()
    s = create_score("cosine", head_dim=8, num_heads=4).to(DT)
    s(q, k).sum().backward()
    assert s.logit_scale.grad is not None and s.logit_scale.grad != 0
    # the temperature also gets its gradient through prepare() + attend
    s.zero_grad()
    q2, k2, sc = s.prepare(q, k)
    attend(q2, k2, _qkv()[2], scale=sc, kernel="math").out.sum().backward()
    assert s.logit_scale.grad is not None and torch.isfinite(s.logit_scale.grad)
    # invariant to the norms of q and k
    torch.testing.assert_close(s(3.0 * q, 0.5 * k), s(q, k))


def test_general_identity_init_is_dot_and_xavier():
    q, k, _ = _qkv()
    ident = create_score("general", head_dim=8, num_heads=4).to(DT)
    assert ident.W.shape == (4, 8, 8)
    torch.testing.assert_close(ident(q, k), create_score("dot", head_dim=8, num_heads=4)(q, k))
    xav = create_score("general", head_dim=8, num_heads=4, init="xavier")
    assert not torch.allclose(xav.W[0], torch.eye(8))
    with pytest.raises(ValueError, match="init"):
        create_score("general", head_dim=8, num_heads=4, init="zeros")
    with pytest.raises(ValueError, match="num_heads=4"):
        ident(torch.randn(1, 2, 3, 8, dtype=DT), torch.randn(1, 2, 3, 8, dtype=DT))


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(DOT_SCORES),
    B=st.integers(1, 2), Hkv=st.integers(1, 2), groups=st.integers(1, 3),
    Lq=st.integers(1, 6), Lk=st.integers(1, 6), D=st.integers(1, 5), seed=st.integers(0, 999),
)
def test_dot_scores_property(name, B, Hkv, groups, Lq, Lk, D, seed):
    H = Hkv * groups
    q, k, v = _qkv(B, H, Hkv, Lq, Lk, D, seed)
    score = _make(name, H=H, D=D)
    torch.testing.assert_close(score(q, k), _ref(name, score, q, k), rtol=1e-10, atol=1e-10)
    q2, k2, s = score.prepare(q, k)
    got = attend(q2, k2, v, scale=s, kernel="math").out
    torch.testing.assert_close(got, math_attention(q, k, v, scores=score(q, k))[0], rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- additive


def _additive_loop(score, q, k):
    """vᵀ tanh(Wᵀq + Uᵀk), one (b, h, i, j) at a time."""
    B, H, Lq, _ = q.shape
    Lk, groups = k.shape[2], H // k.shape[1]
    out = torch.empty(B, H, Lq, Lk, dtype=q.dtype)
    for b in range(B):
        for h in range(H):
            for i in range(Lq):
                for j in range(Lk):
                    hid = q[b, h, i] @ score.W[h] + k[b, h // groups, j] @ score.U[h]
                    out[b, h, i, j] = score.v[h] @ torch.tanh(hid)
    return out


def test_additive_shapes_and_flag():
    s = create_score("additive", head_dim=8, num_heads=4, attn_dim=5)
    assert not s.dot_product
    assert s.W.shape == (4, 8, 5) and s.U.shape == (4, 8, 5) and s.v.shape == (4, 5)
    assert create_score("additive", head_dim=8, num_heads=4).attn_dim == 8
    q, k, _ = _qkv()
    with pytest.raises(NotImplementedError, match="scores="):
        s.prepare(q, k)


@pytest.mark.parametrize("Hkv", [4, 2, 1])
def test_additive_matches_loop(Hkv):
    q, k, _ = _qkv(B=2, H=4, Hkv=Hkv, Lq=3, Lk=4, D=5)
    s = create_score("additive", head_dim=5, num_heads=4, attn_dim=6).to(DT)
    torch.testing.assert_close(s(q, k), _additive_loop(s, q, k), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("grad", [False, True])
def test_additive_chunked_equals_unchunked(grad):
    q, k, _ = _qkv(Lq=11, Lk=6)
    torch.manual_seed(0)
    full = create_score("additive", head_dim=8, num_heads=4, attn_dim=3).to(DT)
    torch.manual_seed(0)
    row = 2 * 4 * 6 * 3 * 8  # bytes of one query's (B, H, 1, Lk, A) float64 activations
    chunked = create_score("additive", head_dim=8, num_heads=4, attn_dim=3, max_chunk_bytes=3 * row).to(DT)
    assert chunked.chunk_size(q, k) == 3 and full.chunk_size(q, k) >= 11
    qa, ka = q.clone().requires_grad_(grad), k.clone().requires_grad_(grad)
    qb, kb = q.clone().requires_grad_(grad), k.clone().requires_grad_(grad)
    a, b = full(qa, ka), chunked(qb, kb)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    if grad:
        g = torch.randn_like(a)
        (a * g).sum().backward()
        (b * g).sum().backward()
        for x, y in [(qa.grad, qb.grad), (ka.grad, kb.grad), (full.W.grad, chunked.W.grad),
                     (full.U.grad, chunked.U.grad), (full.v.grad, chunked.v.grad)]:
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


def test_additive_chunk_budget():
    s = create_score("additive", head_dim=64, num_heads=8)
    q = torch.empty(4, 8, 4096, 64)
    k = torch.empty(4, 8, 4096, 64)
    c = s.chunk_size(q, k)
    assert 1 <= c < 4096
    assert 4 * 8 * c * 4096 * 64 * 4 <= 64 * 2**20


@pytest.mark.parametrize("max_chunk_bytes", [64 * 2**20, 1])
def test_additive_gradcheck(max_chunk_bytes):
    q, k, _ = _qkv(B=1, H=2, Hkv=1, Lq=3, Lk=2, D=3)
    s = create_score("additive", head_dim=3, num_heads=2, attn_dim=2, max_chunk_bytes=max_chunk_bytes).to(DT)
    params = {n: p.detach().clone().requires_grad_() for n, p in s.named_parameters()}
    names = list(params)

    def f(*args):
        p = dict(zip(names, args[: len(names)]))
        return torch.func.functional_call(s, p, args[len(names):])

    inputs = (*params.values(), q.requires_grad_(), k.requires_grad_())
    assert torch.autograd.gradcheck(f, inputs)


def test_additive_in_math_attention():
    q, k, v = _qkv()
    s = create_score("additive", head_dim=8, num_heads=4).to(DT)
    mask = torch.ones(5, 7, dtype=torch.bool).tril()
    out, w = math_attention(q, k, v, mask=mask, scores=s(q, k))
    assert out.shape == (2, 4, 5, 8)
    assert (w[..., ~mask] == 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 5, dtype=DT))
