"""TransformerBlock: post-norm against Hugging Face's BertLayer and a manual computation,
pre-norm against a manual computation, cross-attention, caches and attention weights."""

import math

import pytest
import torch

from attnlab.attention import KVCache, masks
from attnlab.layers import BlockOutput, TransformerBlock

DT = torch.float64
TOL = dict(atol=1e-10, rtol=1e-10)


def _block(seed=0, **kw):
    torch.manual_seed(seed)
    b = TransformerBlock(16, 4, 32, **kw).to(DT).eval()
    with torch.no_grad():  # make norms and biases non-trivial
        for p in b.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return b


def _lin(layer, x):
    return x @ layer.weight.T + layer.bias


def _ln(norm, x):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def _mha(attn, q_in, kv_in, keep=None):
    """Multi-head attention by hand: (B, Lq, E), (B, Lk, E), keep (B, 1, Lq|1, Lk) bool."""
    B, Lq, E = q_in.shape
    H = attn.num_heads
    D = E // H

    def heads(t):
        return t.view(B, -1, H, D).transpose(1, 2)  # (B, H, L, D)

    q, k, v = heads(_lin(attn.q_proj, q_in)), heads(_lin(attn.k_proj, kv_in)), heads(_lin(attn.v_proj, kv_in))
    s = q @ k.transpose(-1, -2) / math.sqrt(D)  # (B, H, Lq, Lk)
    if keep is not None:
        s = s.masked_fill(~keep, float("-inf"))
    w = s.softmax(-1)
    o = (w @ v).transpose(1, 2).reshape(B, Lq, E)
    return _lin(attn.out_proj, o), w


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _ffn(ff, x):
    return _lin(ff.down, _gelu(_lin(ff.up, x)))


def test_post_norm_matches_manual():
    b = _block(norm_first=False, eps=1e-12)
    x = torch.randn(2, 5, 16, dtype=DT)
    keep = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    out = b(x, mask=keep[:, None, None, :], output_attentions=True)
    a, w = _mha(b.self_attn, x, x, keep[:, None, None, :])
    h = _ln(b.attn_norm, x + a)
    ref = _ln(b.ffn_norm, h + _ffn(b.ffn, h))
    assert isinstance(out, BlockOutput) and out.cross_attention is None
    torch.testing.assert_close(out.hidden, ref, **TOL)
    torch.testing.assert_close(out.self_attention, w, **TOL)
    assert (out.self_attention[0, :, :, 3:] == 0).all()


def test_pre_norm_matches_manual():
    b = _block(norm_first=True)
    x = torch.randn(2, 6, 16, dtype=DT)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()[None, None]
    out = b(x, causal=True, output_attentions=True)
    a, w = _mha(b.self_attn, _ln(b.attn_norm, x), _ln(b.attn_norm, x), causal)
    h = x + a
    ref = h + _ffn(b.ffn, _ln(b.ffn_norm, h))
    torch.testing.assert_close(out.hidden, ref, **TOL)
    torch.testing.assert_close(out.self_attention, w, **TOL)


def test_post_norm_matches_hf_bert_layer():
    transformers = pytest.importorskip("transformers")
    from transformers.models.bert.modeling_bert import BertLayer

    cfg = transformers.BertConfig(hidden_size=16, num_attention_heads=4, intermediate_size=32,
                                  hidden_act="gelu", layer_norm_eps=1e-12, attn_implementation="eager")
    torch.manual_seed(0)
    hf = BertLayer(cfg).to(DT).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(0.2 * torch.randn_like(p))
    b = _block(norm_first=False, eps=1e-12)
    pairs = {
        "self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key",
        "self_attn.v_proj": "attention.self.value", "self_attn.out_proj": "attention.output.dense",
        "attn_norm": "attention.output.LayerNorm", "ffn.up": "intermediate.dense", "ffn.down": "output.dense",
        "ffn_norm": "output.LayerNorm",
    }
    hsd = hf.state_dict()
    b.load_state_dict({f"{ours}.{p}": hsd[f"{theirs}.{p}"] for ours, theirs in pairs.items() for p in ("weight", "bias")})
    x = torch.randn(2, 5, 16, dtype=DT)
    pad = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    ext = torch.zeros(2, 1, 1, 5, dtype=DT).masked_fill(~pad[:, None, None, :], torch.finfo(DT).min)
    with torch.no_grad():
        ref = hf(x, attention_mask=ext)
    ref = ref[0] if isinstance(ref, tuple) else ref
    out = b(x, mask=pad[:, None, None, :])
    torch.testing.assert_close(out.hidden, ref, **TOL)


