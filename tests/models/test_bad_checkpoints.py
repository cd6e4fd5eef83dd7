"""A corpus of bad checkpoints, each with the one line load_pretrained must refuse it with.

Every refusal is a CheckpointError (not-found cases are also FileNotFoundError/NotADirectoryError,
config rejections also ConfigError), on one line, naming the file, and never suggesting
``weights_only=False``. The Hugging Face checkpoints are written here from an attnlab Encoder
through the converter's own name map, so this file needs no transformers.
"""

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from attnlab.models import (
    CheckpointError, ConfigError, Encoder, EncoderConfig, config_class, create, load_pretrained,
)
from attnlab.models.hf_bert import weight_sources

HF = {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": 101, "hidden_size": 32,
      "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 48, "max_position_embeddings": 40,
      "type_vocab_size": 2, "hidden_act": "gelu"}
SUPPORTED = ("supported: model_type in ['attnlab', 'bert', 'gpt2']; architectures ['BertForMaskedLM', "
             "'BertForNextSentencePrediction', 'BertForPreTraining', 'BertForQuestionAnswering', "
             "'BertForSequenceClassification', 'BertForTokenClassification', 'BertModel', 'GPT2LMHeadModel', "
             "'GPT2Model']")
REFETCH = "fetch it again"
SYSTEM = f"{os.system.__module__}.{os.system.__name__}"  # posix.system on Linux


def _bert(d: Path, config: dict | None = None, change=None, drop=()) -> Path:
    """A Hugging Face BERT checkpoint (config.json, model.safetensors) of a random tiny Encoder."""
    torch.manual_seed(0)
    cfg = EncoderConfig(vocab_size=101, d_model=32, num_layers=2, num_heads=4, ffn_dim=48, max_len=40)
    state = Encoder(cfg).state_dict()
    sd = {src: state[tgt].clone() for tgt, src in weight_sources(cfg).items() if src not in drop}
    sd.update(change or {})
    d.mkdir(parents=True, exist_ok=True)
    save_file(sd, d / "model.safetensors")
    (d / "config.json").write_text(json.dumps(config or HF))
    return d


def _attnlab(d: Path) -> Path:
    create("encoder-tiny", num_layers=1).save_pretrained(d)
    return d


def _evil(marker: Path):
    class RunsCode:  # unpickling this calls os.system, which would create the marker
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    return RunsCode()


# ----------------------------------------------------------------------------- the corpus
# Each case: tmp_path -> (what to load, the exact message).


def code_running_pickle(tmp):
    d = _bert(tmp / "ck")
    (d / "model.safetensors").unlink()
    torch.save({"embeddings.word_embeddings.weight": _evil(tmp / "MARKER")}, d / "pytorch_model.bin")
    return d, f"{d / 'pytorch_model.bin'} wants to run {SYSTEM}; refused. Convert a trusted copy to safetensors"


def code_running_raw_pickle(tmp):
    d = _bert(tmp / "ck")
    (d / "model.safetensors").unlink()
    with open(d / "pytorch_model.bin", "wb") as f:  # a plain pickle, not torch.save's zip
        pickle.dump({"w": torch.zeros(2), "x": _evil(tmp / "MARKER")}, f, protocol=4)
    return d, f"{d / 'pytorch_model.bin'} wants to run {SYSTEM}; refused. Convert a trusted copy to safetensors"


def truncated_safetensors(tmp):
    d = _bert(tmp / "ck")
    f = d / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    return d, (f"{f} is truncated: {len(data) // 2:,} of {len(data):,} bytes; the download or copy was "
               f"interrupted, {REFETCH}")


def safetensors_cut_in_its_header(tmp):
    d = _bert(tmp / "ck")
    f = d / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:100])
    n = int.from_bytes(data[:8], "little")
    return d, (f"{f} is truncated or not a safetensors file: its header claims {n:,} bytes but the file has 100; "
               f"{REFETCH}")


def zero_byte_safetensors(tmp):
    d = _bert(tmp / "ck")
    (d / "model.safetensors").write_bytes(b"")
    return d, f"{d / 'model.safetensors'} is empty (0 bytes); the download or copy was interrupted, {REFETCH}"


def zero_byte_bin(tmp):
    d = _bert(tmp / "ck")
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"")
    return d, f"{d / 'pytorch_model.bin'} is empty (0 bytes); the download or copy was interrupted, {REFETCH}"


