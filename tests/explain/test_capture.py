"""capture() on the tiny encoder, decoder and encoder-decoder: shapes, row sums, kernels put
back, and gradients checked by central finite differences on the weights themselves.

The finite-difference check perturbs the attention weights inside the reference kernel (its
output is linear in them: out(W + εD) = out(W) + εD·v), so it tests d target / d weights with
no help from capture(): a gradient taken from weights outside the output's graph (the chunked
kernel's) or paired with the wrong layer fails it.
"""

import importlib

import pytest
import torch
import torch.nn.functional as F

from attnlab.attention import MultiHeadAttention
from attnlab.attention.kernels.math import repeat_kv
from attnlab.explain import capture
from attnlab.models import create

math_kernel = importlib.import_module("attnlab.attention.kernels.math")


def build(name, **overrides):
    torch.manual_seed(0)
    model = create(name, **overrides).double().eval()
    inputs = model.config.example_inputs(batch_size=2, seq_len=5)  # row 0 padded from the middle
    return model, inputs


def last_token_logprob(out):
    return F.log_softmax(out.logits[1, -1], -1)[7]


CASES = {
    "encoder-tiny": lambda out: out.pooler_output[1].pow(2).sum() + out.last_hidden_state[0, 1, 3],
    "decoder": last_token_logprob,
    "encoder-decoder-tiny": last_token_logprob,
}


def call_order(cap):
    """Grads in the order the model calls its attention: encoder, then per decoder layer self, cross."""
    if cap.cross_grads is None:
        return list(cap.self_grads)
    pairs = [g for s, c in zip(cap.self_grads, cap.cross_grads) for g in (s, c)]
    return list(cap.encoder_grads or ()) + pairs


def perturbed_target(model, inputs, target, monkeypatch, call, D, eps):
    """The target with the weights of the ``call``-th attention call moved by eps·D."""
    original, seen = math_kernel.math_attention, [0]

    def perturbed(q, k, v, **kw):
        out, w = original(q, k, v, **kw)
        if seen[0] == call:
            out = out + eps * D @ repeat_kv(v, q.shape[1] // v.shape[1])  # (B, H, Lq, Dv)
        seen[0] += 1
        return out, w

    monkeypatch.setattr(math_kernel, "math_attention", perturbed)
    for m in model.modules():
        if isinstance(m, MultiHeadAttention):
            m.kernel = "math"
    try:
        with torch.no_grad():
            return float(target(model(**inputs)))
    finally:
        monkeypatch.setattr(math_kernel, "math_attention", original)
        for m in model.modules():
            if isinstance(m, MultiHeadAttention):
                m.kernel = "auto"


@pytest.mark.parametrize("name", list(CASES))
def test_maps_shapes_and_rows(name):
    model, inputs = build(name)
    cap = capture(model, inputs, tokens=list("abcde"))
    c = model.config
    n_self = c.num_decoder_layers if name == "encoder-decoder-tiny" else c.num_layers
    assert len(cap.self_attentions) == n_self and cap.tokens == list("abcde")
    assert cap.self_grads is None and cap.target is None
    maps = list(cap.self_attentions)
    if name == "encoder-decoder-tiny":
        assert len(cap.cross_attentions) == c.num_decoder_layers
        assert len(cap.encoder_attentions) == c.num_encoder_layers
        maps += list(cap.cross_attentions) + list(cap.encoder_attentions)
    else:
        assert cap.cross_attentions is None and cap.encoder_attentions is None
    for a in maps:
        assert a.shape == (2, c.num_heads, 5, 5) and not a.requires_grad
        torch.testing.assert_close(a.sum(-1), torch.ones(2, c.num_heads, 5, dtype=a.dtype))
    if name != "encoder-tiny":  # causal: nothing above the diagonal
        assert cap.self_attentions[0].triu(1).abs().max() == 0
    assert cap.maps("self", example=1)[0].shape == (c.num_heads, 5, 5)
    with pytest.raises(ValueError, match="pass target"):
        cap.grads("self")


@pytest.mark.parametrize("name", list(CASES))
def test_grads_match_finite_differences(name, monkeypatch):
    model, inputs = build(name)
    target = CASES[name]
    cap = capture(model, inputs, target=target)
    assert all(m.kernel == "auto" for m in model.modules() if isinstance(m, MultiHeadAttention))
    grads = call_order(cap)
    assert len(grads) == (6 if name == "encoder-decoder-tiny" else 2)
    gen = torch.Generator().manual_seed(1)
    eps = 1e-5
    for call, g in enumerate(grads):
        D = torch.randn(g.shape, generator=gen, dtype=torch.float64)  # (B, H, Lq, Lk)
        fd = (perturbed_target(model, inputs, target, monkeypatch, call, D, eps)
              - perturbed_target(model, inputs, target, monkeypatch, call, D, -eps)) / (2 * eps)
        analytic = float((g * D).sum())
        assert abs(analytic) > 1e-6, f"call {call}: a vanishing gradient proves nothing"
        assert analytic == pytest.approx(fd, rel=1e-6, abs=1e-9), f"call {call}"
    assert float(cap.target) == pytest.approx(float(target(cap.output)), rel=1e-12)


def test_fused_kernel_weights_carry_no_gradient():
    """Why capture switches kernels: the chunked kernel's weights are not what the output used."""
    model, inputs = build("encoder-tiny")
    out = model(**inputs, output_attentions=True)
    grads = torch.autograd.grad(CASES["encoder-tiny"](out), list(out.attentions), allow_unused=True)
    assert all(g is None for g in grads)


def test_restores_kernels_and_frozen_parameters_even_on_error():
    model, inputs = build("encoder-tiny", kernel="chunked")
    model.requires_grad_(False)
    cap = capture(model, inputs, target=CASES["encoder-tiny"])
    assert all(g.abs().sum() > 0 for g in cap.self_grads)
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())

    def broken(out):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        capture(model, inputs, target=broken)
    with pytest.raises(ValueError, match="scalar"):
        capture(model, inputs, target=lambda out: out.last_hidden_state)
    assert all(m.kernel == "chunked" for m in model.modules() if isinstance(m, MultiHeadAttention))
    assert all(not p.requires_grad for p in model.parameters())


