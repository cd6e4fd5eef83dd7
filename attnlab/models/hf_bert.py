"""Hugging Face BERT checkpoints onto :class:`~attnlab.models.encoder.Encoder`, or onto a
:class:`~attnlab.models.classifier.SequenceClassifier` for ``BertForSequenceClassification``.

    model = load_pretrained("path/to/bert-sst2")     # BertForSequenceClassification -> SequenceClassifier
    model(input_ids, attention_mask=mask).logits     # (B, num_labels), HF's logits
    model.config.label_names                         # id2label in order, or None

The config maps field by field; weights map by name (``bert.`` prefixes and the old
``gamma``/``beta`` LayerNorm names are accepted). HF's classification head is pooler, dropout,
``classifier`` Linear: the classifier's ``pooling="pooler"`` with the same weights. Other task
heads (``cls.*``, token classifiers, QA spans) are not part of the encoder and are left out.
Supported: ``model_type == "bert"`` with absolute positions.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from .checkpoint import (
    CheckpointConfigError, CheckpointError, check_sizes, copy_weights, dim_of, layer_count, read_state_dict,
    weights_file,
)
from .classifier import ClassifierConfig, SequenceClassifier
from .encoder import Encoder, EncoderConfig
from .registry import ConfigError

# HF hidden_act -> attnlab activation
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu",
               "silu": "silu", "swish": "silu"}
ARCHITECTURES = ("BertModel", "BertForMaskedLM", "BertForPreTraining", "BertForSequenceClassification",
                 "BertForTokenClassification", "BertForNextSentencePrediction", "BertForQuestionAnswering")


def config_from_hf(hf: dict, where: str = "config.json") -> EncoderConfig:
    """An :class:`EncoderConfig` from a Hugging Face BERT ``config.json`` dict."""
    pos = hf.get("position_embedding_type", "absolute")
    if pos != "absolute":
        raise CheckpointError(f"{where}: position_embedding_type={pos!r} is not supported (only 'absolute')")
    act = hf.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise CheckpointError(f"{where}: hidden_act={act!r} is not supported; supported: {', '.join(ACTIVATIONS)}")
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        raise CheckpointError(f"{where}: BERT as a decoder (is_decoder/add_cross_attention) is not supported")
    try:
        config = EncoderConfig(
            vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"], ffn_dim=hf["intermediate_size"],
            max_len=hf.get("max_position_embeddings", 512), type_vocab_size=hf.get("type_vocab_size", 2),
            activation=ACTIVATIONS[act], dropout=hf.get("hidden_dropout_prob", 0.1),
            attn_dropout=hf.get("attention_probs_dropout_prob", 0.1), eps=hf.get("layer_norm_eps", 1e-12),
            pad_token_id=hf.get("pad_token_id") or 0,
        )
        config.validate()
    except KeyError as e:
        raise CheckpointError(f"{where}: BERT config lacks {e.args[0]!r}") from None
    except ConfigError as e:
        raise CheckpointConfigError(f"{where}: {e}") from None
    return config


def weight_sources(config: EncoderConfig, prefix: str = "", gamma_beta: bool = False,
                   pooler: bool = True) -> dict[str, str]:
    """attnlab state-dict name -> HF BERT weight name, for every encoder weight."""
    w, b = ("gamma", "beta") if gamma_beta else ("weight", "bias")

    def lin(tgt: str, src: str) -> dict[str, str]:
        return {f"{tgt}.weight": f"{prefix}{src}.weight", f"{tgt}.bias": f"{prefix}{src}.bias"}

    def ln(tgt: str, src: str) -> dict[str, str]:
        return {f"{tgt}.weight": f"{prefix}{src}.{w}", f"{tgt}.bias": f"{prefix}{src}.{b}"}

    e = "embeddings"
    m = {
        "embeddings.token.weight": f"{prefix}{e}.word_embeddings.weight",
        "embeddings.position.table.weight": f"{prefix}{e}.position_embeddings.weight",
        **ln("embeddings.norm", f"{e}.LayerNorm"),
    }
    if config.type_vocab_size:
        m["embeddings.segment.weight"] = f"{prefix}{e}.token_type_embeddings.weight"
    for i in range(config.num_layers):
        t, s = f"layers.{i}", f"encoder.layer.{i}"
        m |= lin(f"{t}.self_attn.q_proj", f"{s}.attention.self.query")
        m |= lin(f"{t}.self_attn.k_proj", f"{s}.attention.self.key")
        m |= lin(f"{t}.self_attn.v_proj", f"{s}.attention.self.value")
        m |= lin(f"{t}.self_attn.out_proj", f"{s}.attention.output.dense")
        m |= ln(f"{t}.attn_norm", f"{s}.attention.output.LayerNorm")
        m |= lin(f"{t}.ffn.up", f"{s}.intermediate.dense")
        m |= lin(f"{t}.ffn.down", f"{s}.output.dense")
        m |= ln(f"{t}.ffn_norm", f"{s}.output.LayerNorm")
    if pooler:
        m |= lin("pooler.dense", "pooler.dense")
    return m


def load_hf_bert(directory: Path, hf_config: dict) -> Encoder | SequenceClassifier:
    """Build an :class:`Encoder` (or, for ``BertForSequenceClassification`` with its
    ``classifier`` weights, a :class:`SequenceClassifier`) from a Hugging Face BERT checkpoint.

    Args:
        directory: holds ``config.json`` and the weights (safetensors or pytorch_model.bin).
        hf_config: the parsed ``config.json``.
    """
    cfg_file = Path(directory) / "config.json"
    archs = hf_config.get("architectures") or ["BertModel"]
    if not any(a in ARCHITECTURES for a in archs):
        raise CheckpointError(f"{cfg_file}: architectures {archs} not supported for model_type 'bert'; "
                              f"supported: {', '.join(ARCHITECTURES)}")
    config = config_from_hf(hf_config, where=str(cfg_file))  # the config is refused before the weights are read
    where = str(weights_file(directory))
    tensors = read_state_dict(directory)
    prefix = "bert." if any(k.startswith("bert.embeddings.") for k in tensors) else ""
    _check_sizes(cfg_file, config, tensors, prefix)
    gamma_beta = f"{prefix}embeddings.LayerNorm.gamma" in tensors
    has_pooler = f"{prefix}pooler.dense.weight" in tensors
    config = config.replace(pooler=has_pooler, type_vocab_size=_segments(config, tensors, prefix))
    if "BertForSequenceClassification" in archs and "classifier.weight" in tensors:
        head = _head_config(cfg_file, hf_config, tensors)
        model = SequenceClassifier(ClassifierConfig.from_encoder(config.replace(pooler=True), **head))
        sources = {f"encoder.{t}": s for t, s in weight_sources(config, prefix, gamma_beta, pooler=True).items()}
        sources |= {"head.classifier.weight": "classifier.weight", "head.classifier.bias": "classifier.bias"}
    else:
        model = Encoder(config)
        sources = weight_sources(config, prefix, gamma_beta, has_pooler)
    copy_weights(model, tensors, sources, where)
    return model.eval()


def _head_config(cfg_file: Path, hf: dict, tensors: dict[str, Tensor]) -> dict:
    """num_labels (from classifier.weight, checked against config.json), head_dropout and label_names."""
    num_labels = tensors["classifier.weight"].shape[0]  # (num_labels, hidden)
    id2label = hf.get("id2label")
    for what, n in (("num_labels", hf.get("num_labels")), ("id2label", len(id2label) if id2label else None)):
        if n is not None and n != num_labels:
            raise CheckpointError(f"{cfg_file} has {n} labels ({what}) but classifier.weight has {num_labels} "
                                  f"(shape {tuple(tensors['classifier.weight'].shape)}); use the config.json "
                                  "that came with these weights")
    names = None
    if id2label:
        try:
            names = [str(id2label[str(i)] if str(i) in id2label else id2label[i]) for i in range(num_labels)]
        except KeyError:
            raise CheckpointError(f"{cfg_file}: id2label keys {sorted(id2label)} are not 0 to {num_labels - 1}; "
                                  "number the labels from 0") from None
    dropout = hf.get("classifier_dropout")
    return {"num_labels": num_labels, "pooling": "pooler", "label_names": names,
            "head_dropout": hf.get("hidden_dropout_prob", 0.1) if dropout is None else dropout}


def _check_sizes(cfg_file: Path, config: EncoderConfig, tensors: dict[str, Tensor], prefix: str) -> None:
    """A config.json that disagrees with the weights is named by its field, not by a shape mismatch."""
    emb, pos = f"{prefix}embeddings.word_embeddings.weight", f"{prefix}embeddings.position_embeddings.weight"
    up = f"{prefix}encoder.layer.0.intermediate.dense.weight"
    check_sizes(cfg_file, [
        ("hidden_size", config.d_model, *dim_of(tensors, emb, 1)),  # (V, E)
        ("vocab_size", config.vocab_size, *dim_of(tensors, emb, 0)),
        ("num_hidden_layers", config.num_layers, *layer_count(tensors, f"{prefix}encoder.layer.")),
        ("intermediate_size", config.ffn_dim, *dim_of(tensors, up, 0)),  # (F, E)
        ("max_position_embeddings", config.max_len, *dim_of(tensors, pos, 0)),  # (P, E)
    ])


def _segments(config: EncoderConfig, tensors: dict[str, Tensor], prefix: str) -> int:
    """type_vocab_size, or 0 when the checkpoint has no token_type embeddings (e.g. some distillations)."""
    return config.type_vocab_size if f"{prefix}embeddings.token_type_embeddings.weight" in tensors else 0


__all__ = ["config_from_hf", "weight_sources", "load_hf_bert", "ARCHITECTURES"]
