"""Tokenizers from checkpoint directories, through the Hugging Face ``tokenizers`` library.

    tok = load_tokenizer("path/to/all-MiniLM-L6-v2")
    batch = tok(["a cat", "a much longer sentence"], padding=True, return_tensors="pt")
    batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]     # (2, L) each

``tokenizer.json`` is read as is; a directory with only ``vocab.txt`` gets a BERT WordPiece
tokenizer (``tokenizers.BertWordPieceTokenizer``) set up from ``tokenizer_config.json``. Padding
and truncation are chosen per call, never inherited from the file (``tokenizer.json`` files often
carry a fixed padding length from their export). Every file is read as text by
:func:`~attnlab.data.readers.read_lines` (UTF-8, a byte-order mark dropped, CRLF as LF), and one
that is not what its name says is a one-line ``DataError`` naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from .readers import DataError, parse_json, read_lines, short_repr

PAD_CHOICES = (False, True, "longest", "max_length", "do_not_pad")
# Unicode White_Space, what Rust's trim_end() drops (str.rstrip() would also drop \x1c-\x1f)
_WHITE_SPACE = (" \t\n\x0b\x0c\r\x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
                + "\u2028\u2029\u202f\u205f\u3000")


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
        DataError: a file there is not what its name says (not UTF-8, not JSON, not a tokenizer,
            a setting of the wrong type, a vocabulary without the pad, [CLS] or [SEP] token);
            the one-line message names the file.
    """
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"load_tokenizer: no directory {d}")
    cfg_path, special_path = d / "tokenizer_config.json", d / "special_tokens_map.json"
    cfg = _read_json(cfg_path)
    special = _read_json(special_path)
    if (d / "tokenizer.json").is_file():
        source = d / "tokenizer.json"
        backend = _backend_from_json(source)
    elif (d / "vocab.txt").is_file():
        source = d / "vocab.txt"
        backend = _wordpiece(source, cfg, cfg_path)
    else:
        raise FileNotFoundError(f"load_tokenizer: {d} has neither tokenizer.json nor vocab.txt")
    max_len = _max_length(cfg.get("model_max_length"), cfg_path)
    pad = (_token(special.get("pad_token"), special_path, "pad_token")
           or _token(cfg.get("pad_token"), cfg_path, "pad_token") or "[PAD]")
    if backend.token_to_id(pad) is None:
        raise DataError(f"{source}: the pad token {short_repr(pad)} is not in the vocabulary")
    side = cfg.get("padding_side", "right")
    if side not in ("right", "left"):
        raise DataError(f"{cfg_path}: padding_side must be 'right' or 'left', got {short_repr(side)}")
    return Tokenizer(backend, model_max_length=max_len, pad_token=pad, padding_side=side)


def _read_json(path: Path) -> dict:
    """A JSON object file (``{}`` when there is none); a UTF-8 byte-order mark is allowed."""
    if not path.is_file():
        return {}
    obj = parse_json("\n".join(read_lines(path)), path)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _backend_from_json(path: Path):
    """A ``tokenizers.Tokenizer`` from its JSON file, read (and its UTF-8 checked) here first, so that
    every refusal names the file."""
    from tokenizers import Tokenizer as Backend

    text = "\n".join(read_lines(path))
    try:
        backend = Backend.from_str(text)
        backend.encode("a")  # a file that deserialises into something that cannot tokenize is no tokenizer
    except Exception as e:  # noqa: BLE001 - the Rust binding raises bare Exception for every refusal
        raise DataError(f"{path}: not a tokenizers JSON file ({_first_line(e)})") from None
    except BaseException as e:
        if type(e).__name__ != "PanicException":  # a Rust panic, raised as a BaseException by pyo3
            raise
        raise DataError(f"{path}: not a tokenizers JSON file ({_first_line(e)})") from None
    return backend


def _wordpiece(path: Path, cfg: dict, cfg_path: Path):
    """A BERT WordPiece tokenizer: one token per line of ``vocab.txt``, the id its 0-based line
    number. As the ``tokenizers`` reader of the file does, trailing white space is dropped and a
    token written twice keeps its last line; unlike it, the vocabulary is read here, so that a bad
    byte or a byte-order mark is found by ``read_lines`` and named by line."""
    from tokenizers import BertWordPieceTokenizer

    vocab = {line.rstrip(_WHITE_SPACE): i for i, line in enumerate(read_lines(path))}
    for tok in ("[CLS]", "[SEP]"):  # BertWordPieceTokenizer's post-processor needs both
        if tok not in vocab:
            raise DataError(f"{path}: no {tok} line; not a BERT WordPiece vocabulary")
    options = {}
    for key, arg in (("do_lower_case", "lowercase"), ("strip_accents", "strip_accents"),
                     ("tokenize_chinese_chars", "handle_chinese_chars")):
        value = cfg.get(key)
        if value is None:
            continue  # absent or null: BertWordPieceTokenizer's default (True, None, True)
        if not isinstance(value, bool):
            raise DataError(f"{cfg_path}: {key} must be true or false, got {short_repr(value)}")
        options[arg] = value
    return BertWordPieceTokenizer(vocab, clean_text=True, **options)


def _max_length(value, path: Path) -> int | None:
    """``model_max_length``: a positive int, or None for none or Hugging Face's huge "no limit" sentinel."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 10**6:
        return None  # HF writes int(1e30) for "no limit"
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise DataError(f"{path}: model_max_length must be a positive integer, got {short_repr(value)}")
    return value


def _token(entry, path: Path, key: str) -> str | None:
    """A special token entry: a string or an AddedToken-like dict with "content"."""
    content = entry.get("content") if isinstance(entry, dict) else entry
    if content is not None and not (isinstance(content, str) and content):
        raise DataError(f"{path}: {key} must be a token (a string, or an object with \"content\"), "
                        f"got {short_repr(entry)}")
    return content


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return short_repr(lines[0])[1:-1] if lines else type(e).__name__


__all__ = ["Tokenizer", "load_tokenizer"]
