"""Parity with Hugging Face GPT-2: a small random GPT2LMHeadModel saved with save_pretrained,
loaded with attnlab's load_pretrained. Logits, attention maps, greedy and beam search must match.

``transformers`` is a test dependency only; attnlab never imports it.
"""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402

from attnlab.models import CheckpointError, load_pretrained  # noqa: E402
from attnlab.models.decoder import Decoder  # noqa: E402

L = 10  # prompt length


def _hf_model(seed=0, init=0.1, **kw):
    """A random GPT-2. ``init=0.1`` (not HF's 0.02) gives peaked next-token distributions, so
    greedy and beam search produce varied text rather than one repeated token."""
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        vocab_size=1000, n_positions=128, n_embd=64, n_layer=2, n_head=4, initializer_range=init,
        bos_token_id=None, eos_token_id=None, **kw,  # GPT-2's 50256 lies outside this vocabulary
    )
    cfg._attn_implementation = "eager"  # the reference attention, which also returns weights
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    hf = _hf_model()
    path = tmp_path_factory.mktemp("gpt2")
    hf.save_pretrained(path)
    assert (path / "model.safetensors").is_file()
    return hf, load_pretrained(str(path))


@pytest.fixture(scope="module")
def prompt():
    torch.manual_seed(1)
    return torch.randint(0, 1000, (3, L))


def _hf_generate(hf, ids, **kw):
    kw.setdefault("eos_token_id", None)
    kw.setdefault("pad_token_id", 999)
    with torch.no_grad():
        return hf.generate(ids, do_sample=False, **kw)


# ----------------------------------------------------------------------------- forward


def test_loads_as_a_decoder_in_eval_mode(pair):
    _, gpt = pair
    assert isinstance(gpt, Decoder) and not gpt.training
    assert gpt.lm_head.weight is gpt.embed.token.weight  # tied, as GPT-2


@pytest.mark.parametrize("init", [0.02, 0.1])
def test_logits_match(init, tmp_path, prompt):
    hf = _hf_model(init=init)
    hf.save_pretrained(tmp_path)
    gpt = load_pretrained(tmp_path)
    with torch.no_grad():
        ref, got = hf(prompt).logits, gpt(input_ids=prompt).logits  # (B, L, V)
    assert got.shape == (3, L, 1000)
    assert (ref - got).abs().max() < 1e-4


def test_logits_match_with_left_padding(pair, prompt):
    hf, gpt = pair
    mask = torch.ones_like(prompt)
    mask[0, :4] = mask[2, :1] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # HF's forward takes positions from the caller
    with torch.no_grad():
        ref = hf(prompt, attention_mask=mask, position_ids=pos).logits
        got = gpt(prompt, attention_mask=mask).logits
    real = mask.bool()
    assert (ref[real] - got[real]).abs().max() < 1e-4


def test_attentions_match(pair, prompt):
    hf, gpt = pair
    with torch.no_grad():
        ref = hf(prompt, output_attentions=True).attentions
        got = gpt(prompt, output_attentions=True).attentions
    assert len(got) == len(ref) == 2
    for r, g in zip(ref, got):
        assert g.shape == r.shape == (3, 4, L, L)
        assert (r - g).abs().max() < 1e-5


# ----------------------------------------------------------------------------- generation


def test_greedy_matches_hf_token_for_token(pair, prompt):
    hf, gpt = pair
    ref = _hf_generate(hf, prompt, max_new_tokens=32)
    got = gpt.generate(prompt, max_new_tokens=32, use_cache=True)
    assert got.shape == (3, L + 32)
    assert torch.equal(got, ref)
    assert torch.equal(gpt.generate(prompt, max_new_tokens=32, use_cache=False), ref)
    assert len(set(ref[:, L:].flatten().tolist())) > 10  # not one repeated token


