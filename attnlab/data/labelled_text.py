"""Labelled texts for classification: SST-2's TSV, Banking77's CSV and CLINC150's JSON.

    rows = read_labelled("train.tsv", "tsv")          # [("a gripping film", "1", "line 2"), ...]
    rows = read_labelled("train.csv.gz", "csv")       # Banking77: header text,category
    splits = read_clinc("data_full.json")             # {"train": [...], "oos_val": [...], ...}

Every failure is a one-line :class:`~attnlab.data.readers.DataError` naming the file and, where
one applies, the 1-based line: a row without a label, an empty text, a wrong header.
Labels are kept as written in the data (``"0"``/``"1"`` for SST-2, intent names otherwise). Each
row is ``(text, label, where)``; ``where`` says where in the file it came from ("line 12",
"test[3]"), for messages about a row that is read fine but cannot be used (an unseen label).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable

from .readers import DataError, parse_json, read_lines, short_repr

__all__ = ["read_labelled", "read_clinc", "FORMATS", "OOS_LABEL", "CLINC_SPLITS"]

OOS_LABEL = "oos"
CLINC_SPLITS = ("train", "val", "test", "oos_train", "oos_val", "oos_test")


def read_tsv_labelled(path: str | Path) -> list[tuple[str, str, str]]:
    """``text<TAB>label`` rows after a header line (GLUE's SST-2 ``sentence<TAB>label`` too)."""
    lines = read_lines(path)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(f"{path}: empty file")
    header = lines[0].split("\t")
    if len(header) != 2 or header[1].strip() != "label":
        raise DataError(f"{path}, line 1: expected the header 'text<TAB>label' (or 'sentence<TAB>label'), "
                        f"got {lines[0][:80]!r}")
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(f"{path}, line {n}: expected 2 tab-separated fields (text, label), got {len(fields)}")
        rows.append(_row(path, n, fields[0], fields[1]))
    return rows


def read_csv_labelled(path: str | Path) -> list[tuple[str, str, str]]:
    """Rows of a CSV with the header ``text,category`` (Banking77) or ``text,label``."""
    lines = read_lines(path)
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: empty file") from None
    except csv.Error as e:
        raise DataError(f"{path}, line 1: not CSV ({_csv_problem(e)})") from None
    if [h.strip() for h in header] not in (["text", "category"], ["text", "label"]):
        got = short_repr(",".join(header))
        raise DataError(f"{path}, line 1: expected the header 'text,category' (or 'text,label'), got {got}")
    rows = []
    try:
        for fields in reader:
            n = reader.line_num
            if not fields or not any(f.strip() for f in fields):
                continue
            if len(fields) != 2:
                raise DataError(f"{path}, line {n}: expected 2 comma-separated fields (text, label), got {len(fields)}")
            rows.append(_row(path, n, fields[0], fields[1]))
    except csv.Error as e:
        raise DataError(f"{path}, line {reader.line_num}: not CSV ({_csv_problem(e)})") from None
    return rows


def _csv_problem(e: csv.Error) -> str:
    # the csv module's own advice ("open the file in universal-newline mode") is for programmers
    if "new-line character" in str(e):
        return "a carriage return inside an unquoted field; lines must end in \\n or \\r\\n"
    return str(e)


def read_clinc(path: str | Path) -> dict[str, list[tuple[str, str, str]]]:
    """CLINC150's JSON object: keys among ``train``, ``val``, ``test``, ``oos_train``, ``oos_val``,
    ``oos_test``, each a list of ``[text, intent]`` (the out-of-scope ones labelled ``oos``).

    Args:
        path: the file, plain or gzip (``data_full.json``).
    """
    obj = parse_json("\n".join(read_lines(path)), path)
    if not isinstance(obj, dict) or not any(k in obj for k in CLINC_SPLITS):
        raise DataError(f"{path}: expected a JSON object with keys among {', '.join(CLINC_SPLITS)}")
    out = {}
    for key in CLINC_SPLITS:
        if key not in obj:
            continue
        items = obj[key]
        if not isinstance(items, list):
            raise DataError(f"{path}: key {key!r} must be a list of [text, intent] pairs")
        rows = []
        for i, item in enumerate(items):
            if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
                raise DataError(f"{path}: {key}[{i}] is not a [text, intent] pair of strings: {short_repr(item)}")
            rows.append(_row(path, None, item[0], item[1], where=f"{key}[{i}]"))
        out[key] = rows
    return out


def _row(path, n: int | None, text: str, label: str, where: str | None = None) -> tuple[str, str, str]:
    at = f"{path}, line {n}" if n is not None else f"{path}: {where}"
    if not text.strip():
        raise DataError(f"{at}: empty text")
    if not label.strip():
        raise DataError(f"{at}: no label")
    return text.strip(), label.strip(), f"line {n}" if n is not None else where


def _clinc_all(path) -> list[tuple[str, str, str]]:
    """Every labelled row of a CLINC file (for ``attnlab eval --data``: test + oos_test, or all)."""
    splits = read_clinc(path)
    for keys in (("test", "oos_test"), ("val", "oos_val")):
        if any(k in splits for k in keys):
            return [r for k in keys for r in splits.get(k, [])]
    return [r for rows in splits.values() for r in rows]


FORMATS: dict[str, Callable[[str | Path], list[tuple[str, str, str]]]] = {
    "tsv": read_tsv_labelled, "csv": read_csv_labelled, "clinc": _clinc_all,
}


def read_labelled(path: str | Path, fmt: str) -> list[tuple[str, str, str]]:
    """``(text, label, where)`` rows of a labelled file in format ``fmt`` ("tsv", "csv" or "clinc")."""
    if fmt not in FORMATS:
        raise DataError(f"unknown data format {fmt!r}; known: {', '.join(FORMATS)}")
    return FORMATS[fmt](path)
