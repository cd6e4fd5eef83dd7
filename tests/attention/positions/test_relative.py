"""T5 relative position bias against a transcription of Hugging Face T5."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import vmap

from attnlab.attention.masks import index_grid
from attnlab.attention.positions import create_position, relative_position_bucket


def vmapped(score_mod):
    """Nest vmaps over kv_idx, q_idx, h, b as FlexAttention does: each call sees 0-dim indices."""
    fn = score_mod
    for i in (4, 3, 2, 1):
        fn = vmap(fn, in_dims=(0,) + tuple(0 if j == i else None for j in range(1, 5)))
    return fn


def hf_relative_position_bucket(
    relative_position, bidirectional=True, num_buckets=32, max_distance=128
):
    """Transcribed from transformers' T5Attention._relative_position_bucket (modeling_t5.py)."""
    relative_buckets = 0
    if bidirectional:
        num_buckets //= 2
        relative_buckets += (relative_position > 0).to(torch.long) * num_buckets
        relative_position = torch.abs(relative_position)
    else:
        relative_position = -torch.min(relative_position, torch.zeros_like(relative_position))
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    relative_position_if_large = max_exact + (
        torch.log(relative_position.float() / max_exact)
        / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    ).to(torch.long)
    relative_position_if_large = torch.min(
        relative_position_if_large, torch.full_like(relative_position_if_large, num_buckets - 1)
    )
    relative_buckets += torch.where(is_small, relative_position, relative_position_if_large)
    return relative_buckets


def hf_compute_bias(table, query_length, key_length, bidirectional, num_buckets, max_distance,
                    past=0):
    """T5Attention.compute_bias, with the query positions starting at ``past``."""
    context_position = torch.arange(past, past + query_length, dtype=torch.long)[:, None]
    memory_position = torch.arange(key_length, dtype=torch.long)[None, :]
    relative_position = memory_position - context_position
    buckets = hf_relative_position_bucket(
        relative_position, bidirectional, num_buckets, max_distance
    )
    values = table(buckets)
    return values.permute([2, 0, 1]).unsqueeze(0)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 20), (16, 16), (6, 7)])
def test_bucket_matches_hf(bidirectional, num_buckets, max_distance):
    rel = torch.arange(-400, 401)
    ours = relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
    ref = hf_relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
    assert ours.dtype == torch.long
    assert torch.equal(ours, ref)
    assert int(ours.min()) >= 0 and int(ours.max()) < num_buckets


@settings(max_examples=40, deadline=None)
@given(rel=st.integers(-(10**6), 10**6), bidirectional=st.booleans())
def test_bucket_matches_hf_far(rel, bidirectional):
    r = torch.tensor([rel])
    ref = hf_relative_position_bucket(r, bidirectional)
    assert torch.equal(relative_position_bucket(r, bidirectional), ref)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("q_offset", [0, 5])
def test_bias_and_score_mod(bidirectional, q_offset):
    H, Lq, Lk, nb, md = 3, 7, 19, 8, 12
    pe = create_position("relative", num_heads=H, num_buckets=nb, max_distance=md,
                         bidirectional=bidirectional).double()
    bias = pe.bias(Lq, Lk, q_offset)
    assert bias.shape == (1, H, Lq, Lk)
    ref = hf_compute_bias(pe.table, Lq, Lk, bidirectional, nb, md, past=q_offset)
    assert torch.equal(bias, ref)

    score = torch.randn(2, H, Lq, Lk, dtype=torch.float64)
    out = pe.score_mod(q_offset)(score, *index_grid(2, H, Lq, Lk))
    assert torch.equal(out, score + bias)


def test_score_mod_blockwise_and_under_vmap():
    H, Lq, Lk, off = 2, 5, 9, 3
    pe = create_position("relative", num_heads=H, num_buckets=8, max_distance=6).double()
    full = pe.bias(Lq, Lk, off)
    mod = pe.score_mod(off)
    zeros = torch.zeros(1, H, 3, 4, dtype=torch.float64)
    block = mod(zeros, *index_grid(1, H, 3, 4, q_start=2, kv_start=5))
    assert torch.equal(block, full[:, :, 2:5, 5:9])

    fn = vmapped(mod)
    b, h, q, kv = (torch.arange(n) for n in (1, H, Lq, Lk))
    assert torch.equal(fn(torch.zeros(1, H, Lq, Lk, dtype=torch.float64), b, h, q, kv), full)


def test_table_is_learned():
    pe = create_position("relative", num_heads=4)
    assert [n for n, _ in pe.named_parameters()] == ["table.weight"]
    assert pe.table.weight.shape == (32, 4)
