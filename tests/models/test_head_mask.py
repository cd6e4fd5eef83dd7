"""Head masks (Michel et al. 2019) and head pruning: MultiHeadAttention, blocks and models."""

import copy

import pytest
import torch

from attnlab.attention.multihead import MultiHeadAttention
from attnlab.models import create, load_pretrained
from attnlab.models.decoder import Decoder, DecoderConfig

DT = torch.float64
TOL = dict(atol=1e-10, rtol=1e-10)


def _mha(**kw):
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 4, **kw).to(DT).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))  # non-zero biases
    return m


@pytest.mark.parametrize("kernel", ["math", "chunked", "sdpa", "auto"])
def test_mask_of_ones_is_no_mask_and_zero_head_is_manual(kernel):
    m = _mha()
    x = torch.randn(2, 5, 16, dtype=DT)
    ref = m(x, kernel=kernel).out
    assert torch.equal(m(x, kernel=kernel, head_mask=torch.ones(4, dtype=DT)).out, ref)
    hm = torch.tensor([1.0, 0.0, 1.0, 0.5], dtype=DT)
    got = m(x, kernel=kernel, head_mask=hm).out
    manual = _mha()
    with torch.no_grad():  # scale each head's slice of the output projection's input columns
        w = manual.out_proj.weight.view(16, 4, 4)  # (E, H, D)
        w.mul_(hm[None, :, None])
    torch.testing.assert_close(got, manual(x, kernel=kernel).out, **TOL)


def test_per_example_mask_and_weights_unchanged():
    m = _mha()
    x = torch.randn(2, 5, 16, dtype=DT)
    hm = torch.tensor([[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]], dtype=DT)  # (B, H)
    res = m(x, head_mask=hm, return_weights=True, kernel="math")
    for b in range(2):
        torch.testing.assert_close(res.out[b], m(x[b:b + 1], head_mask=hm[b], kernel="math").out[0], **TOL)
    torch.testing.assert_close(res.weights, m(x, return_weights=True, kernel="math").weights, **TOL)
    with pytest.raises(ValueError, match="head_mask must be"):
        m(x, head_mask=torch.ones(3, dtype=DT))


def test_gradient_wrt_mask_matches_finite_difference():
    enc = create("encoder-tiny").to(DT).eval()
    ids = torch.randint(1, 97, (2, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 4, dtype=DT, requires_grad=True)

    def f(hm):
        return enc(ids, head_mask=hm).last_hidden_state.pow(2).sum()

    (g,) = torch.autograd.grad(f(mask), mask)
    eps = 1e-6
    with torch.no_grad():
        for i, h in [(0, 0), (0, 3), (1, 2)]:
            d = torch.zeros(2, 4, dtype=DT)
            d[i, h] = eps
            fd = (f(mask + d) - f(mask - d)) / (2 * eps)
            torch.testing.assert_close(g[i, h], fd, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-10)])
def test_encoder_prune_equals_mask_and_round_trips(dtype, tol, tmp_path):
    torch.manual_seed(0)
    enc = create("encoder-tiny").to(dtype).eval()
    ids = torch.randint(1, 97, (3, 7))
    am = torch.ones(3, 7, dtype=torch.long)
    am[0, 4:] = 0
    heads = {0: [1], 1: [0, 3]}
    hm = torch.ones(2, 4, dtype=dtype)
    for layer, hs in heads.items():
        hm[layer, hs] = 0
    masked = enc(ids, attention_mask=am, head_mask=hm)
    n_before = sum(p.numel() for p in enc.parameters())
    enc.prune_heads(heads)
    assert enc.config.pruned_heads == heads
    assert enc.layers[1].self_attn.num_heads == 2 and enc.layers[1].self_attn.out_proj.in_features == 16
    assert sum(p.numel() for p in enc.parameters()) < n_before
    pruned = enc(ids, attention_mask=am, output_attentions=True)
    torch.testing.assert_close(pruned.last_hidden_state, masked.last_hidden_state, atol=tol, rtol=tol)
    assert pruned.attentions[1].shape == (3, 2, 7, 7)
    # A (num_layers, H) mask in original head numbering still applies after pruning.
    hm2 = hm.clone()
    hm2[0, 2] = 0
    more = copy.deepcopy(enc)
    more.prune_heads({0: [2]})
    torch.testing.assert_close(enc(ids, attention_mask=am, head_mask=hm2).last_hidden_state,
                               more(ids, attention_mask=am).last_hidden_state, atol=tol, rtol=tol)
    enc.save_pretrained(tmp_path)
    back = load_pretrained(tmp_path)
    assert back.config.pruned_heads == heads
    torch.testing.assert_close(back.to(dtype)(ids, attention_mask=am).last_hidden_state,
                               pruned.last_hidden_state, atol=tol, rtol=tol)


def test_decoder_prune_and_refusals():
    torch.manual_seed(0)
    cfg = DecoderConfig(**DecoderConfig.tiny(), dropout=0.0, attn_dropout=0.0)
    dec = Decoder(cfg).to(DT).eval()
    ids = torch.randint(0, 97, (2, 6))
    hm = torch.ones(2, 4, dtype=DT)
    hm[1, 2] = 0
    masked = dec(ids, head_mask=hm).logits
    dec.prune_heads({1: [2]})
    torch.testing.assert_close(dec(ids).logits, masked, **TOL)
    gqa = Decoder(DecoderConfig(**DecoderConfig.tiny(), num_kv_heads=2))
    with pytest.raises(ValueError, match="grouped-query"):
        gqa.prune_heads({0: [1]})
    with pytest.raises(ValueError, match="every head"):
        dec.prune_heads({0: [0, 1, 2, 3]})


def test_encoder_decoder_head_masks():
    torch.manual_seed(0)
    model = create("encoder-decoder-tiny").to(DT).eval()
    inputs = model.config.example_inputs()
    ref = model(**inputs).logits
    ones = torch.ones(2, 4, dtype=DT)
    same = model(**inputs, head_mask=ones, decoder_head_mask=ones, cross_attn_head_mask=ones).logits
    assert torch.equal(same, ref)
    zero = ones.clone()
    zero[:, 1] = 0
    for key in ("head_mask", "decoder_head_mask", "cross_attn_head_mask"):
        assert not torch.allclose(model(**inputs, **{key: zero}).logits, ref)
