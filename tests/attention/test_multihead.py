"""MultiHeadAttention: parity with torch.nn.MultiheadAttention, GQA, kernels, scores, positions."""

import pytest
import torch
from torch import nn

from attnlab.attention.multihead import AttentionOutput, MultiHeadAttention
from attnlab.attention.positions import create_position

DT = torch.float64
TOL = dict(atol=1e-10, rtol=1e-10)



def _torch_mha(E, H, **kw):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(E, H, batch_first=True, dtype=DT, **kw)
    with torch.no_grad():  # torch zero-inits the in/out biases: make them count
        for p in mha.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return mha.eval()


def _mha(E=16, H=4, seed=0, **kw):
    torch.manual_seed(seed)
    return MultiHeadAttention(E, H, **kw).to(DT).eval()


# ----------------------------------------------------------------------------- torch parity


@pytest.mark.parametrize("kernel", ["math", "chunked", "auto"])
@pytest.mark.parametrize("cross", [False, True])
def test_matches_torch(kernel, cross):
    E, H, B, Lq = 16, 4, 2, 5
    tm = _torch_mha(E, H)
    m = MultiHeadAttention.from_torch(tm).eval()
    x = torch.randn(B, Lq, E, dtype=DT)
    mem = torch.randn(B, 7, E, dtype=DT) if cross else x
    ref, ref_w = tm(x, mem, mem, need_weights=True, average_attn_weights=True)
    res = m(x, mem, mem, return_weights=True, kernel=kernel) if cross else m(x, return_weights=True, kernel=kernel)
    assert isinstance(res, AttentionOutput)
    torch.testing.assert_close(res.out, ref, **TOL)
    torch.testing.assert_close(res.weights.mean(1), ref_w, **TOL)


@pytest.mark.parametrize("kernel", ["math", "chunked", "sdpa"])
def test_matches_torch_with_masks(kernel):
    E, H, B, Lq, Lk = 16, 4, 3, 4, 6
    tm = _torch_mha(E, H)
    m = MultiHeadAttention.from_torch(tm).eval()
    x, mem = torch.randn(B, Lq, E, dtype=DT), torch.randn(B, Lk, E, dtype=DT)
    pad = torch.zeros(B, Lk, dtype=torch.bool)  # torch: True = ignore
    pad[0, 4:] = True
    pad[2, 2:] = True
    blocked = torch.rand(Lq, Lk) < 0.3
    blocked[:, 0] = False  # every row keeps a key: torch gives NaN for empty rows
    ref, ref_w = tm(x, mem, mem, key_padding_mask=pad, attn_mask=blocked, need_weights=True)
    want_w = kernel != "sdpa"
    res = m(x, mem, mem, key_padding_mask=~pad, mask=~blocked, kernel=kernel, return_weights=want_w)
    torch.testing.assert_close(res.out, ref, **TOL)
    if want_w:
        torch.testing.assert_close(res.weights.mean(1), ref_w, **TOL)
    # The (B, Lk) key-padding form of ``mask`` (B != Lq here) means the same.
    res2 = m(x, mem, mem, mask=~pad, kernel=kernel)
    ref2, _ = tm(x, mem, mem, key_padding_mask=pad)
    torch.testing.assert_close(res2.out, ref2, **TOL)


def test_matches_torch_per_head_3d_mask():
    E, H, B, L = 16, 4, 2, 5
    tm = _torch_mha(E, H)
    m = MultiHeadAttention.from_torch(tm).eval()
    x = torch.randn(B, L, E, dtype=DT)
    blocked = torch.rand(B * H, L, L) < 0.4
    blocked[..., 0] = False
    ref, _ = tm(x, x, x, attn_mask=blocked)
    res = m(x, mask=~blocked.view(B, H, L, L))
    torch.testing.assert_close(res.out, ref, **TOL)


@pytest.mark.parametrize("bias", [True, False])
def test_matches_torch_kdim_vdim(bias):
    E, H, B, Lq, Lk, kd, vd = 16, 2, 2, 3, 5, 6, 10
    tm = _torch_mha(E, H, kdim=kd, vdim=vd, bias=bias)
    m = MultiHeadAttention.from_torch(tm).eval()
    assert (m.kdim, m.vdim) == (kd, vd)
    x, k, v = torch.randn(B, Lq, E, dtype=DT), torch.randn(B, Lk, kd, dtype=DT), torch.randn(B, Lk, vd, dtype=DT)
    ref, ref_w = tm(x, k, v, need_weights=True)
    res = m(x, k, v, return_weights=True)
    torch.testing.assert_close(res.out, ref, **TOL)
    torch.testing.assert_close(res.weights.mean(1), ref_w, **TOL)


