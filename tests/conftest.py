"""Test-wide settings."""

import os

import pytest
import torch
from hypothesis import settings

# CI runs the property tests on a fixed set of examples, so a submission's result does not
# depend on the draw; locally every run draws new examples.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matmuls: one thread is faster than two, and far faster on a shared box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
