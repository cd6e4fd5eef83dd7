"""The encoder-decoder Transformer: shapes, attention maps, padding, cached generation, learning
a tiny reversal task, and the checkpoint round trip."""

import pytest
import torch
import torch.nn.functional as F

from attnlab.models import ConfigError, EncoderDecoder, EncoderDecoderConfig, create, load_pretrained
from attnlab.models.outputs import Seq2SeqOutput

PAD, BOS, EOS = 0, 1, 2


def _model(**overrides) -> EncoderDecoder:
    torch.manual_seed(0)
    return create("encoder-decoder-tiny", **{"src_vocab_size": 50, "tgt_vocab_size": 50, **overrides}).eval()


def _source():
    """Two sources: row 0 right-padded to length 4, row 1 full (length 7)."""
    g = torch.Generator().manual_seed(3)
    src = torch.randint(3, 50, (2, 7), generator=g)  # (2, 7)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[0, 4:] = 0
    src[mask == 0] = PAD
    return src, mask


def _left_pad(src, mask):
    """The same rows, padded on the left."""
    out, left = torch.full_like(src, PAD), torch.zeros_like(mask)
    for i, n in enumerate(mask.sum(1).tolist()):
        out[i, src.shape[1] - n:], left[i, src.shape[1] - n:] = src[i, :n], 1
    return out, left


def test_forward_shapes():
    model = _model()
    src, mask = _source()
    tgt = torch.randint(3, 50, (2, 5))
    out = model(src, tgt, attention_mask=mask)
    assert isinstance(out, Seq2SeqOutput)
    assert out.logits.shape == (2, 5, 50) and out.last_hidden_state.shape == (2, 5, 64)
    assert out.encoder_last_hidden_state.shape == (2, 7, 64)
    assert out.encoder_attentions is None and out.cross_attentions is None
    memory, _, _ = model.encode(src, mask)
    torch.testing.assert_close(memory, out.encoder_last_hidden_state)


def test_share_vocab_and_tie_output():
    m = _model()
    assert m.src_embed is m.tgt_embed and m.lm_head.weight is m.tgt_embed.weight
    m = _model(share_vocab=False, tgt_vocab_size=40, tie_output=False)
    assert m.src_embed is not m.tgt_embed and m.lm_head.weight is not m.tgt_embed.weight
    assert m(torch.randint(3, 50, (1, 4)), torch.randint(3, 40, (1, 3))).logits.shape == (1, 3, 40)
    with pytest.raises(ConfigError, match="share_vocab needs src_vocab_size == tgt_vocab_size"):
        _model(tgt_vocab_size=40)
    with pytest.raises(ConfigError, match="position='rope' is not one of"):
        _model(position="rope")


def test_attention_maps():
    model = _model()
    src, mask = _source()
    out = model(src, torch.randint(3, 50, (2, 5)), attention_mask=mask, output_attentions=True)
    H = model.config.num_heads
    assert len(out.encoder_attentions) == 2 and len(out.decoder_attentions) == 2 and len(out.cross_attentions) == 2
    pad = ~mask.bool()  # (2, 7)
    for w in out.encoder_attentions:
        assert w.shape == (2, H, 7, 7)
        assert (w[0][..., pad[0]] == 0).all()
    for w in out.decoder_attentions:
        assert w.shape == (2, H, 5, 5)
        assert (w.triu(1) == 0).all()  # causal
        torch.testing.assert_close(w.sum(-1), torch.ones(2, H, 5))
    for w in out.cross_attentions:
        assert w.shape == (2, H, 5, 7)
        torch.testing.assert_close(w[..., ~pad[0]][0].sum(-1), torch.ones(H, 5))  # sums to 1 over real tokens
        assert (w[0][..., pad[0]] == 0).all()  # padding gets nothing
        torch.testing.assert_close(w[1].sum(-1), torch.ones(H, 5))


