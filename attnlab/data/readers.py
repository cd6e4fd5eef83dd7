"""Text readers for training recipes: plain or gzip lines, parallel files, TSV and JSONL.

    pairs = read_parallel("train.de.gz", "train.en.gz")     # [(src, tgt), ...]
    rows = read_tsv("train.tsv", columns=2, header=True)    # [(text, label), ...]

Every failure is a ``DataError`` whose message is one line naming the file (and the 1-based line
number where one applies), so a recipe can show it to the user as is.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Sequence

GZIP_MAGIC = b"\x1f\x8b"
_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


class DataError(ValueError):
    """A data file that cannot be used; the message is one line naming the file."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).splitlines()))


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file, plain or gzip (detected by its magic bytes).

    Args:
        path: the file. Line endings ("\\n" or "\\r\\n") are stripped; nothing else is.

    Raises:
        DataError: the file is missing, unreadable, empty (zero lines), a corrupt gzip, or holds
            bytes that are not UTF-8 (the message gives the line and the 1-based character column).
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: no such file")
    try:
        with open(p, "rb") as f:
            gz = f.read(2) == GZIP_MAGIC
        opener = gzip.open if gz else open
        lines = []
        with opener(p, "rb") as f:
            for n, raw in enumerate(f, start=1):
                lines.append(_decode(raw, path, n))
    except DataError:
        raise
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip file ({e or type(e).__name__})") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    if not lines:
        raise DataError(f"{path}: empty file")
    return lines


def _decode(raw: bytes, path, n: int) -> str:
    """One line's bytes as text, the line ending removed."""
    if raw.endswith(b"\n"):
        raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        column = len(raw[: e.start].decode("utf-8")) + 1  # the prefix before the bad byte is valid
        raise DataError(f"{path}, line {n}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {column})") from None


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> list[tuple[str, str]]:
    """Sentence pairs from two line-aligned files (e.g. ``train.de.gz`` and ``train.en.gz``).

    Args:
        src_path: source sentences, one per line.
        tgt_path: target sentences, one per line, same count.

    Raises:
        DataError: as ``read_lines``, or the line counts differ.
    """
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(
            f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; parallel files must be line-aligned"
        )
    return list(zip(src, tgt))


def read_tsv(path: str | Path, columns: int = 2, header: bool = False) -> list[tuple[str, ...]]:
    """Rows of a tab-separated file; blank lines at the very end are ignored.

    Args:
        path: the file (plain or gzip).
        columns: the number of fields every row must have.
        header: skip the first line.

    Raises:
        DataError: as ``read_lines``, or a row has the wrong number of fields.
    """
    lines = read_lines(path)
    while lines and not lines[-1].strip():
        lines.pop()
    rows = []
    for n, line in enumerate(lines, start=1):
        if header and n == 1:
            continue
        fields = tuple(line.split("\t"))
        if len(fields) != columns:
            raise DataError(f"{path}, line {n}: expected {columns} tab-separated fields, got {len(fields)}")
        rows.append(fields)
    return rows


def read_jsonl(path: str | Path, fields: Sequence[str] = ("source", "target")) -> list[tuple]:
    """The chosen fields of a file with one JSON object per line; blank lines are ignored.

    Args:
        path: the file (plain or gzip).
        fields: the keys to take from each object, in this order.

    Raises:
        DataError: as ``read_lines``, or a line is not JSON, not an object, or lacks a field.
    """
    rows = []
    for n, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, line {n}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            kind = _JSON_TYPES.get(type(obj), type(obj).__name__)
            raise DataError(f"{path}, line {n}: expected a JSON object, got {kind}")
        missing = [k for k in fields if k not in obj]
        if missing:
            have = ", ".join(repr(k) for k in obj) or "none"
            raise DataError(f"{path}, line {n}: missing field {missing[0]!r} (fields present: {have})")
        rows.append(tuple(obj[k] for k in fields))
    return rows


__all__ = ["DataError", "read_jsonl", "read_lines", "read_parallel", "read_tsv"]
