"""Rollout against an independent NumPy transcription of the paper, Chefer's rule on a
hand-worked example, and the small helpers and the registry."""

import numpy as np
import pytest
import torch

from attnlab.explain import (
    METHODS, attention_x_gradient, get_method, grad_rollout, grad_rollout_seq2seq, raw_attention,
    register_method, relevance_for, rollout,
)


def random_attention(rng, layers, heads, L, zero_rows=False):
    """layers x (H, L, L) row-stochastic float64 maps (softmax of random scores)."""
    s = rng.normal(size=(layers, heads, L, L)) * 2.0
    w = np.exp(s - s.max(-1, keepdims=True))
    return w / w.sum(-1, keepdims=True)  # (N, H, L, L)


def numpy_rollout(A, add_residual=True, fusion="mean"):
    """Abnar & Zuidema 2020, written from the paper: Ã_l = 0.5 W_att + 0.5 I (heads averaged),
    rows renormalised, rollout(l) = Ã_l · rollout(l - 1), rollout(0) = I."""
    L = A.shape[-1]
    R = np.eye(L)
    for layer in A:  # first layer first
        W = {"mean": layer.mean(0), "max": layer.max(0), "min": layer.min(0)}[fusion]
        if add_residual:
            W = 0.5 * W + 0.5 * np.eye(L)
        W = W / W.sum(1, keepdims=True)
        R = W @ R
    return R


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_rollout_matches_numpy_reference(seed, fusion):
    rng = np.random.default_rng(seed)
    layers, heads, L = rng.integers(1, 5), rng.integers(1, 5), rng.integers(5, 10)
    A = random_attention(rng, layers, heads, L)
    for add_residual in (True, False):
        got = rollout([torch.from_numpy(a) for a in A], add_residual=add_residual, head_fusion=fusion)
        assert got.dtype == torch.float64 and got.shape == (L, L)
        np.testing.assert_allclose(got.numpy(), numpy_rollout(A, add_residual, fusion), rtol=0, atol=1e-12)
        np.testing.assert_allclose(got.sum(-1).numpy(), np.ones(L), atol=1e-12)


def test_rollout_order_is_top_layer_last():
    """Â_2 · Â_1, not Â_1 · Â_2: with two different layers the order shows."""
    rng = np.random.default_rng(7)
    A = random_attention(rng, 2, 3, 5)
    forward = rollout(torch.from_numpy(A)).numpy()  # a stacked (N, H, L, L) tensor works too
    backward = rollout(torch.from_numpy(A[::-1].copy())).numpy()
    assert not np.allclose(forward, backward)
    np.testing.assert_allclose(forward, numpy_rollout(A), atol=1e-12)


def test_rollout_takes_a_batch_of_one_and_refuses_more():
    A = torch.from_numpy(random_attention(np.random.default_rng(1), 2, 2, 5))
    torch.testing.assert_close(rollout([a[None] for a in A]), rollout(A), rtol=0, atol=0)
    with pytest.raises(ValueError, match="pick one example"):
        rollout([torch.stack([a, a]) for a in A])
    with pytest.raises(ValueError, match="square"):
        rollout([torch.rand(2, 3, 4)])


# Chefer et al. 2021, by hand. Two layers, two heads, two tokens.
A1 = [[[0.6, 0.4], [0.3, 0.7]], [[0.5, 0.5], [1.0, 0.0]]]
G1 = [[[1.0, -2.0], [0.5, 2.0]], [[0.4, 0.2], [-1.0, 3.0]]]
#   head 0: G⊙A = [[0.6, -0.8], [0.15, 1.4]] -> (.)+ = [[0.6, 0], [0.15, 1.4]]
#   head 1: G⊙A = [[0.2, 0.1], [-1.0, 0.0]]  -> (.)+ = [[0.2, 0.1], [0, 0]]
#   Ā1 = mean = [[0.4, 0.05], [0.075, 0.7]];  R1 = I + Ā1·I = [[1.4, 0.05], [0.075, 1.7]]
A2 = [[[0.8, 0.2], [0.4, 0.6]], [[0.9, 0.1], [0.2, 0.8]]]
G2 = [[[0.5, 0.5], [1.0, -1.0]], [[-1.0, 2.0], [0.0, 0.5]]]
#   head 0: G⊙A = [[0.4, 0.1], [0.4, -0.6]]  -> [[0.4, 0.1], [0.4, 0]]
#   head 1: G⊙A = [[-0.9, 0.2], [0.0, 0.4]]  -> [[0, 0.2], [0, 0.4]]
#   Ā2 = [[0.2, 0.15], [0.2, 0.2]]
#   Ā2·R1 = [[0.2·1.4 + 0.15·0.075, 0.2·0.05 + 0.15·1.7], [0.2·1.4 + 0.2·0.075, 0.2·0.05 + 0.2·1.7]]
#         = [[0.29125, 0.265], [0.295, 0.35]]
#   R2 = R1 + Ā2·R1 = [[1.69125, 0.315], [0.37, 2.05]]
R1 = [[1.4, 0.05], [0.075, 1.7]]
R2 = [[1.69125, 0.315], [0.37, 2.05]]


