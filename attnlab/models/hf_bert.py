"""Hugging Face BERT checkpoints onto :class:`~attnlab.models.encoder.Encoder`.

The config maps field by field; weights map by name (``bert.`` prefixes and the old
``gamma``/``beta`` LayerNorm names are accepted). Task heads (``cls.*``, ``classifier.*``) are not
part of the encoder and are left out. Supported: ``model_type == "bert"`` with absolute positions.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from .checkpoint import CheckpointError, copy_weights, read_state_dict
from .encoder import Encoder, EncoderConfig

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
        return EncoderConfig(
            vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"], ffn_dim=hf["intermediate_size"],
            max_len=hf.get("max_position_embeddings", 512), type_vocab_size=hf.get("type_vocab_size", 2),
            activation=ACTIVATIONS[act], dropout=hf.get("hidden_dropout_prob", 0.1),
            attn_dropout=hf.get("attention_probs_dropout_prob", 0.1), eps=hf.get("layer_norm_eps", 1e-12),
            pad_token_id=hf.get("pad_token_id") or 0,
        )
    except KeyError as e:
        raise CheckpointError(f"{where}: BERT config lacks {e.args[0]!r}") from None


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


def load_hf_bert(directory: Path, hf_config: dict) -> Encoder:
    """Build an :class:`Encoder` from a Hugging Face BERT checkpoint directory.

    Args:
        directory: holds ``config.json`` and the weights (safetensors or pytorch_model.bin).
        hf_config: the parsed ``config.json``.
    """
    where = str(directory)
    archs = hf_config.get("architectures") or ["BertModel"]
    if not any(a in ARCHITECTURES for a in archs):
        raise CheckpointError(f"{where}: architectures {archs} not supported for model_type 'bert'; "
                              f"supported: {', '.join(ARCHITECTURES)}")
    tensors = read_state_dict(directory)
    prefix = "bert." if any(k.startswith("bert.embeddings.") for k in tensors) else ""
    gamma_beta = f"{prefix}embeddings.LayerNorm.gamma" in tensors
    has_pooler = f"{prefix}pooler.dense.weight" in tensors
    config = config_from_hf(hf_config, where=f"{directory / 'config.json'}")
    config = config.replace(pooler=has_pooler, type_vocab_size=_segments(config, tensors, prefix))
    model = Encoder(config)
    copy_weights(model, tensors, weight_sources(config, prefix, gamma_beta, has_pooler), where)
    return model.eval()


def _segments(config: EncoderConfig, tensors: dict[str, Tensor], prefix: str) -> int:
    """type_vocab_size, or 0 when the checkpoint has no token_type embeddings (e.g. some distillations)."""
    return config.type_vocab_size if f"{prefix}embeddings.token_type_embeddings.weight" in tensors else 0


__all__ = ["config_from_hf", "weight_sources", "load_hf_bert", "ARCHITECTURES"]
