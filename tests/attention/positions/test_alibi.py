"""ALiBi slopes against the paper's reference code, and score_mod against bias()."""

import math

import pytest
import torch
from torch.func import vmap

from attnlab.attention.masks import index_grid
from attnlab.attention.positions import alibi_slopes, create_position


def vmapped(score_mod):
    """Nest vmaps over kv_idx, q_idx, h, b as FlexAttention does: each call sees 0-dim indices."""
    fn = score_mod
    for i in (4, 3, 2, 1):
        fn = vmap(fn, in_dims=(0,) + tuple(0 if j == i else None for j in range(1, 5)))
    return fn


def get_slopes(n):
    """Transcribed from the paper's code, github.com/ofirpress/attention_with_linear_biases."""

    def get_slopes_power_of_2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        ratio = start
        return [start * ratio**i for i in range(n)]

    if math.log2(n).is_integer():
        return get_slopes_power_of_2(n)
    else:
        closest_power_of_2 = 2 ** math.floor(math.log2(n))
        return (
            get_slopes_power_of_2(closest_power_of_2)
            + get_slopes(2 * closest_power_of_2)[0::2][: n - closest_power_of_2]
        )


def test_slopes_8_heads():
    assert alibi_slopes(8) == [2.0**-i for i in range(1, 9)]
    pe = create_position("alibi", num_heads=8)
    assert pe.slopes.tolist() == [2.0**-i for i in range(1, 9)]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6, 12, 16, 24, 33])
def test_slopes_match_paper(n):
    assert alibi_slopes(n) == pytest.approx(get_slopes(n), rel=1e-14, abs=0)
    pe = create_position("alibi", num_heads=n)
    assert pe.slopes.tolist() == pytest.approx(get_slopes(n), rel=1e-7)


def test_slopes_are_a_fixed_buffer():
    pe = create_position("alibi", num_heads=4)
    assert not list(pe.parameters())
    assert "slopes" in dict(pe.named_buffers())


def reference_bias(slopes, Lq, Lk, q_offset, symmetric):
    out = torch.zeros(1, len(slopes), Lq, Lk, dtype=torch.float64)
    for h, m in enumerate(slopes):
        for i in range(Lq):
            for j in range(Lk):
                d = j - (i + q_offset)
                out[0, h, i, j] = -m * abs(d) if symmetric else m * d
    return out


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("q_offset", [0, 3])
def test_bias_and_score_mod(symmetric, q_offset):
    H, Lq, Lk = 6, 4, 9
    pe = create_position("alibi", num_heads=H, symmetric=symmetric).double()
    bias = pe.bias(Lq, Lk, q_offset)
    assert bias.shape == (1, H, Lq, Lk) and bias.dtype == torch.float64
    ref = reference_bias(get_slopes(H), Lq, Lk, q_offset, symmetric)
    torch.testing.assert_close(bias, ref, rtol=1e-14, atol=0)

    score = torch.randn(2, H, Lq, Lk, dtype=torch.float64)
    out = pe.score_mod(q_offset)(score, *index_grid(2, H, Lq, Lk))
    assert torch.equal(out, score + bias)


def test_score_mod_blockwise_and_under_vmap():
    """As the chunked kernel (offset blocks) and FlexAttention (0-dim indices, vmap) call it."""
    H, Lq, Lk, off = 4, 6, 10, 4
    pe = create_position("alibi", num_heads=H).double()
    full = pe.bias(Lq, Lk, off)
    mod = pe.score_mod(off)
    zeros = torch.zeros(1, H, 2, 3, dtype=torch.float64)
    block = mod(zeros, *index_grid(1, H, 2, 3, q_start=3, kv_start=5))
    assert torch.equal(block, full[:, :, 3:5, 5:8])

    fn = vmapped(mod)
    b, h, q, kv = (torch.arange(n) for n in (1, H, Lq, Lk))
    out = fn(torch.zeros(1, H, Lq, Lk, dtype=torch.float64), b, h, q, kv)
    assert torch.equal(out, full)


def test_default_float32_matches_float64_closely():
    pe32 = create_position("alibi", num_heads=12)
    pe64 = create_position("alibi", num_heads=12).double()
    torch.testing.assert_close(pe32.bias(5, 5).double(), pe64.bias(5, 5), rtol=1e-6, atol=0)