def test_from_torch_seq_first_module_is_batch_first():
    tm = nn.MultiheadAttention(8, 2, dtype=DT).eval()  # batch_first=False
    m = MultiHeadAttention.from_torch(tm).eval()
    x = torch.randn(3, 2, 8, dtype=DT)  # (L, B, E) for torch
    ref, _ = tm(x, x, x)
    torch.testing.assert_close(m(x.transpose(0, 1)).out.transpose(0, 1), ref, **TOL)


def test_from_torch_rejects_bias_kv():
    with pytest.raises(ValueError, match="add_bias_kv"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(8, 2, add_bias_kv=True))


# ----------------------------------------------------------------------------- GQA


def _repeat_rows(w, Hkv, groups):
    """(Hkv*D, ...) projection rows -> (Hkv*groups*D, ...) with each KV head repeated."""
    return w.view(Hkv, -1, *w.shape[1:]).repeat_interleave(groups, 0).flatten(0, 1)


@pytest.mark.parametrize("num_kv_heads", [1, 2])
@pytest.mark.parametrize("kernel", ["math", "sdpa", "chunked"])
def test_gqa_equals_repeated_heads(num_kv_heads, kernel):
    E, H, B, L = 16, 4, 2, 6
    g = _mha(E, H, num_kv_heads=num_kv_heads)
    full = _mha(E, H, seed=1)
    groups = H // num_kv_heads
    with torch.no_grad():
        for name in ("q_proj", "out_proj"):
            getattr(full, name).load_state_dict(getattr(g, name).state_dict())
        for name in ("k_proj", "v_proj"):
            getattr(full, name).weight.copy_(_repeat_rows(getattr(g, name).weight, num_kv_heads, groups))
            getattr(full, name).bias.copy_(_repeat_rows(getattr(g, name).bias, num_kv_heads, groups))
    assert g.k_proj.out_features == num_kv_heads * g.head_dim
    x = torch.randn(B, L, E, dtype=DT)
    pad = torch.ones(B, L, dtype=torch.bool)
    pad[1, 4:] = False
    causal = kernel != "sdpa"  # sdpa takes no mask_mod
    a = g(x, key_padding_mask=pad, causal=causal, kernel=kernel)
    b = full(x, key_padding_mask=pad, causal=causal, kernel=kernel)
    assert a.kernel == kernel
    torch.testing.assert_close(a.out, b.out, **TOL)


# ----------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("kernel", ["sdpa", "chunked"])
def test_kernels_agree_with_math(kernel):
    m = _mha(16, 4, num_kv_heads=2)
    x, mem = torch.randn(2, 5, 16, dtype=DT), torch.randn(2, 7, 16, dtype=DT)
    pad = torch.ones(2, 7, dtype=torch.bool)
    pad[0, 3:] = False
    ref = m(x, mem, key_padding_mask=pad, kernel="math")
    res = m(x, mem, key_padding_mask=pad, kernel=kernel)
    assert res.kernel == kernel
    torch.testing.assert_close(res.out, ref.out, **TOL)
    if kernel != "sdpa":
        ref = m(x, causal=True, kernel="math", return_weights=True)
        res = m(x, causal=True, kernel=kernel, return_weights=True)
        torch.testing.assert_close(res.out, ref.out, **TOL)
        torch.testing.assert_close(res.weights, ref.weights, **TOL)


@pytest.mark.parametrize("kernel", ["math", "chunked", "auto"])
def test_weights_rows_sum_to_one(kernel):
    m = _mha(16, 4)
    x = torch.randn(3, 5, 16, dtype=DT)
    pad = torch.ones(3, 5, dtype=torch.bool)
    pad[1, 2:] = False
    pad[2] = False  # nothing to attend to in batch row 2
    res = m(x, key_padding_mask=pad, causal=True, return_weights=True, kernel=kernel)
    sums = res.weights.sum(-1)  # (B, H, Lq)
    torch.testing.assert_close(sums[:2], torch.ones_like(sums[:2]), **TOL)
    assert torch.equal(sums[2], torch.zeros_like(sums[2]))
    assert torch.equal(res.weights[1, ..., 2:], torch.zeros_like(res.weights[1, ..., 2:]))
    assert torch.isfinite(res.out).all()


def test_sdpa_cannot_return_weights():
    with pytest.raises(ValueError, match="weights"):
        _mha()(torch.randn(1, 3, 16, dtype=DT), kernel="sdpa", return_weights=True)


def test_dropout_only_in_training():
    m = _mha(dropout=0.5)
    x = torch.randn(2, 6, 16, dtype=DT)
    torch.testing.assert_close(m(x).out, m(x).out, **TOL)
    m.train()
    torch.manual_seed(0)
    assert not torch.allclose(m(x).out, m.eval()(x).out)


# ----------------------------------------------------------------------------- scores, normalisers


