"""Every kernel against the math reference, in float64, over random requests (hypothesis).

Random shapes, GQA ratios, mask tensors with broadcast dims and fully masked rows, biases,
score_mods and mask_mods. Outputs, weights and gradients must match ``math`` to 1e-10.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import attnlab.attention.kernels.flex as flex_kernel
from attnlab.attention import attend, get_kernel, masks
from attnlab.attention.api import _validate
from attnlab.attention.kernels.chunked import chunked_attention

F64 = torch.float64
TOL = dict(rtol=0, atol=1e-10)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def eager_flex(monkeypatch):
    # Compiling FlexAttention for every random shape would take minutes; the eager path runs
    # the same translation of masks, biases and mods (tests/attention/kernels/test_flex.py
    # runs the compiled one).
    monkeypatch.setattr(flex_kernel, "COMPILE", False)


# ----------------------------------------------------------------------------- mods

SCORE_MODS = {
    "none": None,
    "softcap": lambda s, b, h, qi, ki: 3.0 * torch.tanh(s / 3.0),
    "alibi": lambda s, b, h, qi, ki: s - 0.25 * (h + 1).to(s.dtype) * (qi - ki).abs().to(s.dtype),
    "kill_col0": lambda s, b, h, qi, ki: torch.where(ki == 0, torch.full_like(s, float("-inf")), s),
}


def _mask_mods(Lq, Lk, B):
    lengths = torch.arange(B) % max(Lk, 1) + 1  # (B,), includes short rows
    seq_ids = torch.arange(max(Lq, Lk)) // 5
    return {
        "none": None,
        "causal": masks.causal(),
        "causal_offset": masks.causal(offset=Lk - Lq),
        "window": masks.sliding_window(3),
        "window_causal": masks.sliding_window(4, causal=True),
        "padding": masks.padding(lengths),
        "prefix": masks.prefix_lm(2),
        "block_diag": masks.block_diagonal(seq_ids[:Lq], seq_ids[:Lk]),
        "and_or": masks.or_masks(masks.and_masks(masks.causal(), masks.sliding_window(2)),
                                 masks.prefix_lm(1)),
        "none_allowed": lambda b, h, qi, ki: (qi < 0) & (ki >= 0),  # every row dead
    }


@st.composite
def requests(draw):
    B = draw(st.integers(1, 2))
    hkv = draw(st.integers(1, 3))
    G = draw(st.integers(1, 3))
    H = hkv * G
    Lq = draw(st.integers(1, 24))
    Lk = draw(st.integers(1, 24))
    D = draw(st.integers(1, 9))
    Dv = draw(st.integers(1, 7))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Lq, D, generator=g, dtype=F64)
    k = torch.randn(B, hkv, Lk, D, generator=g, dtype=F64)
    v = torch.randn(B, hkv, Lk, Dv, generator=g, dtype=F64)
    kw = {}
    if draw(st.booleans()):  # a mask tensor, broadcast in a random subset of dims
        shape = [d if draw(st.booleans()) else 1 for d in (B, H, Lq, Lk)]
        m = torch.rand(*shape, generator=g) > draw(st.sampled_from([0.0, 0.3, 0.7]))
        if draw(st.booleans()) and shape[2] > 1:
            m[..., 0, :] = False  # a fully masked query row
        kw["mask"] = m
    if draw(st.booleans()):
        shape = [d if draw(st.booleans()) else 1 for d in (B, H, Lq, Lk)]
        kw["bias"] = torch.randn(*shape, generator=g, dtype=F64)
    kw["score_mod"] = SCORE_MODS[draw(st.sampled_from(sorted(SCORE_MODS)))]
    kw["mask_mod"] = _mask_mods(Lq, Lk, B)[draw(st.sampled_from(sorted(_mask_mods(1, 1, 1))))]
    if draw(st.booleans()):
        kw["scale"] = draw(st.sampled_from([1.0, 0.1, 2.5]))
    return q, k, v, {key: val for key, val in kw.items() if val is not None}


def _grads(fn, q, k, v, kw, weights):
    """Output, weights and gradients of a random linear function of both (float64)."""
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    kw = dict(kw)
    if "bias" in kw:
        kw["bias"] = kw["bias"].clone().requires_grad_(True)
        leaves.append(kw["bias"])
    out, w = fn(*leaves[:3], kw)
    g = torch.Generator().manual_seed(7)
    loss = (out * torch.randn(out.shape, generator=g, dtype=F64)).sum()
    if weights:
        loss = loss + (w * torch.randn(w.shape, generator=g, dtype=F64)).sum()
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return out.detach(), (w.detach() if weights else None), grads


def _attend(kernel, weights):
    def fn(q, k, v, kw):
        res = attend(q, k, v, kernel=kernel, return_weights=weights, **kw)
        assert res.kernel == kernel
        return res.out, res.weights

    return fn


def _check(ref, got):
    torch.testing.assert_close(got[0], ref[0], **TOL)
    assert torch.isfinite(got[0]).all()
    if ref[1] is not None:
        torch.testing.assert_close(got[1], ref[1], **TOL)
    for gr, gg in zip(ref[2], got[2]):
        if gr is None:
            assert gg is None or torch.count_nonzero(gg) == 0
        else:
            torch.testing.assert_close(gg, gr, **TOL)


# ----------------------------------------------------------------------------- parity


@SETTINGS
@given(requests(), st.booleans())
def test_chunked_matches_math(case, weights):
    q, k, v, kw = case
    ref = _grads(_attend("math", weights), q, k, v, kw, weights)
    _check(ref, _grads(_attend("chunked", weights), q, k, v, kw, weights))


@SETTINGS
@given(requests(), st.integers(1, 9), st.integers(1, 9), st.integers(1, 20), st.booleans())
def test_chunked_block_sizes_match_math(case, block_q, block_k, max_span, weights):
    """Tiny blocks exercise the multi-span (online softmax) path and partial-range masks."""
    q, k, v, kw = case
    ref = _grads(_attend("math", weights), q, k, v, kw, weights)

    def fn(q, k, v, kw):
        kw = dict(kw)
        for name in ("mask", "bias"):  # chunked_attention takes them already 4-D
            if name in kw:
                kw[name] = kw[name].reshape((1,) * (4 - kw[name].dim()) + tuple(kw[name].shape))
        return chunked_attention(q, k, v, return_weights=weights, block_q=block_q,
                                 block_k=block_k, max_span=max_span, **kw)

    _check(ref, _grads(fn, q, k, v, kw, weights))


@SETTINGS
@given(requests())
def test_sdpa_matches_math(case):
    q, k, v, kw = case
    kw.pop("score_mod", None)
    kw.pop("mask_mod", None)
    ref = _grads(_attend("math", False), q, k, v, kw, False)
    _check(ref, _grads(_attend("sdpa", False), q, k, v, kw, False))


@SETTINGS
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(1, 30), st.integers(0, 99))
def test_sdpa_runs_plain_causal_as_is_causal(B, hkv, G, L, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, hkv * G, L, 8, generator=g, dtype=F64)
    k, v = (torch.randn(B, hkv, L, 8, generator=g, dtype=F64) for _ in range(2))
    kw = dict(mask_mod=masks.causal())
    _check(_grads(_attend("math", False), q, k, v, kw, False),
           _grads(_attend("sdpa", False), q, k, v, kw, False))


@SETTINGS
@given(requests())
def test_flex_matches_math_forward(case):
    q, k, v, kw = case
    with torch.no_grad():
        ref = attend(q, k, v, kernel="math", **kw).out
        got = attend(q, k, v, kernel="flex", **kw).out
    torch.testing.assert_close(got, ref, **TOL)


@SETTINGS
@given(requests())
def test_auto_matches_math_and_says_which_ran(case):
    q, k, v, kw = case
    res = attend(q, k, v, **kw)
    assert res.kernel in ("sdpa", "chunked", "math")
    req = _validate(q, k, v, kw.get("mask"), kw.get("bias"), kw.get("score_mod"),
                    kw.get("mask_mod"), kw.get("scale"), 0.0, False)
    assert get_kernel(res.kernel).unsupported(req) is None
    torch.testing.assert_close(res.out, attend(q, k, v, kernel="math", **kw).out, **TOL)


# ----------------------------------------------------------------------------- targeted


@pytest.mark.parametrize("kernel", ["math", "sdpa", "chunked", "flex"])
def test_fully_masked_rows_give_zeros(kernel):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 8, generator=g, dtype=F64) for _ in range(3))
    mask = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    mask[0, 0, 2] = False
    mask[1, 0, :] = False  # a whole batch row with nothing to attend to
    weights = kernel in ("math", "chunked")
    with torch.no_grad():
        res = attend(q, k, v, mask=mask, kernel=kernel, return_weights=weights)
    assert torch.equal(res.out[0, :, 2], torch.zeros_like(res.out[0, :, 2]))
    assert torch.equal(res.out[1], torch.zeros_like(res.out[1]))
    assert not torch.isnan(res.out).any()
    if weights:
        assert torch.equal(res.weights[0, :, 2], torch.zeros_like(res.weights[0, :, 2]))
        torch.testing.assert_close(res.weights[0, :, 3].sum(-1), torch.ones(4, dtype=F64))


@pytest.mark.parametrize("kernel", ["math", "sdpa", "chunked"])
def test_fully_masked_rows_by_bias_give_zeros_and_finite_grads(kernel):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 5, 4, generator=g, dtype=F64, requires_grad=True) for _ in range(3))
    bias = torch.zeros(1, 1, 5, 5, dtype=F64)
    bias[..., 1, :] = float("-inf")
    out = attend(q, k, v, bias=bias, kernel=kernel).out
    out.sum().backward()
    assert torch.equal(out[:, :, 1], torch.zeros_like(out[:, :, 1]))
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()


@pytest.mark.parametrize("kernel", ["math", "sdpa", "chunked", "flex"])
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_gqa_equals_repeated_kv_heads(kernel, groups):
    g = torch.Generator().manual_seed(groups)
    q = torch.randn(2, 8, 7, 16, generator=g, dtype=F64)
    k = torch.randn(2, 8 // groups, 9, 16, generator=g, dtype=F64)
    v = torch.randn(2, 8 // groups, 9, 16, generator=g, dtype=F64)
    kw = dict(mask_mod=masks.causal(offset=2)) if kernel != "sdpa" else {}
    with torch.no_grad():
        gqa = attend(q, k, v, kernel=kernel, **kw).out
        mha = attend(q, k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1),
                     kernel="math", **kw).out
    torch.testing.assert_close(gqa, mha, **TOL)


def test_float32_kernels_agree():
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 4, 300, 32, generator=g) for _ in range(3))
    ref = attend(q, k, v, kernel="math", mask_mod=masks.causal()).out
    for kernel in ("chunked", "flex"):
        got = attend(q, k, v, kernel=kernel, mask_mod=masks.causal()).out
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    got = attend(q, k, v, kernel="sdpa", mask=masks.causal_mask(300)).out
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_bfloat16_chunked_runs_in_float32_and_casts_back():
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(1, 2, 40, 16, generator=g) for _ in range(3))
    ref = attend(q, k, v, kernel="math").out
    got = attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), kernel="chunked").out
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), ref, rtol=2e-2, atol=2e-2)
