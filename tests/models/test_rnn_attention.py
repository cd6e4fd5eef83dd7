"""RNN models with attention: the seq2seq encoder-decoder (GRU/LSTM x Bahdanau/Luong) and the
BiLSTM self-attention tagger. Shapes, masked weights, generation, and learning toy tasks."""

import pytest
import torch
import torch.nn.functional as F

from attnlab.models import BiLSTMTagger, ConfigError, RNNSeq2Seq, RNNSeq2SeqConfig, create

PAD, BOS, EOS = 0, 1, 2
VARIANTS = [(c, a) for c in ("gru", "lstm") for a in ("bahdanau", "luong")]


def _tiny_seq2seq(cell, attention):
    return RNNSeq2Seq(RNNSeq2SeqConfig(src_vocab_size=20, tgt_vocab_size=20, embed_dim=16, hidden_dim=24,
                                       cell=cell, attention=attention, dropout=0.0)).eval()


@pytest.mark.parametrize("cell,attention", VARIANTS)
def test_seq2seq_shapes_and_masked_weights(cell, attention):
    torch.manual_seed(0)
    model = _tiny_seq2seq(cell, attention)
    src = torch.randint(3, 20, (3, 7))  # (B, S)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 4:] = 0
    src[1, 4:] = PAD
    tgt = torch.randint(3, 20, (3, 5))  # (B, T)
    out = model(src, tgt, attention_mask=mask, output_attentions=True)
    assert out.logits.shape == (3, 5, 20)
    (w,) = out.attentions
    assert w.shape == (3, 5, 7)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 5))
    assert (w[1, :, 4:] == 0).all()
    # a padded row computes what it would alone
    alone = model(src[1:2, :4], tgt[1:2])
    torch.testing.assert_close(out.logits[1:2], alone.logits, atol=1e-5, rtol=1e-5)
    assert model(src, tgt).attentions is None


def test_generate_is_greedy_and_stops_at_eos():
    torch.manual_seed(0)
    model = _tiny_seq2seq("gru", "bahdanau")
    src = torch.randint(3, 20, (2, 6))
    ids = model.generate(src, max_new_tokens=4, bos_id=BOS, eos_id=EOS)
    assert ids.shape[0] == 2 and ids.shape[1] <= 4
    dec = torch.cat((torch.full((2, 1), BOS), ids[:, :-1]), 1)
    torch.testing.assert_close(model(src, dec).logits.argmax(-1)[:, 0], ids[:, 0])
    with torch.no_grad():  # force EOS: every row stops after one token
        model.out.bias.fill_(-1e4)
        model.out.bias[EOS] = 1e4
    assert model.generate(src, max_new_tokens=5, bos_id=BOS, eos_id=EOS).tolist() == [[EOS], [EOS]]


def _reverse_batch(g, batch=64, length=6, vocab=16):
    src = torch.randint(3, vocab, (batch, length), generator=g)  # (B, S)
    tgt = torch.cat((src.flip(1), torch.full((batch, 1), EOS)), 1)  # (B, S + 1): reversed, then EOS
    dec = torch.cat((torch.full((batch, 1), BOS), tgt[:, :-1]), 1)  # teacher forcing
    return src, dec, tgt


@pytest.mark.parametrize("cell,attention", [("gru", "bahdanau"), ("lstm", "luong")])
def test_seq2seq_learns_to_reverse(cell, attention):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = create("rnn-attention-tiny", cell=cell, attention=attention, src_vocab_size=16, tgt_vocab_size=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(120):
        src, dec, tgt = _reverse_batch(g)
        loss = F.cross_entropy(model(src, dec).logits.flatten(0, 1), tgt.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    src, _, tgt = _reverse_batch(g, batch=100)
    model.eval()
    acc = (model.generate(src, max_new_tokens=7, bos_id=BOS, eos_id=EOS)[:, :6] == tgt[:, :6]).float().mean().item()
    print(f"{cell}+{attention} reverse: loss {first:.3f} -> {last:.3f}, greedy token accuracy {acc:.3f}")
    assert last < first / 2
    assert acc > 0.7  # chance is 1/13


def test_tagger_shapes_and_masked_weights():
    torch.manual_seed(0)
    model = create("bilstm-tagger-tiny").eval()
    ids = torch.randint(1, 32, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6])
    out = model(ids, attention_mask=mask, output_attentions=True)
    assert out.logits.shape == (2, 6, 8)
    (w,) = out.attentions
    assert w.shape == (2, 2, 6, 6)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 6))
    assert (w[0, :, :, 4:] == 0).all()
    alone = model(ids[:1, :4])
    torch.testing.assert_close(out.logits[0, :4], alone.logits[0], atol=1e-5, rtol=1e-5)


def test_tagger_learns_a_context_dependent_task():
    """Tag = the token's class (id mod 4) when the sequence holds the trigger token 3, else 4 + that:
    a per-token answer that needs the whole sentence, which self-attention (or the BiLSTM) carries."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = create("bilstm-tagger-tiny", num_tags=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def batch(n=64, length=8):
        ids = torch.randint(4, 32, (n, length), generator=g)
        has = torch.rand(n, generator=g) < 0.5
        pos = torch.randint(0, length, (n,), generator=g)
        ids[has, pos[has]] = 3
        tags = ids % 4 + 4 * (~has)[:, None]  # (B, L)
        return ids, tags

    losses = []
    for _ in range(60):
        ids, tags = batch()
        loss = F.cross_entropy(model(ids).logits.flatten(0, 1), tags.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    ids, tags = batch(200)
    model.eval()
    acc = (model(ids).logits.argmax(-1) == tags).float().mean().item()
    print(f"bilstm tagger: loss {first:.3f} -> {last:.3f}, held-out token accuracy {acc:.3f} (chance 0.125)")
    assert last < first / 2
    assert acc > 0.8


def test_bad_configs():
    with pytest.raises(ConfigError, match="cell='rnn' is not one of gru, lstm"):
        create("rnn-attention-tiny", cell="rnn")
    with pytest.raises(ConfigError, match="attention='dot' is not one of bahdanau, luong"):
        create("rnn-attention-tiny", attention="dot")
    with pytest.raises(ConfigError, match="not divisible by num_heads=3"):
        create("bilstm-tagger-tiny", num_heads=3)
    assert isinstance(create("bilstm-tagger-tiny"), BiLSTMTagger)
