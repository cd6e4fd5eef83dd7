"""Tiny settings of the dates recipe: seconds, not minutes."""

import pytest

TINY_DATES = [
    "data.n_train=600", "data.n_val=40", "data.n_test=40", "model.d_model=32", "model.layers=1",
    "model.heads=2", "model.ffn_dim=64", "train.max_tokens=1024", "train.log_every=5",
    "train.progress=lines", "decode.batch_size=64",
]


@pytest.fixture
def tiny_dates():
    return list(TINY_DATES)
