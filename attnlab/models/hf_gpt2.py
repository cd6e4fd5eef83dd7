"""Hugging Face GPT-2 checkpoints onto :class:`~attnlab.models.decoder.Decoder`.

    gpt = load_pretrained("path/to/gpt2-dir")      # dispatches here on model_type "gpt2"
    ids = gpt.generate(input_ids, max_new_tokens=32)

Two layout differences matter. HF GPT-2 uses ``Conv1D`` layers, which compute ``x @ W + b`` with
``W`` stored (in, out): the transpose of ``nn.Linear``'s (out, in). And its attention projects
q, k and v with one fused ``c_attn`` of width 3E, which is split here into ``q_proj``, ``k_proj``
and ``v_proj``. Keys come with or without the ``transformer.`` prefix (``GPT2LMHeadModel`` vs
``GPT2Model`` and the original OpenAI upload); the causal-mask buffers (``attn.bias``,
``attn.masked_bias``) and any extra heads are ignored. Supported: ``model_type == "gpt2"`` without
cross-attention, with the standard 1/sqrt(d) attention scaling.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from .checkpoint import (
    CheckpointConfigError, CheckpointError, check_sizes, copy_weights, dim_of, layer_count, read_state_dict,
    weights_file,
)
from .decoder import Decoder, DecoderConfig
from .registry import ConfigError

# HF activation_function -> attnlab activation
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}
ARCHITECTURES = ("GPT2LMHeadModel", "GPT2Model")


def config_from_hf(hf: dict, where: str = "config.json") -> DecoderConfig:
    """A :class:`DecoderConfig` from a Hugging Face GPT-2 ``config.json`` dict.

    Raises:
        CheckpointError: for variants the decoder does not reproduce (unscaled or layer-scaled
            attention, cross-attention, an unknown activation).
    """
    for key, default, bad in (("scale_attn_weights", True, False), ("scale_attn_by_inverse_layer_idx", False, True),
                              ("add_cross_attention", False, True)):
        if hf.get(key, default) == bad:
            raise CheckpointError(f"{where}: GPT-2 with {key}={bad} is not supported")
    act = hf.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS:
        raise CheckpointError(
            f"{where}: activation_function={act!r} is not supported; supported: {', '.join(ACTIVATIONS)}"
        )
    d_model = hf.get("n_embd", 768)
    config = DecoderConfig(
        vocab_size=hf.get("vocab_size", 50257), d_model=d_model, num_layers=hf.get("n_layer", 12),
        num_heads=hf.get("n_head", 12), ffn_dim=hf.get("n_inner") or 4 * d_model,
        max_len=hf.get("n_positions", 1024), position="learned", norm="layernorm", activation=ACTIVATIONS[act],
        dropout=hf.get("resid_pdrop", 0.1), attn_dropout=hf.get("attn_pdrop", 0.1),
        eps=hf.get("layer_norm_epsilon", 1e-5), tie_embeddings=hf.get("tie_word_embeddings", True),
        init_std=hf.get("initializer_range", 0.02),
    )
    try:
        config.validate()
    except ConfigError as e:
        raise CheckpointConfigError(f"{where}: {e}") from None
    return config


def convert_weights(tensors: dict[str, Tensor], config: DecoderConfig, prefix: str = "") -> tuple[dict, dict]:
    """Derive Decoder-layout tensors from HF GPT-2 ones.

    Conv1D weights are transposed and ``c_attn`` is split; the derived tensors get descriptive
    names (``"h.0.attn.c_attn.weight[q].T"``) so that errors point at the HF weight.

    Args:
        tensors: the checkpoint's tensors.
        config: the decoder's config.
        prefix: "transformer." or "", as the checkpoint names its keys.

    Returns:
        ``(derived, sources)``: the tensors (checkpoint ones plus derived ones) and the map
        Decoder state-dict name -> tensor name, for :func:`~attnlab.models.checkpoint.copy_weights`.
    """
    E = config.d_model
    derived = dict(tensors)
    sources = {
        "embed.token.weight": f"{prefix}wte.weight",  # (V, E)
        "embed.position.table.weight": f"{prefix}wpe.weight",  # (max_len, E)
        "norm.weight": f"{prefix}ln_f.weight",
        "norm.bias": f"{prefix}ln_f.bias",
        "lm_head.weight": f"{prefix}wte.weight" if config.tie_embeddings else "lm_head.weight",
    }

    def transposed(name: str) -> str:  # Conv1D (in, out) -> Linear (out, in)
        if name in tensors:
            derived[f"{name}.T"] = tensors[name].t().contiguous()
        return f"{name}.T"

    for i in range(config.num_layers):
        h, b = f"{prefix}h.{i}.", f"blocks.{i}."
        c_w, c_b = f"{h}attn.c_attn.weight", f"{h}attn.c_attn.bias"
        for j, part in enumerate("qkv"):
            if c_w in tensors:
                derived[f"{c_w}[{part}].T"] = tensors[c_w][:, j * E:(j + 1) * E].t().contiguous()  # (E, E)
            if c_b in tensors:
                derived[f"{c_b}[{part}]"] = tensors[c_b][j * E:(j + 1) * E]  # (E,)
            sources[f"{b}self_attn.{part}_proj.weight"] = f"{c_w}[{part}].T"
            sources[f"{b}self_attn.{part}_proj.bias"] = f"{c_b}[{part}]"
        sources.update({
            f"{b}self_attn.out_proj.weight": transposed(f"{h}attn.c_proj.weight"),
            f"{b}self_attn.out_proj.bias": f"{h}attn.c_proj.bias",
            f"{b}attn_norm.weight": f"{h}ln_1.weight",
            f"{b}attn_norm.bias": f"{h}ln_1.bias",
            f"{b}ffn_norm.weight": f"{h}ln_2.weight",
            f"{b}ffn_norm.bias": f"{h}ln_2.bias",
            f"{b}ffn.up.weight": transposed(f"{h}mlp.c_fc.weight"),  # (E, F) -> (F, E)
            f"{b}ffn.up.bias": f"{h}mlp.c_fc.bias",
            f"{b}ffn.down.weight": transposed(f"{h}mlp.c_proj.weight"),  # (F, E) -> (E, F)
            f"{b}ffn.down.bias": f"{h}mlp.c_proj.bias",
        })
    return derived, sources


def load_hf_gpt2(directory: Path, hf_config: dict) -> Decoder:
    """Build a :class:`Decoder` from a Hugging Face GPT-2 checkpoint directory, in eval mode.

    Args:
        directory: holds ``config.json`` and the weights (safetensors or pytorch_model.bin).
        hf_config: the parsed ``config.json``.
    """
    directory = Path(directory)
    cfg_file = directory / "config.json"
    archs = hf_config.get("architectures") or ["GPT2LMHeadModel"]
    if not any(a in ARCHITECTURES for a in archs):
        raise CheckpointError(f"{cfg_file}: architectures {archs} not supported for model_type 'gpt2'; "
                              f"supported: {', '.join(ARCHITECTURES)}")
    config = config_from_hf(hf_config, where=str(cfg_file))  # the config is refused before the weights are read
    where = str(weights_file(directory))
    tensors = read_state_dict(directory)
    prefix = "transformer." if "transformer.wte.weight" in tensors else ""
    inner = "n_inner" if hf_config.get("n_inner") else "n_inner (None: 4 * n_embd)"
    check_sizes(cfg_file, [  # a config.json that disagrees with the weights, named by its field
        ("n_embd", config.d_model, *dim_of(tensors, f"{prefix}wte.weight", 1)),  # (V, E)
        ("vocab_size", config.vocab_size, *dim_of(tensors, f"{prefix}wte.weight", 0)),
        ("n_layer", config.num_layers, *layer_count(tensors, f"{prefix}h.")),
        (inner, config.ffn_dim, *dim_of(tensors, f"{prefix}h.0.mlp.c_fc.weight", 1)),  # Conv1D (E, F)
        ("n_positions", config.max_len, *dim_of(tensors, f"{prefix}wpe.weight", 0)),  # (P, E)
    ])
    model = Decoder(config)
    derived, sources = convert_weights(tensors, config, prefix)
    copy_weights(model, derived, sources, where)
    return model.eval()


__all__ = ["config_from_hf", "convert_weights", "load_hf_gpt2", "ARCHITECTURES"]
