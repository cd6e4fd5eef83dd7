"""Mask helpers against plain Python loops."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.attention import masks


def _grid(mm, B, H, Lq, Lk):
    return masks.materialize(mm, B, H, Lq, Lk).expand(B, H, Lq, Lk)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(-3, 3), st.integers(0, 4), st.booleans())
def test_mask_mods_match_loops(Lq, Lk, offset, window, causal_window):
    g = _grid(masks.causal(offset), 1, 1, Lq, Lk)[0, 0]
    assert all(bool(g[i, j]) == (j <= i + offset) for i in range(Lq) for j in range(Lk))
    g = _grid(masks.sliding_window(window, causal=causal_window, offset=offset), 1, 1, Lq, Lk)[0, 0]
    for i in range(Lq):
        for j in range(Lk):
            d = i + offset - j
            assert bool(g[i, j]) == (d <= window and d >= (0 if causal_window else -window))
    g = _grid(masks.prefix_lm(window), 1, 1, Lq, Lk)[0, 0]
    assert all(bool(g[i, j]) == (j < window or j <= i) for i in range(Lq) for j in range(Lk))


def test_padding_and_block_diagonal():
    lengths = torch.tensor([2, 4])
    g = _grid(masks.padding(lengths), 2, 3, 3, 5)
    assert torch.equal(g, masks.padding_mask(lengths, 5).expand(2, 3, 3, 5))
    for b in range(2):
        assert g[b, 0, 0].tolist() == [j < int(lengths[b]) for j in range(5)]
    ids = torch.tensor([0, 0, 1, 1, 1, 2])
    g = _grid(masks.block_diagonal(ids), 1, 1, 6, 6)[0, 0]
    assert torch.equal(g, ids[:, None] == ids[None, :])


def test_compose_and_bias():
    a, b = masks.causal(), masks.sliding_window(1)
    ga, gb = _grid(a, 1, 1, 5, 5), _grid(b, 1, 1, 5, 5)
    assert torch.equal(_grid(masks.and_masks(a, b), 1, 1, 5, 5), ga & gb)
    assert torch.equal(_grid(masks.or_masks(a, b), 1, 1, 5, 5), ga | gb)
    bias = masks.mask_to_bias(ga, torch.float32)
    assert torch.equal(bias == 0, ga) and torch.isneginf(bias[~ga]).all()
    assert torch.equal(masks.causal_mask(3, 5), _grid(masks.causal(2), 1, 1, 3, 5)[0, 0])