def truncated_bin(tmp):
    d = _bert(tmp / "ck")
    torch.save(load_file(d / "model.safetensors"), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    data = (d / "pytorch_model.bin").read_bytes()
    (d / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    return d, f"{d / 'pytorch_model.bin'} is truncated (a zip archive without its end); {REFETCH}"


def git_lfs_pointer(tmp):
    d = _bert(tmp / "ck")
    (d / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab12\nsize 9\n")
    return d, f"{d / 'model.safetensors'} is a Git LFS pointer, not the weights; run `git lfs pull` in {d}"


def nested_state_dict(tmp):
    d = _bert(tmp / "ck")
    torch.save({"model": load_file(d / "model.safetensors"), "step": 3}, d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    return d, (f"{d / 'pytorch_model.bin'} is not a flat state dict: 2 entries are not tensors (model, step); "
               "save model.state_dict() itself")


def integer_weights(tmp):
    d = _bert(tmp / "ck")
    sd = {k: v.to(torch.int64) for k, v in load_file(d / "model.safetensors").items()}
    save_file(sd, d / "model.safetensors")
    return d, (f"{d / 'model.safetensors'}: weight embeddings.word_embeddings.weight has dtype int64 but the model's "
               "embeddings.token.weight is float32 (38 more of the wrong kind); integer or quantized weights are "
               "not supported")


def mismatched_shape(tmp):
    d = _bert(tmp / "ck", change={"encoder.layer.1.attention.self.query.weight": torch.zeros(32, 31)})
    return d, (f"{d / 'model.safetensors'}: weight encoder.layer.1.attention.self.query.weight has shape (32, 31) "
               "in the checkpoint but the model's layers.1.self_attn.q_proj.weight has shape (32, 32)")


def missing_weights(tmp):
    drop = [f"encoder.layer.1.output.{n}" for n in ("dense.weight", "dense.bias", "LayerNorm.weight",
                                                      "LayerNorm.bias")] + ["pooler.dense.bias"]
    d = _bert(tmp / "ck", drop=drop)
    # the pooler weight is still there, so the pooler (and its bias) is expected
    return d, (f"{d / 'model.safetensors'}: missing weights: encoder.layer.1.output.dense.weight "
               "(for layers.1.ffn.down.weight), encoder.layer.1.output.dense.bias (for layers.1.ffn.down.bias), "
               "encoder.layer.1.output.LayerNorm.weight (for layers.1.ffn_norm.weight) and 2 more "
               "(5 of 39 missing)")


def attnlab_missing_weights(tmp):
    d = _attnlab(tmp / "ck")
    sd = load_file(d / "model.safetensors")
    for k in ["layers.0.ffn.up.weight", "layers.0.ffn.up.bias"]:
        del sd[k]
    save_file(sd, d / "model.safetensors")
    return d, (f"{d / 'model.safetensors'}: does not match its config.json: missing weights: "
               "layers.0.ffn.up.weight, layers.0.ffn.up.bias (2 of 23 missing)")


def attnlab_unexpected_weights(tmp):
    d = _attnlab(tmp / "ck")
    sd = load_file(d / "model.safetensors")
    sd.update({f"layers.1.extra{i}": torch.zeros(2) for i in range(5)})
    save_file(sd, d / "model.safetensors")
    return d, (f"{d / 'model.safetensors'}: does not match its config.json: unexpected weights: "
               "layers.1.extra0, layers.1.extra1, layers.1.extra2 and 2 more (5 the model does not have)")


def attnlab_integer_weights(tmp):
    d = _attnlab(tmp / "ck")
    sd = load_file(d / "model.safetensors")
    sd["layers.0.ffn.up.weight"] = sd["layers.0.ffn.up.weight"].to(torch.int32)
    save_file(sd, d / "model.safetensors")
    return d, (f"{d / 'model.safetensors'}: does not match its config.json: weight layers.0.ffn.up.weight has dtype "
               "int32 but the model's layers.0.ffn.up.weight is float32; integer or quantized weights are not supported")


def attnlab_truncated(tmp):
    d = _attnlab(tmp / "ck")
    f = d / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:-10])
    return d, (f"{f} is truncated: {len(data) - 10:,} of {len(data):,} bytes; the download or copy was "
               f"interrupted, {REFETCH}")


def attnlab_unknown_family(tmp):
    d = _attnlab(tmp / "ck")
    meta = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**meta, "family": "perceiver"}))
    (d / "model.safetensors").unlink()  # the config is refused before the weights are looked for
    with pytest.raises(ValueError) as known:  # the registry's own line, which lists every family
        config_class("perceiver")
    assert str(known.value).startswith("unknown model family 'perceiver'; known: ") and "encoder" in str(known.value)
    return d, f"{d / 'config.json'}: {known.value}"


def attnlab_no_weights(tmp):
    d = _attnlab(tmp / "ck")
    (d / "model.safetensors").unlink()
    return d, f"{d}: attnlab checkpoint has config.json but no model.safetensors"


def unsupported_model_type(tmp):
    d = tmp / "t5"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "t5", "architectures": ["T5Model"]}))  # no weights
    return d, f"{d / 'config.json'}: unsupported model_type='t5'; {SUPPORTED}"


def unsupported_architecture(tmp):
    d = tmp / "lm"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({**HF, "architectures": ["BertLMHeadModel"]}))  # no weights
    return d, (f"{d / 'config.json'}: architectures ['BertLMHeadModel'] not supported for model_type 'bert'; "
               "supported: BertModel, BertForMaskedLM, BertForPreTraining, BertForSequenceClassification, "
               "BertForTokenClassification, BertForNextSentencePrediction, BertForQuestionAnswering")