def test_greedy_with_stop_tokens_matches_hf(pair, prompt):
    hf, gpt = pair
    free = _hf_generate(hf, prompt, max_new_tokens=20)
    stops = [int(free[0, L + 5]), int(free[1, L + 9])]
    ref = _hf_generate(hf, prompt, max_new_tokens=20, eos_token_id=stops, pad_token_id=999)
    got = gpt.generate(prompt, max_new_tokens=20, eos_token_id=stops, pad_token_id=999)
    assert torch.equal(got, ref)
    assert (got == 999).any()  # some row stopped early and was padded


def test_left_padded_greedy_matches_hf(pair):
    hf, gpt = pair
    torch.manual_seed(3)
    ids = torch.randint(0, 1000, (3, 8))
    mask = torch.ones_like(ids)
    mask[0, :3] = mask[1, :5] = 0
    ids = ids.masked_fill(mask == 0, 999)
    ref = _hf_generate(hf, ids, attention_mask=mask, max_new_tokens=16)
    got = gpt.generate(ids, attention_mask=mask, max_new_tokens=16)
    assert torch.equal(got, ref)


@pytest.mark.parametrize("length_penalty, early_stopping, stops", [
    (1.0, False, None),
    (0.5, True, "one"),
    (2.0, "never", "two"),
    (-0.5, False, "two"),
])
def test_beam_search_matches_hf(pair, prompt, length_penalty, early_stopping, stops):
    hf, gpt = pair
    free = _hf_generate(hf, prompt, max_new_tokens=16)
    eos = {None: None, "one": int(free[0, L + 1]), "two": [int(free[0, L + 3]), int(free[2, L + 6])]}[stops]
    kw = dict(max_new_tokens=16, num_beams=3, length_penalty=length_penalty, early_stopping=early_stopping)
    ref = _hf_generate(hf, prompt, eos_token_id=eos, pad_token_id=999, **kw)
    got = gpt.generate(prompt, eos_token_id=eos, pad_token_id=999, **kw)
    assert got.shape == ref.shape and torch.equal(got, ref)
    assert torch.equal(gpt.generate(prompt, eos_token_id=eos, pad_token_id=999, use_cache=False, **kw), ref)


# ----------------------------------------------------------------------------- checkpoint variants


def test_gpt2model_checkpoint_without_prefix_loads_tied(tmp_path, prompt):
    lm = _hf_model(seed=4)
    lm.transformer.save_pretrained(tmp_path)  # a GPT2Model: keys without "transformer.", no lm_head
    assert not any(k.startswith("transformer.") for k in load_file(tmp_path / "model.safetensors"))
    gpt = load_pretrained(tmp_path)
    with torch.no_grad():
        assert (lm(prompt).logits - gpt(prompt).logits).abs().max() < 1e-4


def test_untied_lm_head(tmp_path, prompt):
    hf = _hf_model(seed=5, tie_word_embeddings=False)
    with torch.no_grad():
        hf.lm_head.weight.normal_(std=0.1)  # make sure it differs from wte
    hf.save_pretrained(tmp_path)
    gpt = load_pretrained(tmp_path)
    assert gpt.lm_head.weight is not gpt.embed.token.weight
    with torch.no_grad():
        assert (hf(prompt).logits - gpt(prompt).logits).abs().max() < 1e-4


def test_unsupported_variant_raises(tmp_path):
    _hf_model(scale_attn_by_inverse_layer_idx=True).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="scale_attn_by_inverse_layer_idx"):
        load_pretrained(tmp_path)


def test_missing_weight_is_named(tmp_path):
    _hf_model().save_pretrained(tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    del sd["transformer.h.1.mlp.c_fc.weight"]
    save_file(sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"h\.1\.mlp\.c_fc\.weight"):
        load_pretrained(tmp_path)


def test_config_without_model_type_dispatches_on_architecture(tmp_path, prompt):
    hf = _hf_model(seed=6)
    hf.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.pop("model_type")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert isinstance(load_pretrained(tmp_path), Decoder)