@pytest.mark.parametrize("kernel", ["auto", "math", "chunked", "sdpa"])
def test_kernels_agree(kernel):
    x = torch.randn(2, 5, 16, dtype=DT)
    ref = _block(kernel="math")(x, causal=True).hidden
    out = _block(kernel=kernel)(x, causal=True).hidden
    torch.testing.assert_close(out, ref, **TOL)


@pytest.mark.parametrize("kernel", ["auto", "chunked", "math"])
def test_weights_on_any_weight_kernel(kernel):
    x = torch.randn(2, 5, 16, dtype=DT)
    ref = _block(kernel="math")(x, mask_mod=masks.sliding_window(1), output_attentions=True).self_attention
    w = _block(kernel=kernel)(x, mask_mod=masks.sliding_window(1), output_attentions=True).self_attention
    torch.testing.assert_close(w, ref, **TOL)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 5, dtype=DT), **TOL)


def test_cross_attention_matches_manual():
    b = _block(norm_first=True, cross_attention=True)
    x, mem = torch.randn(2, 4, 16, dtype=DT), torch.randn(2, 7, 16, dtype=DT)
    mpad = torch.ones(2, 7, dtype=torch.bool)
    mpad[1, 5:] = False
    out = b(x, memory=mem, memory_mask=mpad, causal=True, output_attentions=True)
    causal = torch.ones(4, 4, dtype=torch.bool).tril()[None, None]
    a, _ = _mha(b.self_attn, _ln(b.attn_norm, x), _ln(b.attn_norm, x), causal)
    h = x + a
    c, wc = _mha(b.cross_attn, _ln(b.cross_norm, h), mem, mpad[:, None, None, :])
    h = h + c
    ref = h + _ffn(b.ffn, _ln(b.ffn_norm, h))
    torch.testing.assert_close(out.hidden, ref, **TOL)
    torch.testing.assert_close(out.cross_attention, wc, **TOL)
    assert out.cross_attention.shape == (2, 4, 4, 7) and (out.cross_attention[1, ..., 5:] == 0).all()


@pytest.mark.parametrize("norm_first", [True, False])
def test_incremental_decoding_with_caches_equals_full_pass(norm_first):
    b = _block(norm_first=norm_first, cross_attention=True, num_kv_heads=2, norm="rmsnorm",
               activation="swiglu", position="rope")
    x, mem = torch.randn(2, 6, 16, dtype=DT), torch.randn(2, 3, 16, dtype=DT)
    full = b(x, memory=mem, causal=True).hidden
    cache, cross = KVCache(), KVCache(static=True)
    steps = [b(x[:, t:t + 1], memory=mem if t == 0 else None, causal=True, cache=cache, cross_cache=cross).hidden
             for t in range(6)]
    torch.testing.assert_close(torch.cat(steps, 1), full, **TOL)
    assert cache.length == 6 and cross.length == 3


def test_dropout_only_in_training():
    b = _block(dropout=0.5, attn_dropout=0.5)
    x = torch.randn(2, 5, 16, dtype=DT)
    torch.testing.assert_close(b(x).hidden, b(x).hidden)
    b.train()
    assert not torch.allclose(b(x).hidden, b(x).hidden)


def test_errors():
    b = _block()
    with pytest.raises(ValueError, match="no cross-attention"):
        b(torch.randn(1, 2, 16, dtype=DT), memory=torch.randn(1, 2, 16, dtype=DT))
    with pytest.raises(ValueError, match=r"x must be \(B, L, d_model=16\)"):
        b(torch.randn(2, 8, dtype=DT))
    c = _block(cross_attention=True)
    with pytest.raises(ValueError, match="needs memory="):
        c(torch.randn(1, 2, 16, dtype=DT))
    with pytest.raises(ValueError, match=r"memory_mask must be \(B, Lm\)"):
        c(torch.randn(1, 2, 16, dtype=DT), memory=torch.randn(1, 3, 16, dtype=DT),
          memory_mask=torch.ones(1, 4, dtype=torch.bool))


def test_backward_reaches_every_parameter():
    b = _block(cross_attention=True, activation="swiglu", norm="rmsnorm")
    b(torch.randn(2, 3, 16, dtype=DT), memory=torch.randn(2, 4, 16, dtype=DT)).hidden.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in b.parameters())


def test_weights_from_a_kernel_without_weights_fall_back_visibly():
    x = torch.randn(2, 5, 16, dtype=DT)
    ref = _block(kernel="math")(x, causal=True, output_attentions=True)
    with pytest.warns(UserWarning, match="kernel 'sdpa' cannot return attention weights; .* runs 'chunked'"):
        out = _block(kernel="sdpa")(x, causal=True, output_attentions=True)
    torch.testing.assert_close(out.self_attention, ref.self_attention, **TOL)
    torch.testing.assert_close(out.hidden, ref.hidden, **TOL)
