"""load_pretrained on small Hugging Face BERT checkpoints made here with transformers (safetensors
and pytorch_model.bin, BertModel and BertForMaskedLM), and its errors."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from attnlab.models import CheckpointError, Encoder, load_pretrained
from attnlab.models.pretrained import supported

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
            max_position_embeddings=40, type_vocab_size=2, layer_norm_eps=1e-12)


def _hf(cls=None, **kw):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(**{**TINY, **kw}, attn_implementation="eager")
    return (cls or transformers.BertModel)(cfg).eval()


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bert")
    _hf().save_pretrained(d)
    return d


def _batch():
    torch.manual_seed(1)
    ids = torch.randint(1, 101, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, 4:] = 0
    mask[2, 2:] = 0
    seg = torch.zeros(3, 7, dtype=torch.long)
    seg[1, 3:] = 1
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=seg)


def _check_parity(ours, hf_model, atol=1e-5):
    b = _batch()
    keep = b["attention_mask"].bool()
    with torch.no_grad():
        ref = hf_model(**b, output_attentions=True)
        out = ours(**b, output_attentions=True)
    torch.testing.assert_close(out.last_hidden_state[keep], ref.last_hidden_state[keep], atol=atol, rtol=0)
    for a, r in zip(out.attentions, ref.attentions, strict=True):
        torch.testing.assert_close(a, r, atol=atol, rtol=0)
    return out, ref


@pytest.mark.parametrize("act,ours", [("gelu", "gelu"), ("gelu_new", "gelu_tanh"), ("relu", "relu")])
def test_bert_model_safetensors(tmp_path, act, ours):
    hf = _hf(hidden_act=act)
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    model = load_pretrained(tmp_path)
    assert isinstance(model, Encoder) and not model.training and model.config.activation == ours
    out, ref = _check_parity(model, hf)
    torch.testing.assert_close(out.pooler_output, ref.pooler_output, atol=1e-5, rtol=0)


def test_pytorch_model_bin(tmp_path):
    hf = _hf()
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    hf.config.to_json_file(tmp_path / "config.json")
    _check_parity(load_pretrained(tmp_path), hf)


def test_bert_for_masked_lm_has_prefix_and_no_pooler(tmp_path):
    hf = _hf(transformers.BertForMaskedLM, architectures=["BertForMaskedLM"])
    hf.save_pretrained(tmp_path)
    model = load_pretrained(tmp_path)
    assert model.pooler is None
    _check_parity(model, hf.bert)


def test_sharded_safetensors(tmp_path, bert_dir):
    sd = load_file(bert_dir / "model.safetensors")
    names = sorted(sd)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for fname, keys in shards.items():
        save_file({k: sd[k].contiguous() for k in keys}, tmp_path / fname)
    index = {"weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text((bert_dir / "config.json").read_text())
    a, b = load_pretrained(tmp_path), load_pretrained(bert_dir)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


def test_hub_names_go_to_snapshot_download(monkeypatch, bert_dir):
    import huggingface_hub

    calls = []

    def fake(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision))
        return str(bert_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    model = load_pretrained("someone/tiny-bert", revision="main")
    assert calls == [("someone/tiny-bert", "main")] and isinstance(model, Encoder)

    def offline(**kw):
        raise OSError("no network\nsecond line")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match="'someone/tiny-bert' is not a local directory and could not be "
                                                "fetched from the Hub: no network$"):
        load_pretrained("someone/tiny-bert")


# ----------------------------------------------------------------------------- errors


def _copy(src, dst, drop=(), change=None):
    sd = load_file(src / "model.safetensors")
    for k in drop:
        del sd[k]
    if change:
        sd.update(change)
    dst.mkdir(exist_ok=True)
    save_file(sd, dst / "model.safetensors")
    (dst / "config.json").write_text((src / "config.json").read_text())
    return dst


def test_missing_weight_is_named(tmp_path, bert_dir):
    d = _copy(bert_dir, tmp_path / "c", drop=["encoder.layer.1.intermediate.dense.weight"])
    with pytest.raises(CheckpointError, match=r"missing weights: encoder\.layer\.1\.intermediate\.dense\.weight "
                                              r"\(for layers\.1\.ffn\.up\.weight\)"):
        load_pretrained(d)


def test_shape_mismatch_names_both_shapes(tmp_path, bert_dir):
    d = _copy(bert_dir, tmp_path / "c", change={"encoder.layer.0.output.dense.weight": torch.zeros(32, 47)})
    with pytest.raises(CheckpointError, match=r"weight encoder\.layer\.0\.output\.dense\.weight has shape \(32, 47\) "
                                              r"in the checkpoint but the model's layers\.0\.ffn\.down\.weight has "
                                              r"shape \(32, 48\)"):
        load_pretrained(d)


def test_missing_files(tmp_path, bert_dir):
    with pytest.raises(FileNotFoundError, match="no directory"):
        load_pretrained(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_pretrained(empty)
    (empty / "config.json").write_text((bert_dir / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="has config.json but no weights; expected one of model.safetensors"):
        load_pretrained(empty)
    with pytest.raises(NotADirectoryError, match="pass the checkpoint directory"):
        load_pretrained(bert_dir / "config.json")


def test_unsupported_architectures_list_the_supported(tmp_path, bert_dir):
    d = _copy(bert_dir, tmp_path / "t5")
    (d / "config.json").write_text(json.dumps({"model_type": "t5", "architectures": ["T5Model"]}))
    with pytest.raises(CheckpointError, match=r"unsupported model_type='t5'; supported: model_type in \['attnlab', "
                                              r"'bert'.*BertModel"):
        load_pretrained(d)
    assert "\n" not in supported()
    cfg = json.loads((bert_dir / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "position_embedding_type": "relative_key"}))
    with pytest.raises(CheckpointError, match="position_embedding_type='relative_key' is not supported"):
        load_pretrained(d)
    (d / "config.json").write_text(json.dumps({**cfg, "architectures": ["BertLMHeadModel"]}))
    with pytest.raises(CheckpointError, match=r"architectures \['BertLMHeadModel'\] not supported.*BertModel"):
        load_pretrained(d)


def test_config_without_model_type_dispatches_on_architectures(tmp_path, bert_dir):
    d = _copy(bert_dir, tmp_path / "c")
    cfg = json.loads((bert_dir / "config.json").read_text())
    del cfg["model_type"]
    (d / "config.json").write_text(json.dumps(cfg))
    assert isinstance(load_pretrained(d), Encoder)


def test_ids_beyond_the_vocabulary(bert_dir):
    model = load_pretrained(bert_dir)
    with pytest.raises(ValueError, match=r"input_ids contains id 101, outside \[0, vocab_size=101\)"):
        model(torch.tensor([[1, 101]]))
