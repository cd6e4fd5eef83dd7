"""Text readers for training recipes: plain or gzip lines, parallel files, TSV and JSONL.

    pairs = read_parallel("train.de.gz", "train.en.gz")     # [(src, tgt), ...]
    rows = read_tsv("train.tsv", columns=2, header=True)    # [(text, label), ...]

Every failure is a ``DataError`` whose message is one line naming the file (and the 1-based line
number where one applies), so a recipe can show it to the user as is.

What counts as text: UTF-8, lines ended by "\\n" or "\\r\\n". A UTF-8 byte-order mark at the start is
dropped (Windows editors write one; it is no part of the first field or header). A NUL byte is
refused: text never holds one, and where it appears the file is binary or UTF-16 (whose ASCII
letters are NUL-padded and would otherwise read as valid UTF-8 garbage). A line longer than
``MAX_LINE_BYTES`` is refused rather than read, so a small gzip bomb cannot take the memory.
"""

from __future__ import annotations

import gzip
import json
import re
import reprlib
import zlib
from pathlib import Path
from typing import Any, Sequence

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # little and big endian (UTF-32 LE starts with the first too)
MAX_LINE_BYTES = 1 << 28  # 256 MiB: far above any text line, far below what a gzip bomb would unpack
_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")  # how a lone surrogate gets into JSON
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80


class DataError(ValueError):
    """A data file that cannot be used; the message is one line naming the file."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).splitlines()))


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file, plain or gzip (detected by its magic bytes).

    Args:
        path: the file. Line endings ("\\n" or "\\r\\n") are stripped, and a UTF-8 byte-order mark
            at the start; nothing else is.

    Raises:
        DataError: the file is missing, unreadable, empty (zero lines), a corrupt gzip, holds
            bytes that are not UTF-8 or a NUL byte (the message gives the line and the 1-based
            character column), or a line longer than ``MAX_LINE_BYTES``.
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
            n = 0
            while raw := f.readline(MAX_LINE_BYTES + 1):
                n += 1
                if len(raw) > MAX_LINE_BYTES:
                    raise DataError(f"{path}, line {n}: longer than {MAX_LINE_BYTES:,} bytes; not a text file?")
                if n == 1:
                    raw = _first_line(raw, path)
                    if not raw:  # the file is a byte-order mark and nothing else
                        continue
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


def _first_line(raw: bytes, path) -> bytes:
    """The first line without its UTF-8 byte-order marks (a tool that adds one to a file that has
    one already leaves two); UTF-16 text is refused by name."""
    if raw.startswith(UTF8_BOM):
        while raw.startswith(UTF8_BOM):
            raw = raw[len(UTF8_BOM):]
        return raw
    if raw.startswith(UTF16_BOMS):
        raise DataError(f"{path}: UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8")
    return raw


def _decode(raw: bytes, path, n: int) -> str:
    """One line's bytes as text, the line ending removed."""
    if raw.endswith(b"\n"):
        raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        column = len(raw[: e.start].decode("utf-8")) + 1  # the prefix before the bad byte is valid
        raise DataError(f"{path}, line {n}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {column})") from None
    if "\x00" in text:
        raise DataError(f"{path}, line {n}: a NUL byte at column {text.index(chr(0)) + 1}; "
                        "expected UTF-8 text (a binary or UTF-16 file?)")
    return text


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to a length fit for a one-line message, however large or deep the value."""
    return _SHORT.repr(value)


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
        DataError: as ``read_lines``, or a line is not JSON (``NaN`` and lone surrogates are
            not), not an object, or lacks a field.
    """
    rows = []
    for n, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        obj = parse_json(line, path, n)
        if not isinstance(obj, dict):
            kind = _JSON_TYPES.get(type(obj), type(obj).__name__)
            raise DataError(f"{path}, line {n}: expected a JSON object, got {kind}")
        missing = [k for k in fields if k not in obj]
        if missing:
            keys = list(obj)
            more = f" and {len(keys) - 10} more" if len(keys) > 10 else ""
            have = ", ".join(short_repr(k) for k in keys[:10]) + more
            raise DataError(f"{path}, line {n}: missing field {missing[0]!r} (fields present: {have or 'none'})")
        rows.append(tuple(obj[k] for k in fields))
    return rows


def parse_json(text: str, path: str | Path, line: int | None = None) -> Any:
    """``text`` as strict JSON, else a ``DataError`` naming ``path`` (and the line).

    Args:
        text: one line of a JSONL file, or a whole JSON file.
        path: the file, for messages.
        line: the file line ``text`` is; None for a whole file (messages then give the line of
            a syntax error).
    """
    where = f"{path}, line {line}" if line is not None else str(path)
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        at = where if line is not None else f"{path}, line {e.lineno}"
        raise DataError(f"{at}: invalid JSON ({e.msg} at column {e.colno})") from None
    except _NotJSON as e:
        raise DataError(f"{where}: invalid JSON ({e})") from None
    except RecursionError:
        raise DataError(f"{where}: invalid JSON (nested too deeply)") from None
    except ValueError:  # the only other refusal of json.loads: an int past sys.get_int_max_str_digits()
        raise DataError(f"{where}: invalid JSON (a number with too many digits)") from None
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(obj):
        raise DataError(f"{where}: invalid JSON (a string holds a lone UTF-16 surrogate, which is not text)")
    return obj


class _NotJSON(ValueError):
    """Python's json reads NaN and Infinity; JSON has no such numbers."""


def _no_constant(name: str):
    raise _NotJSON(f"{name} is not a JSON number")


def _has_lone_surrogate(obj: Any) -> bool:
    """Whether a string anywhere in ``obj`` (keys included) holds a lone surrogate; iterative, so
    any depth that ``json.loads`` accepted is fine."""
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            try:
                x.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(x, dict):
            stack.extend(x)
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return False


__all__ = ["DataError", "MAX_LINE_BYTES", "parse_json", "read_jsonl", "read_lines", "read_parallel", "read_tsv",
           "short_repr"]
