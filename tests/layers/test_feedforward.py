"""FeedForward: each activation against a manual computation with the same weights."""

import math

import pytest
import torch

from attnlab.layers import FeedForward, activation_names

DT = torch.float64


def _gelu_exact(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _silu(x):
    return x / (1 + torch.exp(-x))


PLAIN = {"relu": lambda x: x.clamp(min=0), "gelu": _gelu_exact, "gelu_tanh": _gelu_tanh, "silu": _silu}
GATED = {"swiglu": _silu, "geglu": _gelu_exact}


def _lin(layer, x):
    return x @ layer.weight.T + (0 if layer.bias is None else layer.bias)


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_plain_activations(name):
    torch.manual_seed(0)
    ff = FeedForward(6, 10, name).to(DT)
    x = torch.randn(2, 3, 6, dtype=DT)
    ref = _lin(ff.down, PLAIN[name](_lin(ff.up, x)))
    torch.testing.assert_close(ff(x), ref, atol=1e-12, rtol=1e-12)
    assert ff.gate is None


@pytest.mark.parametrize("name", sorted(GATED))
@pytest.mark.parametrize("bias", [True, False])
def test_gated_activations(name, bias):
    torch.manual_seed(0)
    ff = FeedForward(6, 10, name, bias=bias).to(DT)
    x = torch.randn(2, 3, 6, dtype=DT)
    ref = _lin(ff.down, GATED[name](_lin(ff.gate, x)) * _lin(ff.up, x))
    torch.testing.assert_close(ff(x), ref, atol=1e-12, rtol=1e-12)
    assert ff.gated and (ff.up.bias is None) == (not bias)


def test_gelu_variants_differ():
    x = torch.linspace(-3, 3, 101, dtype=DT)
    assert (_gelu_exact(x) - _gelu_tanh(x)).abs().max() > 1e-5  # so the tests above can tell them apart


def test_callable_activation_and_dropout():
    ff = FeedForward(4, 8, torch.tanh, dropout=0.5)
    x = torch.randn(3, 4)
    ff.eval()
    torch.testing.assert_close(ff(x), _lin(ff.down, torch.tanh(_lin(ff.up, x))))
    ff.train()
    torch.manual_seed(0)
    assert (ff(torch.randn(64, 4)) == 0).any()


def test_unknown_activation():
    assert {"relu", "gelu", "gelu_tanh", "swiglu"} <= set(activation_names())
    with pytest.raises(ValueError, match="unknown activation 'mish'.*gelu"):
        FeedForward(4, 8, "mish")
