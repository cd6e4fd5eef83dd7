"""Learned positions: a table lookup that refuses positions beyond max_len."""

import pytest
import torch

from attnlab.attention.positions import create_position


def test_adds_table_rows():
    pe = create_position("learned", max_len=10, d_model=4).double()
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(pe.embed(x), x + pe.table.weight[:3], rtol=0, atol=0)
    positions = torch.tensor([[1, 2, 9], [0, 0, 4]])
    out = pe.embed(x, positions)
    torch.testing.assert_close(out, x + pe.table.weight[positions], rtol=0, atol=0)


def test_beyond_max_len_raises():
    pe = create_position("learned", max_len=10, d_model=4)
    pe.embed(torch.zeros(1, 10, 4))  # positions 0..9 are fine
    with pytest.raises(ValueError, match=r"position 10 .*max_len=10"):
        pe.embed(torch.zeros(1, 11, 4))
    with pytest.raises(ValueError, match=r"position 37 .*max_len=10"):
        pe.embed(torch.zeros(1, 2, 4), torch.tensor([3, 37]))


def test_gradient_reaches_table():
    pe = create_position("learned", max_len=5, d_model=3)
    pe.embed(torch.zeros(1, 2, 3), torch.tensor([1, 3])).sum().backward()
    grad = pe.table.weight.grad
    assert grad[[1, 3]].eq(1).all() and grad[[0, 2, 4]].eq(0).all()
