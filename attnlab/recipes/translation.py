"""Recipe ``translation``: a Transformer on parallel text, scored with sacreBLEU (BLEU, chrF).

Presets ``multi30k-de-en`` and ``multi30k-en-de``. The data comes from ``data.dir`` (files
``{split}.{lang}.gz``) or, when no directory is given, from the Multi30k GitHub repository into
a cache folder. Validation decodes greedily; the final test uses beam search with a length
penalty (``decode.*``), optionally on the average of the last checkpoints.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ..config import Config
from ..data.multi30k import BASE_URL, multi30k_files
from ..data.readers import read_parallel
from .registry import register_recipe
from .seq2seq import Seq2SeqRecipe
from .seq2seq_config import Seq2SeqConfig

__all__ = ["TranslationData", "TranslationConfig", "TranslationRecipe"]


class TranslationData(Config):
    """Where the parallel text is.

    Args:
        dir: a folder with ``{split}.{lang}.gz`` (or plain) files; null downloads Multi30k.
        src: the source language code.
        tgt: the target language code.
        train, val, test: the split names (file stems).
        cache_dir: where downloads go (default ``$ATTNLAB_CACHE`` or ``~/.cache/attnlab``).
        base_url: the download folder URL.
        max_len: the longest training sentence kept, in tokens.
        limit: use only the first N training pairs (null: all), e.g. for smoke tests.
        eval_limit: use only the first N validation and test pairs (null: all; report
            numbers on the full sets).
    """

    dir: str | None = None
    src: str = "de"
    tgt: str = "en"
    train: str = "train"
    val: str = "val"
    test: str = "test_2016_flickr"
    cache_dir: str | None = None
    base_url: str = BASE_URL
    max_len: int = Field(128, ge=2)
    limit: int | None = Field(None, ge=1)
    eval_limit: int | None = Field(None, ge=1)


class TranslationConfig(Seq2SeqConfig):
    data: TranslationData = TranslationData()


@register_recipe
class TranslationRecipe(Seq2SeqRecipe):
    name = "translation"
    description = "Transformer translation on parallel text (Multi30k de-en / en-de presets), BLEU and chrF."
    config_cls = TranslationConfig

    def resolve(self, cfg):
        d = cfg.data
        absolute = {key: str(Path(value).expanduser().resolve()) for key in ("dir", "cache_dir")
                    if (value := getattr(d, key)) is not None}
        return cfg.model_copy(update={"data": d.model_copy(update=absolute)}) if absolute else cfg

    def load_pairs(self, cfg, log):
        d = cfg.data
        splits = {"train": d.train, "val": d.val, "test": d.test}
        files = multi30k_files((d.src, d.tgt), data_dir=d.dir, cache_dir=d.cache_dir, base_url=d.base_url,
                               splits=tuple(splits.values()), log=log)
        pairs = {key: read_parallel(*files[name]) for key, name in splits.items()}
        if d.limit:
            pairs["train"] = pairs["train"][: d.limit]
        if d.eval_limit:
            pairs["val"], pairs["test"] = pairs["val"][: d.eval_limit], pairs["test"][: d.eval_limit]
        return pairs

    def score(self, hyps, refs):
        import sacrebleu

        bleu = sacrebleu.corpus_bleu(hyps, [refs])
        chrf = sacrebleu.corpus_chrf(hyps, [refs])
        return {"bleu": round(bleu.score, 2), "chrf": round(chrf.score, 2)}
