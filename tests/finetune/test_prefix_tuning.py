"""Prefix tuning: the MultiHeadAttention kv_prefix hook against a hand computation, masks,
positions and the KV cache; the method on a classifier (zero length is the base model)."""

import math

import pytest
import torch

from attnlab.attention import KVCache, MultiHeadAttention
from attnlab.finetune import FinetuneConfig, apply_finetune, merge
from attnlab.finetune.prefix import KVPrefix

DT = torch.float64


def _mha_with_prefix(P=3, seed=0, **kw):
    torch.manual_seed(seed)
    mha = MultiHeadAttention(16, 4, **kw).to(DT).eval()
    mha.kv_prefix = KVPrefix(mha.num_kv_heads, mha.head_dim, P, std=0.5, dtype=DT)
    return mha


def _reference(mha, x, keep):
    """softmax(q [pk; k]^T / sqrt(D)) [pv; v], padding keys masked, prefix always visible."""
    B, L, _ = x.shape
    H, D = mha.num_heads, mha.head_dim
    heads = lambda t: t.view(B, L, H, D).transpose(1, 2)  # noqa: E731  (B, H, L, D)
    q, k, v = heads(mha.q_proj(x)), heads(mha.k_proj(x)), heads(mha.v_proj(x))
    pk, pv = mha.kv_prefix(B)  # (B, H, P, D)
    K, V = torch.cat([pk, k], 2), torch.cat([pv, v], 2)  # (B, H, P + L, D)
    scores = q @ K.transpose(-1, -2) / math.sqrt(D)  # (B, H, L, P + L)
    visible = torch.cat([torch.ones(B, pk.shape[2], dtype=torch.bool), keep], 1)  # (B, P + L)
    w = scores.masked_fill(~visible[:, None, None, :], float("-inf")).softmax(-1)
    out = mha.out_proj((w @ V).transpose(1, 2).reshape(B, L, H * D))
    return out, w[..., pk.shape[2]:]


@pytest.mark.parametrize("kernel", ["math", "chunked", "sdpa"])
def test_prefix_matches_hand_computation(kernel):
    mha = _mha_with_prefix()
    x = torch.randn(2, 5, 16, dtype=DT)
    keep = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)  # (B, L) real keys
    ref_out, ref_w = _reference(mha, x, keep)
    weights = kernel != "sdpa"  # sdpa cannot return weights
    res = mha(x, key_padding_mask=keep, kernel=kernel, return_weights=weights)
    torch.testing.assert_close(res.out, ref_out, atol=1e-10, rtol=1e-10)
    if weights:
        assert res.weights.shape == (2, 4, 5, 5)  # over the real keys only
        torch.testing.assert_close(res.weights, ref_w, atol=1e-10, rtol=1e-10)
        assert (res.weights.sum(-1) < 1 - 1e-6).all()  # the rest went to the prefix
        assert (res.weights[1, :, :, 3:] == 0).all()  # padding keys stay masked


def _hide_key_2(b, h, q_idx, kv_idx):
    return kv_idx != 2


def _boost_key_0(score, b, h, q_idx, kv_idx):
    return score + 3.0 * (kv_idx == 0)


@pytest.mark.parametrize("position", [None, "rope", "alibi", "relative"])
@pytest.mark.parametrize("mods", [False, True])
def test_prefix_leaves_real_key_scores_alone(position, mods):
    """Renormalised over the real keys, the weights are the base module's: the prefix adds
    columns without moving causality, padding, position biases or the mods on the real keys."""
    mha = _mha_with_prefix(position=position)
    x = torch.randn(2, 6, 16, dtype=DT)
    kw = dict(key_padding_mask=torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]], dtype=torch.bool), causal=True,
              return_weights=True, bias=torch.randn(6, 6, dtype=DT))
    if mods:  # both depend on absolute key indices, so a shift would show
        kw.update(mask_mod=_hide_key_2, score_mod=_boost_key_0)
    with_prefix = mha(x, **kw).weights
    prefix, mha.kv_prefix = mha.kv_prefix, None
    base = mha(x, **kw).weights
    torch.testing.assert_close(with_prefix / with_prefix.sum(-1, keepdim=True), base, atol=1e-10, rtol=1e-10)
    mha.kv_prefix = prefix
    assert torch.triu(with_prefix, diagonal=1).abs().max() == 0  # still causal over the real keys


@pytest.mark.parametrize("kw", [{}, {"position": "rope"}, {"position": "alibi"}, {"num_kv_heads": 2}])
def test_prefix_with_kv_cache_equals_full_causal_pass(kw):
    mha = _mha_with_prefix(**kw)
    x = torch.randn(2, 6, 16, dtype=DT)
    full = mha(x, causal=True).out
    cache = KVCache()
    steps = [mha(x[:, t:t + 1], causal=True, cache=cache).out for t in range(6)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-10, rtol=1e-10)
    assert cache.length == 6  # the cache holds the real keys only


def test_pruning_heads_under_a_prefix_is_refused():
    mha = _mha_with_prefix()
    with pytest.raises(ValueError, match="kv_prefix"):
        mha.prune_heads([1])


# ----------------------------------------------------------------------------- the method


def test_zero_length_prefix_is_exactly_the_base_model(build, batch):
    model = build()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    base = model.encoder(**inputs, output_attentions=True)
    apply_finetune(model, FinetuneConfig(method="prefix", prefix_length=0))
    out = model.encoder(**inputs, output_attentions=True)
    assert torch.equal(out.last_hidden_state, base.last_hidden_state)
    assert all(torch.equal(a, b) for a, b in zip(out.attentions, base.attentions))


def test_prefix_changes_outputs_and_gets_gradients(build, batch):
    model = build()
    base = model(**batch).logits
    apply_finetune(model, FinetuneConfig(method="prefix", prefix_length=4))
    out = model(**batch, output_attentions=True)
    assert not torch.allclose(out.logits, base, atol=1e-6)
    out.loss.backward()
    prefixes = [m.self_attn.kv_prefix for m in model.encoder.layers]
    assert all(p.key.grad.abs().sum() > 0 and p.value.grad.abs().sum() > 0 for p in prefixes)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        *(f"encoder.layers.{i}.self_attn.kv_prefix.{kv}" for i in range(2) for kv in ("key", "value")),
        "head.classifier.weight", "head.classifier.bias",
    }


def test_prefix_attentions_stay_over_the_real_keys(build, batch):
    model = build()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    base = model.encoder(**inputs, output_attentions=True).attentions[0]
    apply_finetune(model, FinetuneConfig(method="prefix", prefix_length=4))
    first = model.encoder(**inputs, output_attentions=True).attentions[0]  # (B, H, L, L)
    assert first.shape == base.shape == (4, 4, 8, 8)
    assert (first.sum(-1) < 1 - 1e-4).all()
    # layer 0 sees the same input as the base model: renormalised, its weights are the base's
    torch.testing.assert_close(first / first.sum(-1, keepdim=True), base, atol=1e-5, rtol=1e-5)


def test_prefix_cannot_merge(build):
    model = apply_finetune(build(), FinetuneConfig(method="prefix", prefix_length=2))
    with pytest.raises(ValueError, match="'prefix' cannot be merged"):
        merge(model)
