"""Sinusoidal positions against the paper's formula, computed with float64 loops."""

import math

import numpy as np
import pytest
import torch

from attnlab.attention.positions import create_position


def reference_pe(positions, d_model, base=10000.0):
    """Vaswani et al. 2017, §3.5, one entry at a time."""
    out = np.zeros((len(positions), d_model), dtype=np.float64)
    for r, pos in enumerate(positions):
        for j in range(d_model):
            two_i = j - (j % 2)
            angle = pos / base ** (two_i / d_model)
            out[r, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return out


@pytest.mark.parametrize("d_model", [1, 6, 7, 16])
def test_matches_formula(d_model):
    pe = create_position("sinusoidal", d_model=d_model)
    x = torch.zeros(2, 10, d_model, dtype=torch.float64)
    out = pe.embed(x)
    ref = reference_pe(range(10), d_model)
    assert out.shape == (2, 10, d_model)
    np.testing.assert_allclose(out[0].numpy(), ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out[1].numpy(), ref, rtol=0, atol=1e-12)


def test_large_positions_and_growth():
    pe = create_position("sinusoidal", d_model=8, base=500.0)
    positions = torch.tensor([0, 3, 63, 64, 1000, 5000])  # beyond any initial table
    out = pe.embed(torch.zeros(1, 6, 8, dtype=torch.float64), positions)
    ref = reference_pe(positions.tolist(), 8, base=500.0)
    np.testing.assert_allclose(out[0].numpy(), ref, rtol=0, atol=1e-9)


def test_batched_positions_and_adds_to_x():
    pe = create_position("sinusoidal", d_model=4)
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    positions = torch.tensor([[0, 1, 2], [5, 9, 7]])
    out = pe.embed(x, positions)
    for b in range(2):
        ref = reference_pe(positions[b].tolist(), 4)
        np.testing.assert_allclose((out[b] - x[b]).numpy(), ref, rtol=0, atol=1e-12)


def test_keeps_dtype():
    pe = create_position("sinusoidal", d_model=4)
    out = pe.embed(torch.zeros(1, 3, 4, dtype=torch.float32))
    assert out.dtype == torch.float32
    assert not list(pe.parameters()) and not pe.state_dict()


def test_bad_inputs():
    pe = create_position("sinusoidal", d_model=4)
    with pytest.raises(ValueError, match="x must be"):
        pe.embed(torch.zeros(1, 3, 5))
    with pytest.raises(ValueError, match="positions must have shape"):
        pe.embed(torch.zeros(1, 3, 4), torch.arange(4))
    with pytest.raises(ValueError, match=">= 0"):
        pe.embed(torch.zeros(1, 2, 4), torch.tensor([-1, 0]))
