"""Shared fixtures of the explain tests."""

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Explain tests run tiny matmuls on one thread (see tests/conftest.py)."""