def test_grads_are_per_example():
    """A target on example 1 leaves example 0's gradients at zero (no mixing across the batch)."""
    model, inputs = build("decoder")
    cap = capture(model, inputs, target=last_token_logprob)
    for g in cap.self_grads:
        assert g[0].abs().max() == 0 and g[1].abs().max() > 0
    assert cap.grads("self", example=1)[0].shape == cap.maps("self", example=1)[0].shape


@pytest.mark.parametrize("name", ["vit-tiny", "cnn-attention-tiny", "rnn-attention-tiny"])
def test_capture_on_image_and_rnn_families(name):
    """ViT (patch self-attention), the CBAM CNN (spatial maps per stage) and the RNN (weights over
    encoder states) are captured too; gradients for the ViT and the CNN."""
    from attnlab.models import get_config

    model = create(name).eval()
    inputs = get_config(name).example_inputs()
    cap = capture(model, inputs)
    assert cap.self_attentions and all(a.shape[0] == 2 for a in cap.self_attentions)
    if name == "vit-tiny":  # (B, H, N, N) over patches + [CLS], rows sum to 1
        torch.testing.assert_close(cap.self_attentions[0].sum(-1), torch.ones_like(cap.self_attentions[0][..., 0]))
    if name == "rnn-attention-tiny":  # (B, T, S): each decoder step's weights over the source
        a = cap.self_attentions[0]
        torch.testing.assert_close(a.sum(-1), torch.ones_like(a[..., 0]))
        return
    cap = capture(model, inputs, target=lambda out: out.logits[0, 0])
    assert all(g.shape == a.shape for g, a in zip(cap.self_grads, cap.self_attentions))
    assert any(bool(g.abs().sum() > 0) for g in cap.self_grads)


@pytest.mark.filterwarnings("ignore:kernel '(flex|sdpa)' cannot return attention weights")
@pytest.mark.parametrize("kernel", ["chunked", "sdpa", "flex"])
@pytest.mark.parametrize("name", list(CASES))
def test_every_kernel_gives_the_reference_maps(name, kernel):
    """Without a target capture runs the model's own kernel: each returns the reference (math)
    kernel's weights, every layer and kind (a kernel that cannot return weights falls back)."""
    ref = capture(build(name, kernel="math")[0], build(name)[1])
    model, inputs = build(name, kernel=kernel)
    cap = capture(model, inputs)
    for kind in ("self", "cross", "encoder"):
        got, want = getattr(cap, f"{kind}_attentions"), getattr(ref, f"{kind}_attentions")
        assert (got is None) == (want is None)
        for a, b in zip(got or (), want or ()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
