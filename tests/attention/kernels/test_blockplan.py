"""The block plan: skipped blocks are truly empty, unmasked spans truly full, nothing is lost."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.attention import masks
from attnlab.attention.kernels.blockplan import plan_blocks


def _covered(plan, Lq, Lk):
    """(Lq, Lk) codes: 0 skipped, 1 computed without mask, 2 computed with the mask."""
    grid = torch.zeros(Lq, Lk, dtype=torch.long)
    for blk in plan:
        for sp in blk.spans:
            assert (grid[blk.qs:blk.qe, sp.ks:sp.ke] == 0).all(), "a block is computed twice"
            grid[blk.qs:blk.qe, sp.ks:sp.ke] = 1
            for a, b in sp.partial:
                assert sp.ks <= a < b <= sp.ke
                grid[blk.qs:blk.qe, a:b] = 2
    return grid


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 9), st.integers(1, 9),
       st.integers(1, 30),
       st.sampled_from(["causal", "window", "padding", "prefix", "and_or", "random", "none"]))
def test_plan_is_exact(Lq, Lk, block_q, block_k, max_span, kind):
    B, H = 2, 3
    mask, mask_mod = None, None
    if kind == "causal":
        mask_mod = masks.causal(offset=Lk - Lq)
    elif kind == "window":
        mask_mod = masks.sliding_window(2)
    elif kind == "padding":
        mask_mod = masks.padding(torch.tensor([Lk // 2, Lk // 3]))
    elif kind == "prefix":
        mask_mod = masks.prefix_lm(torch.tensor([3, 7]))
    elif kind == "and_or":
        mask_mod = masks.or_masks(masks.and_masks(masks.causal(1), masks.sliding_window(3)),
                                  masks.prefix_lm(2))
    elif kind == "random":
        mask = torch.rand(B, 1, Lq, Lk) > 0.8
    plan = plan_blocks(mask, mask_mod, B, H, Lq, Lk, block_q, block_k, max_span, None)
    grid = _covered(plan, Lq, Lk)
    keep = torch.ones(B, H, Lq, Lk, dtype=torch.bool)
    if mask is not None:
        keep = keep & mask
    if mask_mod is not None:
        keep = keep & masks.materialize(mask_mod, B, H, Lq, Lk)
    anywhere = keep.any(0).any(0)  # (Lq, Lk): allowed for some batch row or head
    everywhere = keep.all(0).all(0)
    assert not (anywhere & (grid == 0)).any(), "an allowed position was skipped"
    assert everywhere[grid == 1].all(), "a masked position was computed without the mask"
    for sp in (s for blk in plan for s in blk.spans):
        assert sp.ke - sp.ks <= max(max_span, block_k)


def test_block_kinds_are_known_for_built_in_masks():
    for mm in (masks.causal(), masks.sliding_window(4), masks.padding(torch.tensor([3])),
               masks.prefix_lm(2), masks.and_masks(masks.causal(), masks.sliding_window(2))):
        assert hasattr(mm, "block_kinds")
    assert not hasattr(masks.block_diagonal(torch.arange(4)), "block_kinds")  # evaluated instead


def test_sliding_window_skips_most_of_the_grid():
    N, w = 4096, 256
    plan = plan_blocks(None, masks.sliding_window(w), 1, 8, N, N, 128, 128, 4096, None)
    computed = sum((b.qe - b.qs) * (s.ke - s.ks) for b in plan for s in b.spans)
    assert computed / N**2 < 0.16  # (128 + 2*256 keys per query block of 128) / 4096
    assert all(len(b.spans) == 1 for b in plan)


def test_causal_is_one_span_per_block_with_the_diagonal_masked():
    plan = plan_blocks(None, masks.causal(), 1, 1, 512, 512, 128, 128, 4096, None)
    for i, blk in enumerate(plan):
        (sp,) = blk.spans
        assert (sp.ks, sp.ke) == (0, blk.qe)
        assert sp.partial == ((blk.qs, blk.qe),)
