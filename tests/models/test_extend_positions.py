"""extend_positions: longer learned absolute position tables by interpolation or repetition, on a
tiny encoder and decoder and on the real all-MiniLM-L6-v2 checkpoint (512 -> 1,024 positions)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from attnlab.models import DecoderConfig, create, load_pretrained
from attnlab.models.positions import extend_positions, extend_table


def _table(model):
    return model.embeddings.position.table.weight.detach()


# ----------------------------------------------------------------------------- the table


def test_interpolated_table_keeps_ends_and_is_convex():
    old = torch.randn(8, 5, dtype=torch.float64)
    new = extend_table(old, 22)
    assert new.shape == (22, 5) and new.dtype == old.dtype
    assert torch.equal(new[0], old[0]) and torch.allclose(new[-1], old[-1], atol=1e-12)
    for i in range(22):
        x = i * (8 - 1) / (22 - 1)  # the old coordinate of new row i
        lo = min(int(x), 6)
        t = x - lo
        assert 0 <= t <= 1
        torch.testing.assert_close(new[i], (1 - t) * old[lo] + t * old[lo + 1], atol=1e-12, rtol=0)
    # a convex combination stays inside the per-dimension range of its two neighbours
    assert (new <= old.amax(0) + 1e-12).all() and (new >= old.amin(0) - 1e-12).all()


def test_repeated_table_tiles_the_old_one():
    old = torch.randn(8, 5)
    new = extend_table(old, 20, "repeat")
    assert new.shape == (20, 5)
    assert torch.equal(new[:8], old) and torch.equal(new[8:16], old) and torch.equal(new[16:], old[:4])


def test_same_length_is_identity_and_shrinking_or_unknown_method_raises():
    old = torch.randn(8, 5)
    assert torch.equal(extend_table(old, 8), old) and torch.equal(extend_table(old, 8, "repeat"), old)
    with pytest.raises(ValueError, match="only extends"):
        extend_table(old, 4)
    model = create("encoder-tiny").eval()
    with pytest.raises(ValueError, match="method must be one of interpolate, repeat"):
        extend_positions(model, 128, method="nearest")
    with pytest.raises(ValueError, match="only extends"):
        extend_positions(model, 32)


def test_model_without_learned_positions_raises():
    model = create("encoder-tiny", position="rope").eval()
    with pytest.raises(ValueError, match="no learned absolute position table"):
        extend_positions(model, 128)


# ----------------------------------------------------------------------------- a tiny model


@pytest.mark.parametrize("method", ["interpolate", "repeat"])
def test_tiny_encoder_runs_past_old_limit_and_round_trips(method, tmp_path):
    torch.manual_seed(0)
    model = create("encoder-tiny").eval()  # max_len 64
    old = _table(model).clone()
    ids = torch.randint(1, model.config.vocab_size, (2, 100))
    with pytest.raises(ValueError, match="beyond max_len=64"):
        model(ids)
    assert extend_positions(model, 160, method) is model
    assert model.config.max_len == 160 and model.embeddings.position.max_len == 160
    new = _table(model)
    assert new.shape == (160, 32) and torch.equal(new[0], old[0])
    assert model.embeddings.position.table.weight.requires_grad
    if method == "repeat":
        assert torch.equal(new[:64], old) and torch.equal(new[64:128], old)
    with torch.no_grad():
        out = model(ids).last_hidden_state
    assert out.shape == (2, 100, 32) and torch.isfinite(out).all()

    model.save_pretrained(tmp_path / "ext")
    back = load_pretrained(tmp_path / "ext").eval()
    assert back.config.max_len == 160 and torch.equal(_table(back), new)
    with torch.no_grad():
        torch.testing.assert_close(back(ids).last_hidden_state, out)


def test_repeat_keeps_short_inputs_identical_and_trains():
    torch.manual_seed(0)
    model = create("encoder-tiny").eval()
    ids = torch.randint(1, model.config.vocab_size, (2, 40))
    with torch.no_grad():
        before = model(ids).last_hidden_state
    extend_positions(model, 256, "repeat")
    with torch.no_grad():
        assert torch.equal(model(ids).last_hidden_state, before)
    # the new table is an ordinary parameter: gradients reach it
    model(torch.randint(1, model.config.vocab_size, (1, 200))).last_hidden_state.sum().backward()
    assert model.embeddings.position.table.weight.grad[150].abs().sum() > 0


def test_decoder_positions_extend():
    torch.manual_seed(0)
    model = DecoderConfig(**DecoderConfig.tiny()).build().eval()
    n = model.config.max_len
    extend_positions(model, 2 * n)
    assert model.config.max_len == 2 * n
    with torch.no_grad():
        logits = model(torch.randint(1, model.config.vocab_size, (1, 2 * n - 3))).logits
    assert logits.shape[1] == 2 * n - 3 and torch.isfinite(logits).all()


# ----------------------------------------------------------------------------- MiniLM, 512 -> 1,024

SENTENCES = [
    "A man is eating food.",
    "A cheetah is running behind its prey.",
    "The quick brown fox jumps over the lazy dog, then naps in the warm afternoon sun by the river.",
    "Attention is all you need?",
    "In 2017, Vaswani et al. proposed the Transformer: 8 heads, d_model = 512, 6 layers!",
    "The committee postponed its decision until the budget report had been reviewed by every member.",
    "She bought fresh bread, two kinds of cheese and a bottle of olive oil at the market.",
    "Heavy rain flooded several streets in the old town overnight.",
]


def _pooled(model, batch):
    with torch.no_grad():
        h = model(**batch).last_hidden_state  # (B, L, d)
    m = batch["attention_mask"][..., None].float()
    return F.normalize((h * m).sum(1) / m.sum(1), dim=-1)  # (B, d), as sentence-transformers


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    from attnlab.data import load_tokenizer

    return load_pretrained(minilm_dir).eval(), load_tokenizer(minilm_dir)


def test_minilm_interpolated_to_1024_positions(minilm, tmp_path):
    base, tok = minilm
    model = extend_positions(copy.deepcopy(base), 1024)
    old, new = _table(base), _table(model)
    assert old.shape == (512, 384) and new.shape == (1024, 384) and model.config.max_len == 1024
    assert torch.equal(new[0], old[0]) and torch.allclose(new[-1], old[-1], atol=1e-6)

    # 1,024 real tokens run (the original refuses more than 512)
    ids = tok(" ".join(SENTENCES * 12), return_tensors="pt")["input_ids"]
    ids = torch.cat([ids[:, :1023], ids[:, -1:]], 1)  # (1, 1024), ending in [SEP]
    with pytest.raises(ValueError, match="beyond max_len=512"):
        base(ids)
    with torch.no_grad():
        out = model(ids).last_hidden_state
    assert out.shape == (1, 1024, 384) and torch.isfinite(out).all()

    # Short inputs: every position moved (p reads ~p/2 of the old table), so embeddings change.
    # Measured: cosine 0.53-0.93 per sentence, mean ~0.85; "repeat" keeps them exactly.
    batch = dict(tok(SENTENCES, padding=True, return_tensors="pt"))
    cos = (_pooled(base, batch) * _pooled(model, batch)).sum(-1)  # (B,)
    print(f"\ninterpolate 512->1024, short-input embedding cosine to original: "
          f"mean {cos.mean():.3f} min {cos.min():.3f} max {cos.max():.3f}")
    assert cos.mean() > 0.75 and cos.min() > 0.4

    model.save_pretrained(tmp_path / "minilm-1024")
    back = load_pretrained(tmp_path / "minilm-1024").eval()
    assert back.config.max_len == 1024
    with torch.no_grad():
        torch.testing.assert_close(back(ids).last_hidden_state, out)


def test_minilm_repeated_to_1024_positions_keeps_short_inputs(minilm):
    base, tok = minilm
    model = extend_positions(copy.deepcopy(base), 1024, "repeat")
    assert torch.equal(_table(model)[:512], _table(base)) and torch.equal(_table(model)[512:], _table(base))
    batch = dict(tok(SENTENCES, padding=True, return_tensors="pt"))
    cos = (_pooled(base, batch) * _pooled(model, batch)).sum(-1)
    assert cos.min() > 0.99999
