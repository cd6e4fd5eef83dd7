"""load_pretrained keeps the head of a Hugging Face BertForSequenceClassification: a small random one
saved here with transformers loads as a SequenceClassifier (pooling="pooler") with HF's logits."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from attnlab.models import CheckpointError, Encoder, SequenceClassifier, load_pretrained

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
            max_position_embeddings=40, type_vocab_size=2, layer_norm_eps=1e-12)
LABELS = ["negative", "neutral", "positive"]


def _hf_classifier(seed=0, **kw):
    torch.manual_seed(seed)
    kw = {"num_labels": 3, "id2label": dict(enumerate(LABELS)), "label2id": {n: i for i, n in enumerate(LABELS)},
          "architectures": ["BertForSequenceClassification"], **kw}
    cfg = transformers.BertConfig(**TINY, **kw, attn_implementation="eager")
    hf = transformers.BertForSequenceClassification(cfg).eval()
    with torch.no_grad():  # HF zero-inits the bias; a non-zero one checks that it is copied too
        hf.classifier.bias.normal_(std=0.1)
    return hf


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    hf = _hf_classifier(classifier_dropout=0.25)
    d = tmp_path_factory.mktemp("bert-cls")
    hf.save_pretrained(d)
    assert (d / "model.safetensors").is_file()
    assert any(k.startswith("bert.") for k in load_file(d / "model.safetensors"))
    return hf, d


def _batch():
    torch.manual_seed(1)
    ids = torch.randint(1, 101, (4, 9))
    mask = torch.ones(4, 9, dtype=torch.long)
    mask[0, 5:] = 0
    mask[2, 2:] = 0
    mask[3, 7:] = 0
    seg = torch.zeros(4, 9, dtype=torch.long)
    seg[1, 4:] = 1
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=seg)


def _check_logits(ours, hf):
    """Logits at float64 on a padded batch, in eval mode (copies: the fixtures stay float32)."""
    import copy

    ours, hf = copy.deepcopy(ours).double().eval(), copy.deepcopy(hf).double().eval()
    b = _batch()
    with torch.no_grad():
        ref = hf(**b).logits  # (B, num_labels)
        got = ours(**b).logits  # (B, num_labels)
    assert got.shape == ref.shape == (4, ours.config.num_labels)
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=0)


def test_sequence_classification_keeps_its_head(saved):
    hf, d = saved
    model = load_pretrained(d)
    assert isinstance(model, SequenceClassifier) and not model.training
    cfg = model.config
    assert (cfg.num_labels, cfg.pooling, cfg.head_dropout, cfg.label_names) == (3, "pooler", 0.25, LABELS)
    assert torch.equal(model.head.classifier.weight, hf.classifier.weight)
    _check_logits(model, hf)


def test_without_the_bert_prefix(tmp_path, saved):
    hf, d = saved
    sd = {k.removeprefix("bert."): v for k, v in load_file(d / "model.safetensors").items()}
    assert "classifier.weight" in sd and not any(k.startswith("bert.") for k in sd)
    save_file(sd, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((d / "config.json").read_text())
    _check_logits(load_pretrained(tmp_path), hf)


def test_pytorch_model_bin_and_dropout_default(tmp_path):
    hf = _hf_classifier(seed=3, hidden_dropout_prob=0.15)  # classifier_dropout None: HF uses hidden_dropout_prob
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    hf.config.to_json_file(tmp_path / "config.json")
    model = load_pretrained(tmp_path)
    assert model.config.head_dropout == 0.15
    _check_logits(model, hf)


def test_two_labels_without_id2label(tmp_path):
    hf = _hf_classifier(seed=4, num_labels=2, id2label=None, label2id=None)
    hf.save_pretrained(tmp_path)
    assert "id2label" not in json.loads((tmp_path / "config.json").read_text())  # HF leaves the default out
    model = load_pretrained(tmp_path)
    assert model.config.num_labels == 2 and model.config.label_names is None
    _check_logits(model, hf)


def test_round_trip_through_attnlab_keeps_the_labels(tmp_path, saved):
    hf, d = saved
    load_pretrained(d).save_pretrained(tmp_path)
    back = load_pretrained(tmp_path)
    assert isinstance(back, SequenceClassifier) and back.config.label_names == LABELS
    _check_logits(back, hf)


def test_other_architectures_stay_encoders(tmp_path, saved):
    _, d = saved
    sd = {k: v for k, v in load_file(d / "model.safetensors").items() if not k.startswith("classifier.")}
    save_file(sd, tmp_path / "model.safetensors")  # the architecture, but no head weights: the encoder
    (tmp_path / "config.json").write_text((d / "config.json").read_text())
    assert isinstance(load_pretrained(tmp_path), Encoder)
    cfg = json.loads((d / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "architectures": ["BertForTokenClassification"]}))
    save_file(load_file(d / "model.safetensors"), tmp_path / "model.safetensors")
    assert isinstance(load_pretrained(tmp_path), Encoder)


def test_label_count_disagreeing_with_the_weights(tmp_path, saved):
    _, d = saved
    save_file(load_file(d / "model.safetensors"), tmp_path / "model.safetensors")
    cfg = json.loads((d / "config.json").read_text())
    cfg["id2label"] = {str(i): f"L{i}" for i in range(4)}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as e:
        load_pretrained(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == (f"{tmp_path / 'config.json'} has 4 labels (id2label) but classifier.weight has 3 (shape (3, 32)); "
                   "use the config.json that came with these weights")