@pytest.mark.parametrize("norm_first", [True, False])
def test_source_padding_does_not_change_other_rows(norm_first):
    model = _model(norm_first=norm_first, position="learned")
    src, mask = _source()
    tgt = torch.randint(3, 50, (2, 5))
    both = model(src, tgt, attention_mask=mask)
    for i, n in enumerate(mask.sum(1).tolist()):
        alone = model(src[i:i + 1, :n], tgt[i:i + 1])
        torch.testing.assert_close(both.logits[i:i + 1], alone.logits, atol=1e-5, rtol=1e-5)
    left, left_mask = _left_pad(src, mask)  # positions count real tokens: either side works
    torch.testing.assert_close(model(left, tgt, attention_mask=left_mask).logits, both.logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_cached_generation_equals_uncached(num_beams):
    model = _model()
    src, mask = _left_pad(*_source())
    kw = dict(attention_mask=mask, max_new_tokens=8, num_beams=num_beams, eos_token_id=EOS)
    cached = model.generate(src, **kw)
    plain = model.generate(src, use_cache=False, **kw)
    assert cached.shape[0] == 2 and cached.shape[1] <= 9 and (cached[:, 0] == BOS).all()
    assert torch.equal(cached, plain)


def test_generation_rows_match_alone_and_beam_one_is_greedy():
    model = _model()
    src, mask = _left_pad(*_source())
    greedy = model.generate(src, attention_mask=mask, max_new_tokens=6)
    assert greedy.shape == (2, 7)
    assert torch.equal(model.generate(src, attention_mask=mask, max_new_tokens=6, num_beams=1), greedy)
    for i, n in enumerate(mask.sum(1).tolist()):
        assert torch.equal(model.generate(src[i:i + 1, 7 - n:], max_new_tokens=6), greedy[i:i + 1])


def test_generation_takes_right_padded_sources_too():
    """Only a decoder-only prompt must be left-padded; an encoder's source may be padded either way."""
    model = _model()
    src, mask = _source()
    right = model.generate(src, attention_mask=mask, max_new_tokens=6)
    left, left_mask = _left_pad(src, mask)
    assert torch.equal(right, model.generate(left, attention_mask=left_mask, max_new_tokens=6))


def test_static_cross_cache_is_projected_once():
    model = _model()
    src, mask = _left_pad(*_source())
    calls = []
    hook = model.decoder[0].cross_attn.k_proj.register_forward_hook(lambda *a: calls.append(1))
    model.generate(src, attention_mask=mask, max_new_tokens=5)
    hook.remove()
    assert len(calls) == 1


def _reversal_batch(n, g, vocab=13, max_len=6):
    """Sources of 2..max_len symbols (right-padded) and targets BOS + reversed + EOS."""
    lengths = torch.randint(2, max_len + 1, (n,), generator=g).tolist()
    src = torch.full((n, max_len), PAD)
    tgt = torch.full((n, max_len + 2), PAD)
    for i, k in enumerate(lengths):
        s = torch.randint(3, vocab, (k,), generator=g)
        src[i, :k], tgt[i, 0], tgt[i, 1:k + 1], tgt[i, k + 1] = s, BOS, s.flip(0), EOS
    return src, (src != PAD).long(), tgt


def test_learns_to_reverse():
    """A 1 + 1 layer model learns to reverse 2..6 symbols in 300 CPU steps; held-out sequences
    decoded greedily come out exactly right most of the time (about 0.87 with this seed)."""
    torch.manual_seed(0)
    V = 13
    model = create("encoder-decoder-tiny", src_vocab_size=V, tgt_vocab_size=V, d_model=32, ffn_dim=64,
                   num_encoder_layers=1, num_decoder_layers=1, max_len=16).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(300):
        src, mask, tgt = _reversal_batch(32, g)
        inp, labels = tgt[:, :-1], tgt[:, 1:]
        logits = model(src, inp, attention_mask=mask, decoder_attention_mask=(inp != PAD).long()).logits
        loss = F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.5 * first and last < 0.5 * torch.log(torch.tensor(float(V))).item()

    model.eval()
    src, mask, tgt = _reversal_batch(100, torch.Generator().manual_seed(99))
    left, left_mask = _left_pad(src, mask)
    out = model.generate(left, attention_mask=left_mask, max_new_tokens=7, eos_token_id=EOS, pad_token_id=PAD)
    n = (tgt != PAD).sum(1)
    right = sum(torch.equal(out[i, :n[i]], tgt[i, :n[i]]) for i in range(100))
    assert right >= 70, f"only {right}/100 held-out reversals exact"


def test_save_load_round_trip(tmp_path):
    model = _model(share_vocab=False, tgt_vocab_size=40, position="learned", norm_first=False)
    model.save_pretrained(tmp_path)
    back = load_pretrained(tmp_path)
    assert isinstance(back, EncoderDecoder) and back.config == model.config
    sd, sd2 = model.state_dict(), back.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    src, mask = _left_pad(*_source())
    assert torch.equal(model.generate(src, attention_mask=mask, max_new_tokens=4),
                       back.generate(src, attention_mask=mask, max_new_tokens=4))


def test_config_round_trip_and_presets():
    cfg = EncoderDecoderConfig.from_dict(create("encoder_decoder").config.to_dict())
    sizes = (cfg.d_model, cfg.num_encoder_layers, cfg.num_decoder_layers, cfg.num_heads, cfg.ffn_dim)
    assert sizes == (256, 3, 3, 4, 1024)
    assert cfg.share_vocab and cfg.src_vocab_size == 8000 and cfg.num_layers == 3
