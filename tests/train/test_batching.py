import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.train.batching import TokenBudgetBatcher, collate_pad


def _lengths(n=200, seed=0, hi=50):
    rng = random.Random(seed)
    return [rng.randint(1, hi) for _ in range(n)]


def _check_budget(batches, lengths, max_tokens):
    for b in batches:
        assert b, "empty batch"
        assert len(b) * max(max(lengths[i] for i in b), 1) <= max_tokens


def test_every_index_once_and_budget():
    lengths = _lengths()
    batcher = TokenBudgetBatcher(lengths, max_tokens=128)
    batches = list(batcher)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert len(batches) == len(batcher)
    _check_budget(batches, lengths, 128)


def test_batches_are_length_homogeneous_without_shuffle():
    lengths = [5, 1, 5, 1, 3, 3]
    batches = list(TokenBudgetBatcher(lengths, max_tokens=6, shuffle=False))
    # sorted by (length, index): 1, 3 | 4, 5 | 0 | 2
    assert batches == [[1, 3], [4, 5], [0], [2]]


def test_max_batch_size_caps_batches():
    batches = list(TokenBudgetBatcher([1] * 10, max_tokens=100, max_batch_size=3))
    assert max(len(b) for b in batches) == 3
    assert sorted(i for b in batches for i in b) == list(range(10))


def test_same_seed_and_epoch_same_order_different_epoch_differs():
    lengths = _lengths()
    a = TokenBudgetBatcher(lengths, max_tokens=128, seed=3)
    b = TokenBudgetBatcher(lengths, max_tokens=128, seed=3)
    assert list(a) == list(b)  # both now at epoch 1
    a.set_epoch(0)
    b.set_epoch(1)
    assert list(a) != list(b)


def test_epoch_advances_after_a_full_pass():
    batcher = TokenBudgetBatcher(_lengths(), max_tokens=128)
    first = list(batcher)
    assert batcher.state_dict() == {"epoch": 1, "position": 0}
    assert list(batcher) != first
    batcher.set_epoch(0)
    assert list(batcher) == first


def test_bucket_width_varies_batches_across_epochs_and_keeps_budget():
    lengths = _lengths(300)
    batcher = TokenBudgetBatcher(lengths, max_tokens=200, bucket_width=8)
    e0 = {tuple(sorted(b)) for b in batcher.epoch_batches(0)}
    e1 = {tuple(sorted(b)) for b in batcher.epoch_batches(1)}
    assert e0 != e1  # the contents of batches change, not only their order
    for epoch in range(3):
        batches = batcher.epoch_batches(epoch)
        _check_budget(batches, lengths, 200)
        assert sorted(i for b in batches for i in b) == list(range(300))
    assert batcher.epoch_batches(1) == batcher.epoch_batches(1)


@pytest.mark.parametrize("world_size", [1, 2])
def test_resume_mid_epoch_gives_exactly_the_remaining_batches(world_size):
    kwargs = dict(max_tokens=128, seed=7, bucket_width=4, world_size=world_size)
    lengths = _lengths()
    full = TokenBudgetBatcher(lengths, **kwargs)
    full.set_epoch(2)
    expected = list(full)

    run = TokenBudgetBatcher(lengths, **kwargs)
    run.set_epoch(2)
    it = iter(run)
    seen = [next(it) for _ in range(5)]
    state = run.state_dict()
    assert state == {"epoch": 2, "position": 5}

    resumed = TokenBudgetBatcher(lengths, **kwargs)
    resumed.load_state_dict(state)
    assert seen + list(resumed) == expected
    # a fresh iterator over the same (interrupted) object continues too
    assert seen + list(run) == expected


def test_load_state_dict_rejects_bad_position():
    batcher = TokenBudgetBatcher([1, 2, 3], max_tokens=3)
    with pytest.raises(ValueError, match="position"):
        batcher.load_state_dict({"epoch": 0, "position": 99})


@pytest.mark.parametrize("drop_last", [False, True])
def test_two_ranks_cover_everything_with_equal_lengths(drop_last):
    lengths = _lengths(101)
    ranks = [
        TokenBudgetBatcher(lengths, max_tokens=60, rank=r, world_size=2, drop_last=drop_last)
        for r in range(2)
    ]
    per_rank = [list(b) for b in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == len(ranks[0]) == len(ranks[1])
    covered = {i for batches in per_rank for b in batches for i in b}
    all_batches = ranks[0].epoch_batches(0)
    assert len(all_batches) % 2 == 1  # so the padding / dropping path is exercised
    if drop_last:
        kept = all_batches[: len(all_batches) // 2 * 2]
        assert covered == {i for b in kept for i in b}
    else:
        assert covered == set(range(len(lengths)))
    # rank r takes batches r, r + 2, ... of the epoch order, padded from its start
    n = len(all_batches)
    order = all_batches[: n // 2 * 2] if drop_last else all_batches + all_batches[: n % 2]
    assert per_rank[0] == order[0::2] and per_rank[1] == order[1::2]


def test_oversize_example_raises_with_index_and_length():
    with pytest.raises(ValueError, match=r"example 2 has length 40 > max_tokens=32"):
        TokenBudgetBatcher([3, 4, 40, 5], max_tokens=32)


def test_allow_oversize_gives_a_batch_of_its_own():
    batches = list(TokenBudgetBatcher([3, 4, 40, 5], max_tokens=32, allow_oversize=True))
    assert [2] in batches
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3]


def test_collate_pad_shapes_and_mask():
    ids, mask = collate_pad([[5, 6, 7], [8], []], pad_id=0)
    assert ids.dtype == torch.long and mask.dtype == torch.bool
    assert ids.shape == mask.shape == (3, 3)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert mask.tolist() == [[True] * 3, [True, False, False], [False] * 3]
    ids_t, mask_t = collate_pad([torch.tensor([5, 6, 7]), torch.tensor([8])], pad_id=-1)
    assert ids_t.tolist() == [[5, 6, 7], [8, -1, -1]]
    assert mask_t.sum().item() == 4


def test_collate_pad_rejects_bad_input():
    with pytest.raises(ValueError):
        collate_pad([], pad_id=0)
    with pytest.raises(ValueError, match="1-D"):
        collate_pad([torch.zeros(2, 2)], pad_id=0)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 40), max_size=80),
    max_tokens=st.integers(40, 300),
    world_size=st.integers(1, 4),
    bucket_width=st.one_of(st.none(), st.integers(1, 10)),
    max_batch_size=st.one_of(st.none(), st.integers(1, 8)),
    epoch=st.integers(0, 5),
)
def test_property_budget_and_coverage(lengths, max_tokens, world_size, bucket_width,
                                      max_batch_size, epoch):
    ranks = [
        TokenBudgetBatcher(lengths, max_tokens, rank=r, world_size=world_size,
                           bucket_width=bucket_width, max_batch_size=max_batch_size)
        for r in range(world_size)
    ]
    per_rank = []
    for b in ranks:
        b.set_epoch(epoch)
        per_rank.append(list(b))
    assert len({len(batches) for batches in per_rank}) == 1
    flat = [batch for batches in per_rank for batch in batches]
    _check_budget(flat, lengths, max_tokens)
    if max_batch_size is not None:
        assert all(len(b) <= max_batch_size for b in flat)
    assert {i for b in flat for i in b} == set(range(len(lengths)))
    # world_size 1: every index exactly once
    whole = ranks[0].epoch_batches(epoch)
    assert sorted(i for b in whole for i in b) == list(range(len(lengths)))
