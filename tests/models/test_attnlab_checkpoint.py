"""attnlab's own checkpoints (save_pretrained / load_pretrained) and embed() on a tiny model."""

import json

import pytest
import torch
import torch.nn.functional as F

from attnlab.data import load_tokenizer
from attnlab.models import CheckpointError, ConfigError, create, embed, load_pretrained, mean_pool


def test_config_json_holds_the_whole_config(tmp_path):
    model = create("encoder-prenorm-tiny", num_layers=1)
    model.save_pretrained(tmp_path / "ck")
    meta = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert meta["model_type"] == "attnlab" and meta["family"] == "encoder"
    assert meta["config"]["position"] == "rope" and meta["config"]["num_layers"] == 1
    back = load_pretrained(tmp_path / "ck")
    assert back.config == model.config


def test_bad_attnlab_checkpoints(tmp_path):
    d = tmp_path / "ck"
    create("encoder-tiny").save_pretrained(d)
    meta = json.loads((d / "config.json").read_text())

    (d / "config.json").write_text(json.dumps({**meta, "config": {**meta["config"], "d_modle": 32}}))
    with pytest.raises(ConfigError, match="unknown config key 'd_modle'; did you mean 'd_model'"):
        load_pretrained(d)

    (d / "config.json").write_text(json.dumps({**meta, "config": {**meta["config"], "ffn_dim": 65}}))
    with pytest.raises(CheckpointError, match="model.safetensors: does not match its config.json:.*ffn"):
        load_pretrained(d)

    (d / "config.json").write_text(json.dumps({**meta, "family": "perceiver"}))
    with pytest.raises(ValueError, match="unknown model family 'perceiver'; known: .*encoder"):
        load_pretrained(d)

    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="is not valid JSON"):
        load_pretrained(d)


@pytest.fixture
def tiny_with_tokenizer(tmp_path):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(40)]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    torch.manual_seed(0)
    model = create("encoder-tiny", vocab_size=len(words))
    model.save_pretrained(tmp_path)
    return tmp_path, model, load_tokenizer(tmp_path)


def test_embed_is_mean_pooled_and_normalised(tiny_with_tokenizer):
    d, model, tok = tiny_with_tokenizer
    sentences = ["w1 w2 w3", "w4", "w5 w6 w7 w8 w9 w10", "w11 w11"]
    got = embed(model, sentences, tokenizer=tok, batch_size=3)
    b = tok(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**b).last_hidden_state
    ref = F.normalize(mean_pool(h, b["attention_mask"]), dim=1)
    torch.testing.assert_close(got, ref)
    # one at a time (no padding at all) gives the same vectors
    torch.testing.assert_close(embed(model, sentences, tokenizer=tok, batch_size=1), ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(embed(d, sentences), ref, atol=1e-6, rtol=0)  # from the directory
    assert embed(model, "w1 w2 w3", tokenizer=tok).shape == (1, 32)
    assert embed(model, [], tokenizer=tok).shape == (0, 32)
    long = " ".join(["w1"] * 100)  # longer than max_len=64: truncated, not an error
    assert embed(model, [long], tokenizer=tok).shape == (1, 32)


def test_embed_restores_training_mode_and_needs_a_tokenizer(tiny_with_tokenizer):
    _, model, tok = tiny_with_tokenizer
    model.train()
    embed(model, ["w1"], tokenizer=tok)
    assert model.training
    with pytest.raises(ValueError, match="pass tokenizer="):
        embed(model, ["w1"])