@pytest.mark.parametrize(
    "score,normalizer,nkw",
    [
        ("additive", "softmax", None),
        ("scaled_dot", "topk", {"k": 2}),
        ("scaled_dot", "hardmax", None),
        ("scaled_dot", "sparsemax", None),
        ("general", "gumbel", {"tau": 0.5}),
        ("cosine", "softmax", None),  # auto picks chunked
    ],
)
def test_scores_and_normalizers_forward_backward_and_mask(score, normalizer, nkw):
    m = _mha(16, 4, num_kv_heads=2, score=score, normalizer=normalizer, normalizer_kwargs=nkw)
    x = torch.randn(2, 5, 16, dtype=DT, requires_grad=True)
    pad = torch.ones(2, 5, dtype=torch.bool)
    pad[1, 3:] = False
    res = m(x, key_padding_mask=pad, causal=True, return_weights=True)
    dot_softmax = score in ("scaled_dot", "cosine") and normalizer == "softmax"
    assert (res.kernel == "math") or dot_softmax
    w = res.weights
    allowed = torch.tril(torch.ones(5, 5, dtype=torch.bool)) & pad[:, None, None, :]  # (B, 1, Lq, Lk)
    assert torch.equal(w.masked_select(~allowed.expand_as(w)), torch.zeros(int((~allowed.expand_as(w)).sum()), dtype=DT))
    torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)), **TOL)
    res.out.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    grads = [p.grad for p in m.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)


def test_non_dot_score_refuses_fused_kernel():
    m = _mha(score="additive")
    with pytest.raises(ValueError, match="additive"):
        m(torch.randn(1, 3, 16, dtype=DT), kernel="sdpa")


# ----------------------------------------------------------------------------- positions


def test_alibi_hook_equals_explicit_bias():
    alibi = create_position("alibi", num_heads=4).to(DT)
    m = _mha(position=alibi)
    plain = _mha()
    x = torch.randn(2, 6, 16, dtype=DT)
    softcap = lambda s, b, h, qi, ki: 5.0 * torch.tanh(s / 5.0)  # noqa: E731
    res = m(x, causal=True, score_mod=softcap)  # position bias first, then the user's score_mod
    ref = plain(x, causal=True, bias=alibi.bias(6, 6), score_mod=softcap, kernel="math")
    torch.testing.assert_close(res.out, ref.out, **TOL)


def test_rope_is_shift_invariant():
    m = _mha(position="rope")
    x = torch.randn(2, 6, 16, dtype=DT)
    a = m(x, causal=True).out
    b = m(x, causal=True, positions=torch.arange(6) + 11).out
    torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
    assert not torch.allclose(a, _mha()(x, causal=True).out)


def test_positions_not_applied_in_cross_attention():
    m = _mha(position="alibi")
    plain = _mha()
    x, mem = torch.randn(1, 3, 16, dtype=DT), torch.randn(1, 5, 16, dtype=DT)
    torch.testing.assert_close(m(x, mem).out, plain(x, mem).out, **TOL)


def test_embed_only_position_is_rejected():
    with pytest.raises(ValueError, match="embed"):
        MultiHeadAttention(16, 4, position="sinusoidal", position_kwargs={"d_model": 16})


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(embed_dim=10, num_heads=4), "embed_dim=10.*num_heads=4"),
        (dict(embed_dim=16, num_heads=4, num_kv_heads=3), "num_heads=4.*num_kv_heads=3"),
        (dict(embed_dim=16, num_heads=0), "num_heads"),
    ],
)
def test_bad_sizes(kw, match):
    with pytest.raises(ValueError, match=match):
        MultiHeadAttention(**kw)


def test_head_dim_override():
    m = _mha(10, 4, head_dim=3)
    assert m.q_proj.out_features == 12 and m(torch.randn(1, 2, 10, dtype=DT)).out.shape == (1, 2, 10)


def test_bad_input_dims():
    m = _mha(16, 4, kdim=6)
    with pytest.raises(ValueError, match="embed_dim=16"):
        m(torch.randn(1, 3, 15, dtype=DT))
    with pytest.raises(ValueError, match="kdim=6"):
        m(torch.randn(1, 3, 16, dtype=DT), torch.randn(1, 4, 7, dtype=DT), torch.randn(1, 4, 16, dtype=DT))


def test_ambiguous_2d_mask():
    m = _mha()
    x = torch.randn(4, 4, 16, dtype=DT)
    with pytest.raises(ValueError, match="ambiguous"):
        m(x, mask=torch.ones(4, 4, dtype=torch.bool))
    # (Lq, Lk) when B differs: a plain broadcast mask
    y = torch.randn(2, 4, 16, dtype=DT)
    tri = torch.tril(torch.ones(4, 4, dtype=torch.bool))
    torch.testing.assert_close(m(y, mask=tri).out, m(y, causal=True).out, **TOL)
