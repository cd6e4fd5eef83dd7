"""Shared fixtures of the model tests."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Model tests run tiny matmuls on one thread (see tests/conftest.py)."""


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 1,797 real 8x8 digits, shuffled (seed 0): (x_train, y_train, x_test, y_test),
    x (N, 1, 8, 8) in [0, 1], 1,400 for training and 397 held out."""
    from sklearn.datasets import load_digits

    d = load_digits()  # values 0..16
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    y = torch.tensor(d.target)  # (N,)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:1400], y[:1400], x[1400:], y[1400:]