def t(x):
    return torch.tensor(x, dtype=torch.float64)


def test_chefer_one_layer_by_hand():
    torch.testing.assert_close(grad_rollout([t(A1)], [t(G1)]), t(R1), rtol=0, atol=1e-15)


def test_chefer_two_layers_by_hand():
    torch.testing.assert_close(grad_rollout([t(A1), t(A2)], [t(G1), t(G2)]), t(R2), rtol=0, atol=1e-15)
    torch.testing.assert_close(METHODS["chefer"]([t(A1), t(A2)], [t(G1), t(G2)]), t(R2), rtol=0, atol=1e-15)


def test_chefer_needs_matching_grads():
    with pytest.raises(ValueError, match="needs gradients"):
        METHODS["chefer"]([t(A1)])
    with pytest.raises(ValueError, match="layer by layer"):
        grad_rollout([t(A1), t(A2)], [t(G1)])


# Chefer et al. 2021's encoder-decoder rules (eqs. 6, 7, 8-9, 10), by hand. One head, S = T = 2.
AE, GE = [[[0.5, 0.5], [0.25, 0.75]]], [[[1.0, -1.0], [2.0, 2.0]]]
#   encoder: (G⊙A)+ = [[0.5, 0], [0.5, 1.5]];  R_ss = I + Ā = [[1.5, 0], [0.5, 2.5]]
#   eqs. 8-9: R̂ = [[0.5, 0], [0.5, 1.5]], rows / (0.5, 2.0) = [[1, 0], [0.25, 0.75]]; R̄_ss = [[2, 0], [0.25, 1.75]]
AD, GD = [[[1.0, 0.0], [0.5, 0.5]]], [[[2.0, 0.0], [1.0, -1.0]]]
#   decoder self (causal): (G⊙A)+ = [[2, 0], [0.5, 0]];  R_tt = [[3, 0], [0.5, 1]];  R_ts = Ā·0 = 0
#   R̂_tt = [[2, 0], [0.5, 0]], rows / (2, 0.5) = [[1, 0], [1, 0]];  R̄_tt = [[2, 0], [1, 1]]
AC, GC = [[[0.2, 0.8], [0.6, 0.4]]], [[[1.0, 1.0], [-1.0, 2.0]]]
#   cross: (G⊙A)+ = [[0.2, 0.8], [0, 0.8]];  Ā·R̄_ss = [[0.6, 1.4], [0.2, 1.4]]
#   eq. 10: R_ts = 0 + R̄_ttᵀ·(Ā·R̄_ss) = [[2, 1], [0, 1]]·[[0.6, 1.4], [0.2, 1.4]] = [[1.4, 4.2], [0.2, 1.4]]
RTS1 = [[1.4, 4.2], [0.2, 1.4]]
#   a second decoder layer whose self-attention term is Ā = I and whose cross term is 0:
#   R_tt ← R_tt + I·R_tt = 2·R_tt, R_ts ← R_ts + I·R_ts = 2·R_ts (eq. 7), nothing from eq. 10
AD2, GD2 = [[[1.0, 0.0], [0.5, 0.5]]], [[[1.0, 0.0], [0.0, 2.0]]]
GC2 = [[[0.0, 0.0], [0.0, 0.0]]]


