"""The config of every seq2seq recipe (dates, translation): tokenizer, model, training and
decoding sections; a recipe subclasses :class:`Seq2SeqConfig` and adds its ``data`` section."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..config import Config
from ..train.config import TrainConfig

__all__ = ["TokenizerSection", "ModelSection", "DecodeSection", "Seq2SeqConfig"]



class TokenizerSection(Config):
    """How the texts become token ids (trained on the training split, saved with the run).

    Args:
        kind: "bpe" (subwords, SentencePiece-style) or "char" (one token per character).
        vocab_size: BPE vocabulary size, specials included (per side when not joint).
        joint: one vocabulary for source and target (and one shared embedding matrix).
        min_frequency: the least count of a pair BPE merges.
    """

    kind: Literal["bpe", "char"] = "bpe"
    vocab_size: int = Field(8000, ge=8)
    joint: bool = True
    min_frequency: int = Field(2, ge=1)


class ModelSection(Config):
    """The model: a registered seq2seq preset plus the common sizes (null keeps the preset's).

    ``model=rnn_attention`` on the command line is short for ``model.name=rnn_attention``.

    Args:
        name: a model preset of family encoder_decoder or rnn_seq2seq (``attnlab models list``).
        d_model: width (the Transformer's d_model; the RNN's hidden size).
        layers: blocks of the encoder and of the decoder (RNN: layers of each).
        heads: attention heads (Transformer).
        ffn_dim: feed-forward width (Transformer).
        dropout: dropout.
        options: any other field of the preset's config, e.g. {norm_first: false}.
    """

    name: str = "encoder_decoder"
    d_model: int | None = Field(None, ge=1)
    layers: int | None = Field(None, ge=1)
    heads: int | None = Field(None, ge=1)
    ffn_dim: int | None = Field(None, ge=1)
    dropout: float | None = Field(None, ge=0, lt=1)
    options: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value):
        return {"name": value} if isinstance(value, str) else value


class DecodeSection(Config):
    """Decoding of the final evaluation and of ``attnlab predict`` (validation is greedy).

    Args:
        beam: beam size (1 = greedy).
        length_penalty: beams are ranked by sum log p / length ** length_penalty.
        max_len_a, max_len_b: at most ``a * source_length + b`` tokens are generated.
        batch_size: sentences decoded together.
        average_last: average the weights of the last N step checkpoints for the final model
            (0: use the best checkpoint on the validation metric).
        val_limit: decode at most this many validation sentences at each evaluation (null: all).
    """

    beam: int = Field(4, ge=1)
    length_penalty: float = 1.0
    max_len_a: float = Field(1.5, ge=0)
    max_len_b: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    average_last: int = Field(0, ge=0)
    val_limit: int | None = Field(None, ge=1)


class Seq2SeqConfig(Config):
    """The common part of every seq2seq recipe config; recipes add their ``data`` section."""

    recipe: str
    description: str = ""
    tokenizer: TokenizerSection = TokenizerSection()
    model: ModelSection = ModelSection()
    train: TrainConfig = TrainConfig()
    decode: DecodeSection = DecodeSection()
