"""attnlab models: typed configs and presets by name, BERT-style encoders, task heads,
checkpoint loading (attnlab's own and Hugging Face's) and sentence embeddings.

    from attnlab.models import create, model_names, load_pretrained, embed
    model = create("encoder-tiny", num_layers=3)
    bert = load_pretrained("path/to/all-MiniLM-L6-v2")
    gpt = load_pretrained("path/to/gpt2"); ids = gpt.generate(input_ids, max_new_tokens=32)
"""

from .registry import ConfigError, ModelConfig, config_class, create, get_config, model_names, register_model
from .outputs import EncoderOutput, SequenceClassifierOutput
from .checkpoint import CheckpointError, PretrainedModel, copy_weights, read_state_dict
from .encoder import Encoder, EncoderConfig, Pooler
from .classifier import ClassifierConfig, SequenceClassifier
from .bilstm_classifier import BiLSTMClassifier, BiLSTMClassifierConfig
from .decoder import CausalLMOutput, Decoder, DecoderConfig
from .vit import ViT, ViTConfig
from .cnn_attention import CNNAttention, CNNAttentionConfig
from .rnn_attention import BiLSTMTagger, BiLSTMTaggerConfig, RNNSeq2Seq, RNNSeq2SeqConfig
from .generation import GenerationMixin, generate
from .encoder_decoder import EncoderDecoder, EncoderDecoderConfig
from .heads import (
    RegressionHead, SequenceClassificationHead, TokenClassificationHead, get_pooling, mean_pool,
    register_pooling,
)
from .pretrained import load_pretrained, register_loader, resolve_checkpoint
from .embed import embed
from .positions import extend_positions
from .registry import load_preset_files

load_preset_files()  # the YAML presets in attnlab/configs/models, now that every family is imported

__all__ = [
    "ModelConfig", "ConfigError", "register_model", "create", "get_config", "model_names", "config_class",
    "EncoderOutput", "SequenceClassifierOutput",
    "PretrainedModel", "CheckpointError", "read_state_dict", "copy_weights",
    "Encoder", "EncoderConfig", "Pooler", "ClassifierConfig", "SequenceClassifier",
    "BiLSTMClassifier", "BiLSTMClassifierConfig",
    "Decoder", "DecoderConfig", "CausalLMOutput", "GenerationMixin", "generate",
    "EncoderDecoder", "EncoderDecoderConfig",
    "ViT", "ViTConfig", "CNNAttention", "CNNAttentionConfig",
    "RNNSeq2Seq", "RNNSeq2SeqConfig", "BiLSTMTagger", "BiLSTMTaggerConfig",
    "SequenceClassificationHead", "TokenClassificationHead", "RegressionHead", "mean_pool", "get_pooling", "register_pooling",
    "load_pretrained", "register_loader", "resolve_checkpoint", "embed", "extend_positions",
]
