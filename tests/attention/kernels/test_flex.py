"""The compiled FlexAttention path (the one the kernel uses by default), on one shape."""

import pytest
import torch
import torch._dynamo

from attnlab.attention import attend, masks


def test_compiled_flex_matches_math():
    pytest.importorskip("torch.nn.attention.flex_attention")
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 256, 32, generator=g)
    k, v = (torch.randn(1, 2, 256, 32, generator=g) for _ in range(2))
    kw = dict(mask_mod=masks.sliding_window(40), score_mod=lambda s, b, h, qi, ki: s - 0.01 * h)
    with torch.no_grad():
        try:
            got = attend(q, k, v, kernel="flex", **kw)
        except torch._dynamo.exc.BackendCompilerFailed as e:  # no C++ compiler, say
            pytest.skip(f"torch.compile(flex_attention) does not build on this machine: {e}")
        ref = attend(q, k, v, kernel="math", **kw).out
    assert got.kernel == "flex"
    torch.testing.assert_close(got.out, ref, rtol=1e-5, atol=1e-5)