def garbled_config(tmp):
    d = _bert(tmp / "ck")
    (d / "config.json").write_text('{\n  "model_type": "bert",\n  "hidden_size": 32\n  "num_hidden_layers": 2\n}\n')
    return d, (f"{d / 'config.json'} is not valid JSON (line 4, column 3: Expecting ',' delimiter); "
               "fix it or fetch it again")


def config_disagrees_with_weights(tmp):
    d = _bert(tmp / "ck", config={**HF, "hidden_size": 64})
    return d, (f"{d / 'config.json'} has hidden_size=64 but the weights have 32 (embeddings.word_embeddings.weight "
               "has shape (101, 32)); use the config.json that came with these weights")


def config_has_more_layers(tmp):
    d = _bert(tmp / "ck", config={**HF, "num_hidden_layers": 3})
    return d, (f"{d / 'config.json'} has num_hidden_layers=3 but the weights have 2 (encoder.layer.0 to "
               "encoder.layer.1); use the config.json that came with these weights")


def config_value_rejected(tmp):
    d = _bert(tmp / "ck", config={**HF, "num_attention_heads": 5})
    return d, f"{d / 'config.json'}: EncoderConfig: d_model=32 is not divisible by num_heads=5"


def missing_shard(tmp):
    d = _bert(tmp / "ck")
    sd = load_file(d / "model.safetensors")
    (d / "model.safetensors").unlink()
    names = sorted(sd)
    save_file({k: sd[k] for k in names[:10]}, d / "model-00001-of-00002.safetensors")
    index = {"weight_map": {k: f"model-0000{1 + (i >= 10)}-of-00002.safetensors" for i, k in enumerate(names)}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    return d, (f"{d / 'model.safetensors.index.json'} lists 1 of 2 shards that are not in {d}: "
               f"model-00002-of-00002.safetensors; {REFETCH}")


def no_weights(tmp):
    d = _bert(tmp / "ck")
    (d / "model.safetensors").unlink()
    return d, (f"load_pretrained: {d} has config.json but no weights; expected one of model.safetensors, "
               "model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json")


def no_config(tmp):
    d = _bert(tmp / "ck")
    (d / "config.json").unlink()
    return d, f"load_pretrained: {d} has no config.json"


def file_not_directory(tmp):
    d = _bert(tmp / "ck")
    return d / "model.safetensors", (f"load_pretrained: {d / 'model.safetensors'} is a file; pass the checkpoint "
                                     f"directory that holds it ({d})")


def no_such_path(tmp):
    return tmp / "nope", f"load_pretrained: no directory {tmp / 'nope'}"


CORPUS = [code_running_pickle, code_running_raw_pickle, truncated_safetensors, safetensors_cut_in_its_header,
          zero_byte_safetensors, zero_byte_bin, truncated_bin, git_lfs_pointer, nested_state_dict, integer_weights,
          mismatched_shape, missing_weights, attnlab_missing_weights, attnlab_unexpected_weights,
          attnlab_integer_weights, attnlab_truncated, attnlab_unknown_family, attnlab_no_weights,
          unsupported_model_type, unsupported_architecture, garbled_config, config_disagrees_with_weights,
          config_has_more_layers, config_value_rejected, missing_shard, no_weights, no_config, file_not_directory,
          no_such_path]
ALSO = {  # the standard exception each refusal also is, for callers that catch those
    no_weights: FileNotFoundError, no_config: FileNotFoundError, no_such_path: FileNotFoundError,
    attnlab_no_weights: FileNotFoundError, missing_shard: FileNotFoundError, file_not_directory: NotADirectoryError,
    config_value_rejected: ConfigError,
}


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.__name__)
def test_refusal_is_one_line_naming_the_file(tmp_path, case):
    path, expected = case(tmp_path)
    with pytest.raises(CheckpointError) as e:
        load_pretrained(path)
    msg = str(e.value)
    assert "\n" not in msg and "weights_only=False" not in msg
    assert msg == expected
    assert str(path) in msg
    if case in ALSO:
        assert isinstance(e.value, ALSO[case])


@pytest.mark.parametrize("case", [code_running_pickle, code_running_raw_pickle], ids=lambda c: c.__name__)
def test_code_in_a_pickle_never_runs(tmp_path, case):
    path, _ = case(tmp_path)
    with pytest.raises(CheckpointError, match=f"wants to run {SYSTEM}; refused"):
        load_pretrained(path)
    assert not (tmp_path / "MARKER").exists()


def test_the_corpus_base_checkpoints_load(tmp_path):
    assert isinstance(load_pretrained(_bert(tmp_path / "hf")), Encoder)
    assert isinstance(load_pretrained(_attnlab(tmp_path / "own")), Encoder)


def test_gpt2_config_disagreeing_with_its_weights(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                  bos_token_id=None, eos_token_id=None)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**meta, "n_layer": 3}))
    with pytest.raises(CheckpointError) as e:
        load_pretrained(tmp_path)
    assert str(e.value) == (f"{tmp_path / 'config.json'} has n_layer=3 but the weights have 2 (transformer.h.0 to "
                            "transformer.h.1); use the config.json that came with these weights")
