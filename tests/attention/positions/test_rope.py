"""RoPE against two independent references: complex multiplication (RoFormer/GPT-J pairing)
and Hugging Face Llama's rotate_half formula (GPT-NeoX pairing)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.attention.positions import create_position

F64 = torch.float64


def ref_complex(x, pos, base=10000.0):
    """RoFormer eq. (34): pairs (2i, 2i+1) as complex numbers, times exp(i * pos * theta_i)."""
    D = x.shape[-1]
    theta = base ** (-torch.arange(0, D, 2, dtype=F64) / D)  # (D/2,)
    angle = pos.to(F64)[..., None] * theta  # (L, D/2) or (B, L, D/2)
    if pos.dim() == 2:
        angle = angle[:, None]
    z = torch.view_as_complex(x.to(F64).reshape(*x.shape[:-1], D // 2, 2).contiguous())
    z = z * torch.polar(torch.ones_like(angle), angle)
    return torch.view_as_real(z).reshape(x.shape)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def ref_hf(x, pos, base=10000.0):
    """transformers' LlamaRotaryEmbedding + apply_rotary_pos_emb, in float64."""
    dim = x.shape[-1]
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(F64) / dim))
    freqs = pos.to(F64)[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    if pos.dim() == 2:
        cos, sin = cos[:, None], sin[:, None]  # unsqueeze_dim=1
    return x * cos + rotate_half(x) * sin


@pytest.mark.parametrize("interleaved,ref", [(True, ref_complex), (False, ref_hf)])
@pytest.mark.parametrize("base", [10000.0, 500.0])
def test_matches_reference(interleaved, ref, base):
    torch.manual_seed(0)
    pe = create_position("rope", head_dim=8, base=base, interleaved=interleaved)
    q = torch.randn(2, 4, 5, 8, dtype=F64)
    k = torch.randn(2, 2, 7, 8, dtype=F64)  # grouped-query: fewer KV heads
    q_pos = torch.arange(3, 8)
    k_pos = torch.tensor([0, 1, 2, 100, 4, 5, 300])
    qr, kr = pe.rotate(q, k, q_pos, k_pos)
    assert qr.shape == q.shape and kr.shape == k.shape
    torch.testing.assert_close(qr, ref(q, q_pos, base), rtol=0, atol=1e-12)
    torch.testing.assert_close(kr, ref(k, k_pos, base), rtol=0, atol=1e-12)


def test_the_two_pairings_differ():
    x = torch.randn(1, 1, 3, 8, dtype=F64)
    pos = torch.arange(3)
    a = create_position("rope", head_dim=8, interleaved=False).rotate_one(x, pos)
    b = create_position("rope", head_dim=8, interleaved=True).rotate_one(x, pos)
    assert not torch.allclose(a, b)


@settings(max_examples=30, deadline=None)
@given(
    m=st.integers(0, 2000), n=st.integers(0, 2000), shift=st.integers(0, 2000),
    interleaved=st.booleans(), seed=st.integers(0, 2**16),
)
def test_score_depends_only_on_distance(m, n, shift, interleaved, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 1, 1, 16, dtype=F64, generator=g)
    k = torch.randn(1, 1, 1, 16, dtype=F64, generator=g)
    pe = create_position("rope", head_dim=16, interleaved=interleaved)

    def score(qp, kp):
        qr, kr = pe.rotate(q, k, torch.tensor([qp]), torch.tensor([kp]))
        return (qr * kr).sum().item()

    assert score(m + shift, n + shift) == pytest.approx(score(m, n), abs=1e-9)


@pytest.mark.parametrize("interleaved", [False, True])
def test_partial_rotary(interleaved):
    torch.manual_seed(1)
    pe = create_position("rope", head_dim=10, rotary_dim=4, interleaved=interleaved)
    full = create_position("rope", head_dim=4, interleaved=interleaved)
    x = torch.randn(2, 3, 6, 10, dtype=F64)
    pos = torch.arange(6) * 7
    out = pe.rotate_one(x, pos)
    assert torch.equal(out[..., 4:], x[..., 4:])  # untouched
    torch.testing.assert_close(out[..., :4], full.rotate_one(x[..., :4], pos), rtol=0, atol=0)
    assert not torch.allclose(out[..., :4], x[..., :4])


@pytest.mark.parametrize("interleaved,ref", [(True, ref_complex), (False, ref_hf)])
def test_batched_positions(interleaved, ref):
    torch.manual_seed(2)
    pe = create_position("rope", head_dim=6, interleaved=interleaved)
    q = torch.randn(2, 3, 4, 6, dtype=F64)
    k = torch.randn(2, 1, 4, 6, dtype=F64)
    pos = torch.tensor([[0, 1, 2, 3], [7, 8, 9, 70]])
    qr, kr = pe.rotate(q, k, pos, pos)
    torch.testing.assert_close(qr, ref(q, pos), rtol=0, atol=1e-12)
    for b in range(2):  # each row as if alone, with (L,) positions
        alone = pe.rotate_one(k[b : b + 1], pos[b])
        torch.testing.assert_close(kr[b : b + 1], alone, rtol=0, atol=0)


def test_dtype_and_position_zero():
    pe = create_position("rope", head_dim=8)
    x = torch.randn(1, 2, 3, 8)
    out = pe.rotate_one(x, torch.tensor([0, 1, 2]))
    assert out.dtype == torch.float32
    assert torch.equal(out[:, :, 0], x[:, :, 0])  # position 0 is the identity
    ref = ref_hf(x.double(), torch.tensor([0, 1, 2]))
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    half = pe.rotate_one(x.to(torch.bfloat16), torch.tensor([0, 1, 2]))
    assert half.dtype == torch.bfloat16


def test_bad_arguments():
    with pytest.raises(ValueError, match="rotary_dim"):
        create_position("rope", head_dim=8, rotary_dim=3)
    with pytest.raises(ValueError, match="rotary_dim"):
        create_position("rope", head_dim=8, rotary_dim=10)
    pe = create_position("rope", head_dim=8)
    with pytest.raises(ValueError, match="expected"):
        pe.rotate_one(torch.zeros(1, 1, 2, 6), torch.arange(2))
    with pytest.raises(ValueError, match="positions must have shape"):
        pe.rotate_one(torch.zeros(1, 1, 2, 8), torch.arange(3))
