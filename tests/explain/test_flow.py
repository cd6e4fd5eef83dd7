"""Attention flow against a max-flow graph built here independently, a closed form for two
layers, and a case small enough to do by hand."""

import networkx as nx
import numpy as np
import pytest
import torch
from networkx.algorithms.flow import edmonds_karp

from attnlab.explain import attention_flow, rollout


def random_attention(rng, layers, heads, L):
    s = rng.normal(size=(layers, heads, L, L)) * 2.0
    w = np.exp(s - s.max(-1, keepdims=True))
    return w / w.sum(-1, keepdims=True)  # (N, H, L, L)


def residual(layer):
    """Abnar & Zuidema's per-layer capacities: 0.5·mean_h A + 0.5·I, rows renormalised."""
    L = layer.shape[-1]
    W = 0.5 * layer.mean(0) + 0.5 * np.eye(L)
    return W / W.sum(1, keepdims=True)


def reference_flow(A):
    """(L, L): row i = max flow from each input node to output node i, on an integer-labelled
    graph where node l*L + i is token i after layer l."""
    N, L = len(A), A.shape[-1]
    G = nx.DiGraph()
    for l, layer in enumerate(A):
        W = residual(layer)
        for i in range(L):  # node i of layer l+1 reads node j of layer l with weight W[i, j]
            for j in range(L):
                G.add_edge(l * L + j, (l + 1) * L + i, capacity=W[i, j])
    return np.array([[nx.maximum_flow_value(G, j, N * L + i, flow_func=edmonds_karp) for j in range(L)]
                     for i in range(L)])


@pytest.mark.parametrize("seed", range(4))
def test_flow_matches_independent_networkx_graph(seed):
    rng = np.random.default_rng(seed)
    layers, heads, L = rng.integers(2, 4), rng.integers(1, 4), rng.integers(3, 5)
    A = random_attention(rng, layers, heads, L)
    got = attention_flow([torch.from_numpy(a) for a in A])
    assert got.dtype == torch.float64 and got.shape == (L, L)
    np.testing.assert_allclose(got.numpy(), reference_flow(A), rtol=0, atol=1e-9)
    last = attention_flow(torch.from_numpy(A), output=-1)
    np.testing.assert_allclose(last.numpy(), got[-1].numpy(), rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(3))
def test_two_layer_flow_is_sum_of_bottlenecks(seed):
    """With two layers the paths j -> k -> i share no edge: flow = Σ_k min(Â1[k, j], Â2[i, k])."""
    rng = np.random.default_rng(10 + seed)
    L = 4
    A = random_attention(rng, 2, 3, L)
    W1, W2 = residual(A[0]), residual(A[1])
    expect = np.array([[sum(min(W1[k, j], W2[i, k]) for k in range(L)) for j in range(L)] for i in range(L)])
    np.testing.assert_allclose(attention_flow(torch.from_numpy(A)).numpy(), expect, rtol=0, atol=1e-9)


def test_two_tokens_by_hand():
    # One head, A = [[0.6, 0.4], [0.2, 0.8]] -> Â = 0.5·A + 0.5·I = [[0.8, 0.2], [0.1, 0.9]] (rows sum to 1).
    A = torch.tensor([[[0.6, 0.4], [0.2, 0.8]]], dtype=torch.float64)  # (H=1, 2, 2)
    # One layer: the flow from input j to output i is the one edge, Â[i, j].
    torch.testing.assert_close(attention_flow([A], output=0), torch.tensor([0.8, 0.2], dtype=torch.float64))
    # Two layers, output 0: input 0 via node 0: min(0.8, 0.8), via node 1: min(Â[1,0]=0.1, Â[0,1]=0.2) -> 0.9;
    # input 1 via node 0: min(Â[0,1]=0.2, 0.8), via node 1: min(Â[1,1]=0.9, Â[0,1]=0.2) -> 0.4.
    flow = attention_flow([A, A], output=0)
    torch.testing.assert_close(flow, torch.tensor([0.9, 0.4], dtype=torch.float64), rtol=0, atol=1e-12)
    # Rollout multiplies along paths instead: row 0 of Â·Â = [0.66, 0.34].
    torch.testing.assert_close(rollout([A, A])[0], torch.tensor([0.66, 0.34], dtype=torch.float64))
    norm = attention_flow([A, A], output=0, normalize=True)
    torch.testing.assert_close(norm, torch.tensor([0.9 / 1.3, 0.4 / 1.3], dtype=torch.float64))