def test_chefer_encoder_decoder_by_hand():
    got = grad_rollout_seq2seq([t(AE)], [t(GE)], [t(AD)], [t(GD)], [t(AC)], [t(GC)])
    torch.testing.assert_close(got, t(RTS1), rtol=0, atol=1e-15)
    two = grad_rollout_seq2seq([t(AE)], [t(GE)], [t(AD), t(AD2)], [t(GD), t(GD2)], [t(AC), t(AC)], [t(GC), t(GC2)])
    torch.testing.assert_close(two, 2 * t(RTS1), rtol=0, atol=1e-14)


def test_chefer_encoder_decoder_against_numpy():
    """Random maps, 2 encoder and 3 decoder layers, 3 heads: an independent NumPy transcription."""
    rng = np.random.default_rng(0)
    S, T, H = 5, 4, 3
    enc, dec = random_attention(rng, 2, H, S), random_attention(rng, 3, H, T) * np.tril(np.ones((T, T)))
    crs = rng.dirichlet(np.ones(S), size=(3, H, T))  # (3, H, T, S)
    ge, gd, gc = (rng.normal(size=x.shape) for x in (enc, dec, crs))

    def bar(a, g):
        return np.maximum(a * g, 0).mean(0)

    def norm(R):
        r = R - np.eye(len(R))
        s = r.sum(-1, keepdims=True)
        return r / np.where(s == 0, 1, s) + np.eye(len(R))

    R_ss = np.eye(S)
    for a, g in zip(enc, ge):
        R_ss = R_ss + bar(a, g) @ R_ss
    R_tt, R_ts = np.eye(T), np.zeros((T, S))
    for a, g, c, h in zip(dec, gd, crs, gc):
        R_tt, R_ts = R_tt + bar(a, g) @ R_tt, R_ts + bar(a, g) @ R_ts
        R_ts = R_ts + norm(R_tt).T @ bar(c, h) @ norm(R_ss)
    T_ = torch.from_numpy
    got = grad_rollout_seq2seq(T_(enc), T_(ge), T_(dec), T_(gd), T_(crs), T_(gc))
    torch.testing.assert_close(got, T_(R_ts), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="cross-attention must be"):
        grad_rollout_seq2seq(T_(enc), T_(ge), T_(dec), T_(gd), T_(crs[:, :, :, :3]), T_(gc[:, :, :, :3]))


def test_attention_x_gradient_by_hand():
    # mean over heads of G⊙A (signed): [[(0.6+0.2)/2, (-0.8+0.1)/2], [(0.15-1.0)/2, (1.4+0)/2]]
    got = attention_x_gradient([t(A2), t(A1)], [t(G2), t(G1)], layer=-1)
    torch.testing.assert_close(got, t([[0.4, -0.35], [-0.425, 0.7]]), rtol=0, atol=1e-15)
    pos = attention_x_gradient([t(A1)], [t(G1)], positive=True)
    torch.testing.assert_close(pos, t([[0.4, 0.05], [0.075, 0.7]]), rtol=0, atol=1e-15)  # Ā1


def test_raw_attention_and_relevance():
    A = t([A1, A2])  # (N=2, H=2, 2, 2)
    torch.testing.assert_close(raw_attention(A), t([[0.85, 0.15], [0.3, 0.7]]), rtol=0, atol=1e-15)
    torch.testing.assert_close(raw_attention(A, layer=0, head=1), t(A1[1]), rtol=0, atol=0)
    M = t([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    torch.testing.assert_close(relevance_for(M, 0), t([1.0, 2.0, 3.0]))
    torch.testing.assert_close(relevance_for(M, -1), t([3.0, 4.0, 5.0]))
    torch.testing.assert_close(relevance_for(M, "mean"), t([2.0, 3.0, 4.0]))
    torch.testing.assert_close(relevance_for(M, [0, 1]), t([2.0, 3.0, 4.0]))
    with pytest.raises(ValueError):
        relevance_for(M, "cls")


def test_registry():
    assert {"raw", "rollout", "flow", "chefer", "attn_x_grad"} <= set(METHODS)
    assert METHODS["chefer"].needs_grads and not METHODS["rollout"].needs_grads
    with pytest.raises(ValueError, match="did you mean 'rollout'"):
        get_method("rolout")
    with pytest.raises(ValueError, match="already registered"):
        register_method("rollout")(lambda attns, grads=None: attns)
    A = [t(A1), t(A2)]
    torch.testing.assert_close(METHODS["rollout"](A, head_fusion="max"), rollout(A, head_fusion="max"))
