"""Tokenizers trained on a recipe's training split, with the ``tokenizers`` library.

    tok = train_bpe(src_texts + tgt_texts, vocab_size=8000)     # one joint vocabulary
    ids = [BOS_ID] + tok.encode(text) + [EOS_ID]                # the recipe adds BOS/EOS itself
    save_tokenizer(tok, run_dir / "tokenizer")                  # load_tokenizer(run_dir / "tokenizer")

Both kinds share the special tokens ``SPECIAL_TOKENS`` at ids 0-3 and have no post-processor, so
``encode`` gives only the text's own tokens. Train on source and target texts together for a joint
vocabulary, or call once per side for separate ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from ..io import write_text
from .tokenizer import Tokenizer

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
_WHITESPACE = r"[\s\x1c-\x1f]+"  # what str.split() splits on (Oniguruma's \s misses \x1c-\x1f)


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """A SentencePiece-style BPE tokenizer (NFKC, Metaspace "▁" word boundaries).

    Whitespace runs become one space and the ends are stripped, so for characters seen in training
    ``decode(encode(s)) == " ".join(s.split())``; unseen characters become ``<unk>``.

    Args:
        texts: the training sentences.
        vocab_size: the vocabulary size, special tokens and the base characters included (the
            vocabulary is smaller when the texts have fewer merges to offer).
        min_frequency: the least count for a pair to be merged.
    """
    from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers import Tokenizer as Backend

    backend = Backend(models.BPE(unk_token="<unk>"))
    backend.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(_WHITESPACE), " "), normalizers.Strip()]
    )
    # prepend_scheme="always": every word, the first too, starts with "▁"; the decoder drops it again
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    backend.train_from_iterator(texts, trainer)
    return _wrap(backend)


def train_chars(texts: Iterable[str]) -> Tokenizer:
    """A character tokenizer: every character, space included, is one token.

    The vocabulary is ``SPECIAL_TOKENS`` then the sorted characters seen; unseen characters become
    ``<unk>``. Nothing is normalized, so ``decode(encode(s)) == s`` for seen characters.

    Args:
        texts: the training texts.
    """
    from tokenizers import Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as Backend

    chars = set()
    for text in texts:
        chars.update(text)
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(chars):
        vocab[ch] = len(vocab)
    backend = Backend(models.WordLevel(vocab, unk_token="<unk>"))
    # [\s\S], not ".": Oniguruma's "." skips "\n", which would leave runs of newlines as one piece
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(list(SPECIAL_TOKENS))  # ids 0-3 already; marks them special for decode
    return _wrap(backend)


def _wrap(backend) -> Tokenizer:
    for i, tok in enumerate(SPECIAL_TOKENS):
        if backend.token_to_id(tok) != i:  # an invariant of the trainers above
            raise RuntimeError(f"special token {tok} got id {backend.token_to_id(tok)}, not {i}")
    return Tokenizer(backend, pad_token="<pad>")


def save_tokenizer(tok: Tokenizer, path: str | Path) -> Path:
    """Save a tokenizer so that ``load_tokenizer(path)`` restores it.

    Args:
        tok: the tokenizer.
        path: a directory (created if needed); ``tokenizer.json`` and a small
            ``tokenizer_config.json`` (pad token, padding side, ``model_max_length``) are written
            into it, each atomically.

    Returns:
        The path of ``tokenizer.json``.
    """
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    config = {"pad_token": tok.pad_token, "padding_side": tok.padding_side}
    if tok.model_max_length is not None:
        config["model_max_length"] = tok.model_max_length
    write_text(d / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
    write_text(d / "tokenizer.json", tok.backend.to_str(pretty=True))
    return d / "tokenizer.json"


__all__ = ["BOS_ID", "EOS_ID", "PAD_ID", "SPECIAL_TOKENS", "UNK_ID", "save_tokenizer", "train_bpe", "train_chars"]
