"""Tokenizers from checkpoint directories, through the Hugging Face ``tokenizers`` library.

    tok = load_tokenizer("path/to/all-MiniLM-L6-v2")
    batch = tok(["a cat", "a much longer sentence"], padding=True, return_tensors="pt")
    batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]     # (2, L) each

``tokenizer.json`` is read as is; a directory with only ``vocab.txt`` gets a BERT WordPiece
tokenizer (``tokenizers.BertWordPieceTokenizer``) set up from ``tokenizer_config.json``. Padding
and truncation are chosen per call, never inherited from the file (``tokenizer.json`` files often
carry a fixed padding length from their export).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

PAD_CHOICES = (False, True, "longest", "max_length", "do_not_pad")


class Tokenizer:
    """A callable wrapper of a ``tokenizers`` tokenizer with Hugging Face's calling convention.

    Args:
        backend: a ``tokenizers.Tokenizer`` (or an implementation such as
            ``BertWordPieceTokenizer``).
        model_max_length: the length ``truncation=True`` cuts to when ``max_length`` is None.
        pad_token: the padding token (must be in the vocabulary).
        padding_side: "right" or "left".
    """

    def __init__(self, backend, *, model_max_length: int | None = None, pad_token: str = "[PAD]",
                 padding_side: str = "right"):
        self.backend = backend
        self.model_max_length = model_max_length
        self.pad_token = pad_token
        pad_id = backend.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"Tokenizer: pad token {pad_token!r} is not in the vocabulary")
        self.pad_token_id = pad_id
        if padding_side not in ("right", "left"):
            raise ValueError(f"Tokenizer: padding_side must be 'right' or 'left', got {padding_side!r}")
        self.padding_side = padding_side
        backend.no_padding()
        backend.no_truncation()

    @property
    def vocab_size(self) -> int:
        """Size of the vocabulary, added tokens included."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __call__(
        self,
        text: str | Sequence[str],
        text_pair: str | Sequence[str] | None = None,
        *,
        padding: bool | str = False,
        truncation: bool | str = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
        add_special_tokens: bool = True,
    ) -> dict:
        """Tokenize one text or a batch.

        Args:
            text: a string or a list of strings.
            text_pair: second segments (token type 1), same count as ``text``.
            padding: False, True/"longest" (pad to the longest in the batch) or "max_length".
            truncation: cut to ``max_length`` (``model_max_length`` when None); pairs are cut
                longest-first.
            max_length: the length for truncation and ``padding="max_length"``.
            return_tensors: None (lists) or "pt" (long tensors; needs equal lengths).
            add_special_tokens: add [CLS]/[SEP] (the post-processor's template).

        Returns:
            A dict with ``input_ids``, ``attention_mask`` and ``token_type_ids``, each a list of
            lists (B, L) or a (B, L) tensor; a single string gives a batch of one.
        """
        texts = [text] if isinstance(text, str) else list(text)
        pairs = None if text_pair is None else ([text_pair] if isinstance(text_pair, str) else list(text_pair))
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"Tokenizer: {len(texts)} texts but {len(pairs)} text_pair entries")
        if padding not in PAD_CHOICES:
            raise ValueError(f"Tokenizer: padding must be one of {PAD_CHOICES}, got {padding!r}")
        if return_tensors not in (None, "pt"):
            raise ValueError(f"Tokenizer: return_tensors must be None or 'pt', got {return_tensors!r}")
        limit = max_length if max_length is not None else self.model_max_length
        if padding == "max_length" and limit is None:
            raise ValueError("Tokenizer: padding='max_length' needs max_length (the tokenizer has no model_max_length)")

        b = self.backend
        try:
            if truncation and limit is not None:
                b.enable_truncation(max_length=limit)
            if padding in (True, "longest", "max_length"):
                b.enable_padding(
                    direction=self.padding_side, pad_id=self.pad_token_id, pad_token=self.pad_token,
                    pad_type_id=0, length=limit if padding == "max_length" else None,
                )
            inputs = texts if pairs is None else list(zip(texts, pairs))
            encodings = b.encode_batch(inputs, add_special_tokens=add_special_tokens)
        finally:
            b.no_truncation()
            b.no_padding()

        out = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        if return_tensors == "pt":
            lengths = {len(ids) for ids in out["input_ids"]}
            if len(lengths) > 1:
                raise ValueError(
                    f"Tokenizer: sequences have different lengths {sorted(lengths)}; "
                    "pass padding=True to return tensors"
                )
            out = {k: torch.tensor(v, dtype=torch.long).reshape(len(texts), -1) for k, v in out.items()}
        return out

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of one text."""
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of a list of ids."""
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str | None]:
        return [self.backend.id_to_token(int(i)) for i in ids]

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, model_max_length={self.model_max_length})"


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """The tokenizer of a checkpoint directory.

    Args:
        directory: holds ``tokenizer.json``, or ``vocab.txt`` (BERT WordPiece), plus optionally
            ``tokenizer_config.json`` (lower-casing, ``model_max_length``, pad token) and
            ``special_tokens_map.json``.

    Raises:
        FileNotFoundError: neither tokenizer.json nor vocab.txt is there.
    """
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"load_tokenizer: no directory {d}")
    cfg = _read_json(d / "tokenizer_config.json")
    special = _read_json(d / "special_tokens_map.json")
    if (d / "tokenizer.json").is_file():
        from tokenizers import Tokenizer as Backend

        backend = Backend.from_file(str(d / "tokenizer.json"))
    elif (d / "vocab.txt").is_file():
        from tokenizers import BertWordPieceTokenizer

        backend = BertWordPieceTokenizer(
            str(d / "vocab.txt"), lowercase=cfg.get("do_lower_case", True),
            strip_accents=cfg.get("strip_accents"), handle_chinese_chars=cfg.get("tokenize_chinese_chars", True),
            clean_text=True,
        )
    else:
        raise FileNotFoundError(f"load_tokenizer: {d} has neither tokenizer.json nor vocab.txt")
    max_len = cfg.get("model_max_length")
    if not isinstance(max_len, int) or max_len > 10**6:  # HF writes a huge sentinel for "no limit"
        max_len = None
    pad = _token(special.get("pad_token")) or _token(cfg.get("pad_token")) or "[PAD]"
    return Tokenizer(backend, model_max_length=max_len, pad_token=pad, padding_side=cfg.get("padding_side", "right"))


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _token(entry) -> str | None:
    """A special token entry: a string or an AddedToken-like dict with "content"."""
    if isinstance(entry, dict):
        return entry.get("content")
    return entry


__all__ = ["Tokenizer", "load_tokenizer"]
