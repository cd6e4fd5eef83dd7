"""The positions registry and the hook contract, for every registered encoding."""

import pytest
import torch

from attnlab.attention.positions import (
    PositionalEncoding, create_position, position_names, register_position,
)

SMALL_KWARGS = {
    "sinusoidal": dict(d_model=8),
    "learned": dict(max_len=16, d_model=8),
    "rope": dict(head_dim=8),
    "alibi": dict(num_heads=2),
    "relative": dict(num_heads=2),
}


def test_names():
    assert position_names() == sorted(SMALL_KWARGS)


def test_unknown_name_lists_known():
    with pytest.raises(ValueError, match="unknown positional encoding 'nope'.*alibi.*sinusoidal"):
        create_position("nope")


@pytest.mark.parametrize("name", position_names())
def test_hooks_contract(name):
    pe = create_position(name, **SMALL_KWARGS[name])
    assert isinstance(pe, PositionalEncoding)
    assert pe.name == name
    assert pe.hooks and pe.hooks <= {"embed", "rotate", "bias"}
    x = torch.randn(1, 3, 8)
    q = torch.randn(1, 2, 3, 8)
    pos = torch.arange(3)
    calls = {
        "embed": lambda: pe.embed(x),
        "rotate": lambda: pe.rotate(q, q, pos, pos),
        "bias": lambda: pe.bias(3, 3),
    }
    for hook, call in calls.items():
        if hook in pe.hooks:
            call()
        else:
            with pytest.raises(NotImplementedError, match=f"no '{hook}' hook"):
                call()
    if "bias" not in pe.hooks:
        with pytest.raises(NotImplementedError):
            pe.score_mod()


def test_register_rejects_bad_classes():
    with pytest.raises(TypeError):
        register_position("x")(int)

    class NoHooks(PositionalEncoding):
        pass

    with pytest.raises(ValueError, match="hooks"):
        register_position("nohooks")(NoHooks)
    assert "nohooks" not in position_names()

    class Dup(PositionalEncoding):
        hooks = frozenset({"bias"})

    with pytest.raises(ValueError, match="already registered"):
        register_position("alibi")(Dup)
