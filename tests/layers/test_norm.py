"""LayerNorm and RMSNorm against their formulas; the norm registry."""

import pytest
import torch
from torch import nn

from attnlab.layers import LayerNorm, RMSNorm, create_norm, norm_names

DT = torch.float64


def _randomize(m):
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))
    return m


def test_layernorm_matches_formula_and_torch():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 8, dtype=DT) * 3 + 1
    ln = _randomize(LayerNorm(8, eps=1e-12).to(DT))
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased, as every transformer uses
    ref = (x - mean) / torch.sqrt(var + 1e-12) * ln.weight + ln.bias
    torch.testing.assert_close(ln(x), ref, atol=1e-12, rtol=1e-12)
    tln = nn.LayerNorm(8, eps=1e-12, dtype=DT)
    tln.load_state_dict(ln.state_dict())
    torch.testing.assert_close(ln(x), tln(x), atol=1e-12, rtol=1e-12)


def test_layernorm_without_bias():
    ln = LayerNorm(4, bias=False)
    assert ln.bias is None and [n for n, _ in ln.named_parameters()] == ["weight"]
    y = ln(torch.randn(2, 4))
    torch.testing.assert_close(y.mean(-1), torch.zeros(2), atol=1e-6, rtol=0)


def test_rmsnorm_matches_formula():
    torch.manual_seed(1)
    x = torch.randn(2, 7, 6, dtype=DT)
    rms = _randomize(RMSNorm(6, eps=1e-6).to(DT))
    ref = x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + 1e-6) * rms.weight
    torch.testing.assert_close(rms(x), ref, atol=1e-12, rtol=1e-12)
    assert [n for n, _ in rms.named_parameters()] == ["weight"]


def test_rmsnorm_matches_torch_rmsnorm():
    x = torch.randn(4, 10)
    ours = _randomize(RMSNorm(10, eps=1e-5))
    ref = nn.RMSNorm(10, eps=1e-5)
    ref.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x), ref(x))


def test_rmsnorm_half_precision_computes_in_float32():
    x = (torch.randn(2, 16) * 300).to(torch.bfloat16)
    y = RMSNorm(16).to(torch.bfloat16)(x)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    ref = x.float() / torch.sqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(y.float(), ref, atol=2e-2, rtol=2e-2)


def test_registry():
    assert {"layernorm", "rmsnorm"} <= set(norm_names())
    assert isinstance(create_norm("rmsnorm", 4, 1e-3), RMSNorm)
    assert create_norm("layernorm", 4, 1e-3).eps == 1e-3
    custom = create_norm(lambda dim, eps: nn.Identity(), 4)  # a factory is a part, injected
    assert isinstance(custom, nn.Identity)
    with pytest.raises(ValueError, match="unknown norm 'batchnorm'.*layernorm"):
        create_norm("batchnorm", 4)
