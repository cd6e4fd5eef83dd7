"""Bias-hook encodings through the kernel API: score_mod == materialised bias, gradients too."""

import warnings

import pytest
import torch

from attnlab.attention import attend
from attnlab.attention.masks import causal
from attnlab.attention.positions import create_position

F64 = torch.float64

ENCODINGS = {
    "alibi": dict(num_heads=4),
    "alibi-symmetric": dict(num_heads=4, symmetric=True),
    "relative": dict(num_heads=4, num_buckets=8, max_distance=10),
    "relative-causal": dict(num_heads=4, num_buckets=8, max_distance=10, bidirectional=False),
}


def make(key):
    pe = create_position(key.split("-")[0], **ENCODINGS[key]).double()
    if "relative" in key:  # a nonzero table, so the test has teeth
        torch.nn.init.normal_(pe.table.weight, generator=torch.Generator().manual_seed(3))
    return pe


def qkv(Lq, Lk, Hkv=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 4, Lq, 8, dtype=F64, generator=g)
    k = torch.randn(2, Hkv, Lk, 8, dtype=F64, generator=g)
    v = torch.randn(2, Hkv, Lk, 8, dtype=F64, generator=g)
    return q, k, v


@pytest.mark.parametrize("kernel", ["math", "chunked"])
@pytest.mark.parametrize("key", list(ENCODINGS))
def test_score_mod_equals_bias(key, kernel):
    pe = make(key)
    Lq, Lk = 13, 29
    off = Lk - Lq  # cached decoding: queries are the last Lq positions
    q, k, v = qkv(Lq, Lk)
    kw = dict(mask_mod=causal(off), return_weights=True)
    a = attend(q, k, v, score_mod=pe.score_mod(off), kernel=kernel, **kw)
    b = attend(q, k, v, bias=pe.bias(Lq, Lk, off), kernel="math", **kw)
    torch.testing.assert_close(a.out, b.out, rtol=0, atol=1e-10)
    torch.testing.assert_close(a.weights, b.weights, rtol=0, atol=1e-10)


@pytest.mark.parametrize("key", list(ENCODINGS))
def test_torch_flex_attention_accepts_score_mod(key):
    """FlexAttention calls score_mod with 0-dim indices under vmap (eager mode on CPU)."""
    flex_attention = pytest.importorskip("torch.nn.attention.flex_attention").flex_attention
    pe = make(key)
    q, k, v = qkv(5, 7, Hkv=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = flex_attention(q, k, v, score_mod=pe.score_mod(2))
    ref = attend(q, k, v, bias=pe.bias(5, 7, 2), kernel="math").out
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_table_gradient_through_score_mod(bidirectional):
    q, k, v = qkv(6, 11)
    grads = []
    for path in ("score_mod", "bias"):
        pe = create_position("relative", num_heads=4, num_buckets=8, max_distance=10,
                             bidirectional=bidirectional).double()
        torch.nn.init.normal_(pe.table.weight, generator=torch.Generator().manual_seed(3))
        kw = {"score_mod": pe.score_mod(5)} if path == "score_mod" else {"bias": pe.bias(6, 11, 5)}
        out = attend(q, k, v, kernel="math", **kw).out
        (out * torch.linspace(-1, 1, out.numel(), dtype=F64).view_as(out)).sum().backward()
        grads.append(pe.table.weight.grad)
    assert grads[0] is not None and grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-10)



def _chunked_vs_math(key, q_requires_grad):
    """Chunked with many small blocks (score_mod sees offset index ranges) against math with
    the materialised bias: outputs, and for ``relative`` the table's gradient."""
    from attnlab.attention import chunked_attention

    q0, k, v = qkv(13, 29)
    blocks = dict(block_q=4, block_k=8, max_span=8)
    results = []
    for path in ("chunked", "math"):
        pe = make(key)
        q = q0.clone().requires_grad_(q_requires_grad)
        if path == "chunked":
            out, _ = chunked_attention(q, k, v, score_mod=pe.score_mod(16), **blocks)
        else:
            out = attend(q, k, v, bias=pe.bias(13, 29, 16), kernel="math").out
        grad = None
        if key.startswith("relative"):
            (out * torch.linspace(-1, 1, out.numel(), dtype=F64).view_as(out)).sum().backward()
            grad = pe.table.weight.grad
        results.append((out.detach(), grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=1e-10)
    if key.startswith("relative"):
        torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=1e-10)


@pytest.mark.parametrize("key", list(ENCODINGS))
def test_chunked_small_blocks(key):
    _chunked_vs_math(key, q_requires_grad=True)


def test_chunked_table_gradient_when_only_the_table_trains():
    _chunked_vs_math("relative", q_requires_grad=False)
