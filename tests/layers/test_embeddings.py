"""Embeddings (tokens, segments, positions, norm) and PatchEmbedding."""

import math

import pytest
import torch
from torch import nn

from attnlab.layers import Embeddings, PatchEmbedding


def test_bert_style_sum_then_norm():
    torch.manual_seed(0)
    emb = Embeddings(50, 8, max_len=16, type_vocab_size=2, norm="layernorm", eps=1e-12).eval()
    ids = torch.randint(0, 50, (2, 5))
    seg = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 0, 1]])
    x = emb.token.weight[ids] + emb.segment.weight[seg] + emb.position.table.weight[:5]
    ref = nn.functional.layer_norm(x, (8,), emb.norm.weight, emb.norm.bias, 1e-12)
    torch.testing.assert_close(emb(ids, seg), ref)
    # no token_type_ids means segment 0 everywhere, as in BERT
    torch.testing.assert_close(emb(ids), emb(ids, torch.zeros_like(ids)))


def test_sinusoidal_positions_and_no_extras():
    emb = Embeddings(10, 6, position="sinusoidal")
    ids = torch.tensor([[1, 2, 3]])
    pe = torch.zeros(3, 6)
    for pos in range(3):
        for i in range(0, 6, 2):
            pe[pos, i] = math.sin(pos / 10000 ** (i / 6))
            pe[pos, i + 1] = math.cos(pos / 10000 ** (i / 6))
    torch.testing.assert_close(emb(ids), emb.token.weight[ids] + pe)
    assert emb.segment is None and emb.norm is None


def test_no_position():
    emb = Embeddings(10, 4, position=None)
    ids = torch.tensor([[3, 3]])
    torch.testing.assert_close(emb(ids), emb.token.weight[ids])


def test_dropout_in_training_only():
    emb = Embeddings(10, 32, dropout=0.5)
    ids = torch.randint(0, 10, (4, 8))
    assert torch.equal(emb.eval()(ids), emb(ids))
    assert (emb.train()(ids) == 0).any()


def test_out_of_range_ids_are_clear_errors():
    emb = Embeddings(10, 4, type_vocab_size=2, max_len=4)
    with pytest.raises(ValueError, match=r"input_ids contains id 10, outside \[0, vocab_size=10\)"):
        emb(torch.tensor([[1, 10]]))
    with pytest.raises(ValueError, match="input_ids contains id -1"):
        emb(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="token_type_ids contains id 2"):
        emb(torch.tensor([[1, 2]]), torch.tensor([[0, 2]]))
    with pytest.raises(ValueError, match="beyond max_len=4"):
        emb(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer token ids"):
        emb(torch.zeros(1, 2))


def test_rotary_position_is_rejected_here():
    with pytest.raises(ValueError, match="attention layers"):
        Embeddings(10, 4, position="rope")


def test_patch_embedding_is_a_strided_conv():
    torch.manual_seed(0)
    pe = PatchEmbedding(4, 3, 8)
    img = torch.randn(2, 3, 8, 12)
    out = pe(img)
    assert out.shape == (2, 6, 8)
    # patch (row 1, col 2) is token 1 * 3 + 2: a dot product with the flattened kernel
    patch = img[:, :, 4:8, 8:12].reshape(2, -1)
    ref = patch @ pe.proj.weight.reshape(8, -1).T + pe.proj.bias
    torch.testing.assert_close(out[:, 5], ref)
    with pytest.raises(ValueError, match="not a multiple of patch_size=4"):
        pe(torch.randn(1, 3, 6, 8))
