"""Every registered model, tiny: forward, backward, attention shapes, exact save/load round trip;
and the registry's errors."""

import dataclasses

import pytest
import torch

from attnlab.models import ConfigError, create, get_config, load_pretrained, model_names
from attnlab.models.registry import config_class

NAMES = model_names()


def _tiny(name):
    cfg = get_config(name)
    return cfg.replace(**type(cfg).tiny())


def _main(out):
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward(name):
    torch.manual_seed(0)
    cfg = _tiny(name)
    model = cfg.build().train()
    inputs = cfg.example_inputs(batch_size=2, seq_len=6)
    out = model(**inputs)
    y = _main(out)
    assert torch.isfinite(y).all()
    # token models give one row per position; sequence and image classifiers give (B, num_classes)
    assert y.shape[:2] == (2, 6) if y.dim() == 3 else y.shape[0] == 2
    outputs = [getattr(out, f.name) for f in dataclasses.fields(out)]  # every tensor output (pooler too)
    sum(t.square().mean() for t in outputs if isinstance(t, torch.Tensor)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reached {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_output_attentions_and_hidden_states(name):
    cfg = _tiny(name)
    model = cfg.build().eval()
    inputs = cfg.example_inputs(batch_size=2, seq_len=6)
    if hasattr(cfg, "attention_shapes"):  # maps not (B, H, L, L) per layer: ViT, CBAM, RNNs
        _check_declared_attentions(cfg, model, inputs)
        return
    out = model(**inputs, output_attentions=True, output_hidden_states=True)
    n, H = cfg.num_layers, cfg.num_heads
    assert len(out.attentions) == n and len(out.hidden_states) == n + 1
    for w in out.attentions:
        assert w.shape == (2, H, 6, 6)
        torch.testing.assert_close(w.sum(-1), torch.ones(2, H, 6))
    mask = inputs.get("attention_mask")
    if mask is not None:  # padding keys get no weight
        pad = ~mask.bool()[:, None, None, :].expand_as(out.attentions[0])
        assert all((w[pad] == 0).all() for w in out.attentions)
    main = _main(model(**inputs))
    if main.dim() == 3:  # the last hidden state itself (a classifier returns logits instead)
        torch.testing.assert_close(out.hidden_states[-1], main)


def _check_declared_attentions(cfg, model, inputs):
    """Families whose maps are not per-layer (B, H, L, L) token self-attention declare their
    shapes (``cfg.attention_shapes``) and whether rows are distributions (``attention_normalised``)."""
    out = model(**inputs, output_attentions=True)
    assert [tuple(w.shape) for w in out.attentions] == cfg.attention_shapes(batch_size=2, seq_len=6)
    for w in out.attentions:
        assert ((w >= 0) & (w <= 1)).all()
        if cfg.attention_normalised:
            torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))
    mask = inputs.get("attention_mask")
    if mask is not None:  # padding keys (the last axis) get no weight
        pad = ~mask.bool()
        assert all((w.movedim(-1, 0)[pad.T] == 0).all() for w in out.attentions)
    torch.testing.assert_close(_main(out), _main(model(**inputs)))


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip_is_exact(name, tmp_path):
    torch.manual_seed(0)
    cfg = _tiny(name)
    model = cfg.build().eval()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    back = load_pretrained(tmp_path)
    assert type(back) is type(model) and back.config == model.config and not back.training
    sd, sd2 = model.state_dict(), back.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    inputs = cfg.example_inputs()
    assert torch.equal(_main(model(**inputs)), _main(back(**inputs)))


def test_presets_are_what_they_say():
    assert {"encoder-tiny", "minilm-l6", "bert-base"} <= set(NAMES)
    cfg = get_config("minilm-l6")
    assert (cfg.d_model, cfg.num_layers, cfg.num_heads, cfg.ffn_dim) == (384, 6, 12, 1536)
    m = create("encoder-tiny", num_layers=3)
    assert len(m.layers) == 3 and m.config.num_layers == 3


def test_unknown_override_names_the_nearest_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'num_layer'; did you mean 'num_layers'\?"):
        create("encoder-tiny", num_layer=3)
    with pytest.raises(ConfigError, match="unknown config key 'zzz'; valid keys: vocab_size"):
        create("encoder-tiny", zzz=1)


def test_one_config_error_type():
    import attnlab.config
    from attnlab.models.checkpoint import CheckpointConfigError, CheckpointError

    assert ConfigError is attnlab.config.ConfigError and issubclass(ConfigError, ValueError)
    assert CheckpointConfigError.__mro__[1:3] == (CheckpointError, ConfigError)
    with pytest.raises(attnlab.config.ConfigError):  # a bad model and a bad override alike
        create("encoder-tiyn")
    with pytest.raises(attnlab.config.ConfigError):
        create("encoder-tiny", num_layer=3)


def test_unknown_model_and_bad_values():
    with pytest.raises(ValueError, match=r"unknown model 'encoder-tiyn' \(did you mean 'encoder-tiny'\?\)"):
        create("encoder-tiyn")
    with pytest.raises(ConfigError, match="d_model=30 is not divisible by num_heads=4"):
        create("encoder-tiny", d_model=30)
    with pytest.raises(ConfigError, match="activation='mish' is not one of"):
        create("encoder-tiny", activation="mish")
    with pytest.raises(ConfigError, match="unknown config key 'hidden_size'"):
        config_class("encoder").from_dict({**dataclasses.asdict(get_config("encoder-tiny")), "hidden_size": 3})
