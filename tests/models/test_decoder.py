"""The GPT-style decoder: registry preset, shapes, causality, padding, positions, tying, the
cache, save/load, and that it learns a toy task."""


import pytest
import torch
import torch.nn.functional as F

from attnlab.attention import LayerCaches
from attnlab.models import ConfigError, create, get_config, load_pretrained, model_names
from attnlab.models.decoder import CausalLMOutput, Decoder, DecoderConfig


def _tiny(**kw) -> Decoder:
    torch.manual_seed(0)
    return create("decoder", **{"vocab_size": 50, "d_model": 32, "ffn_dim": 64, **kw}).eval()


def test_registered_with_a_tiny_preset():
    assert {"decoder", "gpt2-small"} <= set(model_names())
    model = create("decoder")
    cfg = model.config
    assert isinstance(model, Decoder) and isinstance(cfg, DecoderConfig) and cfg.family == "decoder"
    assert (cfg.vocab_size, cfg.d_model, cfg.num_layers, cfg.num_heads) == (1000, 64, 2, 4)
    assert sum(p.numel() for p in model.parameters()) < 250_000
    g = get_config("gpt2-small")
    assert (g.vocab_size, g.d_model, g.num_layers, g.num_heads, g.max_len) == (50257, 768, 12, 12, 1024)
    assert len(create("decoder", num_layers=3).blocks) == 3


@pytest.mark.parametrize("kw, msg", [
    (dict(num_layer=3), "num_layers"),
    (dict(d_model=30), "divisible"),
    (dict(position="relative"), "position"),
    (dict(num_kv_heads=3), "num_kv_heads"),
    (dict(norm="batchnorm"), "norm"),
])
def test_bad_config_raises(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        create("decoder", **kw)


def test_forward_shapes_and_attentions():
    model = _tiny()
    ids = torch.randint(0, 50, (2, 7))
    out = model(input_ids=ids, output_attentions=True, output_hidden_states=True)
    assert isinstance(out, CausalLMOutput) and out.logits.shape == (2, 7, 50)
    assert len(out.attentions) == 2 and all(a.shape == (2, 4, 7, 7) for a in out.attentions)
    for a in out.attentions:
        torch.testing.assert_close(a.sum(-1), torch.ones(2, 4, 7))
        assert (a.triu(1) == 0).all()  # causal: no weight on future keys
    assert len(out.hidden_states) == 3 and torch.equal(out.hidden_states[-1], out.last_hidden_state)
    assert model(ids).attentions is None and model(ids).cache is None


def test_causal_future_tokens_do_not_change_past_logits():
    model = _tiny()
    ids = torch.randint(0, 50, (2, 8))
    changed = ids.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 50
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


@pytest.mark.parametrize("position", ["learned", "sinusoidal", "rope", "alibi"])
def test_left_padding_gives_the_unpadded_logits(position):
    model = _tiny(position=position)
    ids = torch.randint(0, 50, (1, 6))
    padded = torch.cat([torch.full((1, 3), 7), ids], dim=1)  # (1, 9)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        torch.testing.assert_close(model(padded, attention_mask=mask).logits[:, 3:], model(ids).logits,
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kw", [
    {}, {"position": "rope", "num_kv_heads": 2}, {"norm": "rmsnorm", "activation": "swiglu"},
])
def test_cache_step_by_step_equals_full_pass(kw):
    model = _tiny(**kw)
    ids = torch.randint(0, 50, (2, 9))
    cache = model.new_cache()
    assert isinstance(cache, LayerCaches) and len(cache) == 2
    with torch.no_grad():
        full = model(ids).logits  # (2, 9, 50)
        parts = [model(ids[:, :4], cache=cache).logits]
        parts += [model(ids[:, t:t + 1], cache=cache).logits for t in range(4, 9)]
    assert cache.length == 9
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_tied_and_untied_heads():
    tied = _tiny()
    assert tied.lm_head.weight is tied.embed.token.weight
    untied = _tiny(tie_embeddings=False)
    assert untied.lm_head.weight is not untied.embed.token.weight
    n_tied = sum(p.numel() for p in tied.parameters())
    assert sum(p.numel() for p in untied.parameters()) == n_tied + 50 * 32


def test_save_and_load_round_trip_keeps_the_tie(tmp_path):
    model = _tiny()
    model.save_pretrained(tmp_path)
    back = load_pretrained(tmp_path)
    assert isinstance(back, Decoder) and back.lm_head.weight is back.embed.token.weight
    ids = torch.randint(0, 50, (2, 5))
    assert torch.equal(model(ids).logits, back(ids).logits)
    assert torch.equal(model.generate(ids, max_new_tokens=6), back.generate(ids, max_new_tokens=6))


def test_bad_inputs_raise():
    model = _tiny()
    with pytest.raises(ValueError, match=r"\(B, n\)"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask"):
        model(torch.zeros(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(1, 129, dtype=torch.long))  # the preset has 128 positions


def test_learns_to_copy():
    """A sequence, a separator, the same sequence again: the loss on the copy falls by at least
    half within 150 steps (a step budget, not a time budget)."""
    torch.manual_seed(0)
    V, K = 16, 6
    model = create("decoder", vocab_size=V, d_model=64, num_layers=2, num_heads=4, ffn_dim=128, max_len=32).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def batch(n=32):
        a = torch.randint(2, V, (n, K))  # (n, K)
        return torch.cat([a, torch.ones(n, 1, dtype=torch.long), a], dim=1)  # (n, 2K + 1); 1 = separator

    def step():
        x = batch()
        logits = model(x[:, :-1]).logits  # (n, 2K, V)
        loss = F.cross_entropy(logits[:, K:].reshape(-1, V), x[:, K + 1:].reshape(-1))  # the copy only
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    first = sum(step() for _ in range(3)) / 3
    recent = [first] * 5
    for _ in range(150):
        recent = recent[1:] + [step()]
        if sum(recent) / 5 < first / 2:
            break
    assert sum(recent) / 5 < first / 2, (first, recent)
