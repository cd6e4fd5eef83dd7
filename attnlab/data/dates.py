"""Human-written dates paired with their ISO form: the data of the ``dates`` recipe.

Reading "Tuesday, March 3rd 2021" into ``2021-03-03`` is the classic demonstration that
attention learns an alignment (the model's output digits attend to the matching source words).

    splits = make_splits(8000, 1000, 1000, seed=0)
    splits["train"][0]                     # ("3 mar 21", "2021-03-03")
    write_splits("data/dates", splits)     # train.tsv, val.tsv, test.tsv

Conventions:

* Slashed, dotted and dashed numeric dates with the year last are DAY-first (``04/03/2021`` is
  4 March); with the year first they are year-month-day.
* Two-digit years follow ``strptime``'s ``%y``: 69-99 are 1969-1999 and 00-68 are 2000-2068. A
  two-digit-year format is used only for years in 1969-2068, where the rule gives the true year
  back (see :func:`supports`).
* Weekday names, where a format has one, are the date's true weekday.

:func:`render` adds noise on top of a format: mixed case (lower, UPPER, Title, rAnDoM) and stray
doubled spaces. Targets are always clean ISO dates.
"""

from __future__ import annotations

import datetime as dt
import os
import random
from pathlib import Path
from typing import Callable

from ..io import write_text
from ..registry import Registry

MONTHS = [  # English, whatever the locale
    "January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
MONTHS_ABBR = [m[:3] for m in MONTHS]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
WEEKDAYS_ABBR = [w[:3] for w in WEEKDAYS]

# Years a two-digit year renders faithfully under the %y rule.
TWO_DIGIT_YEARS = range(1969, 2069)

Formatter = Callable[[dt.date, random.Random], str]
# Iterated in registration order by make_splits, so the order is part of the data.
DATE_FORMATS: Registry[Formatter] = Registry("date format")
SHORT_YEAR_FORMATS: set[str] = set()


def register(name: str, *, short_year: bool = False) -> Callable[[Formatter], Formatter]:
    """Register a format under ``name``; ``short_year`` marks one that writes a 2-digit year.

    Raises:
        ValueError: another format is already registered under ``name``.
    """

    def deco(fn: Formatter) -> Formatter:
        DATE_FORMATS.register(name, fn)
        if short_year:
            SHORT_YEAR_FORMATS.add(name)
        return fn

    return deco


def ordinal(n: int) -> str:
    """1 -> '1st', 2 -> '2nd', 11 -> '11th', 22 -> '22nd'."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _month(d: dt.date, rng: random.Random) -> str:
    return rng.choice((MONTHS, MONTHS_ABBR))[d.month - 1]


def _weekday(d: dt.date, rng: random.Random) -> str:
    return rng.choice((WEEKDAYS, WEEKDAYS_ABBR))[d.weekday()]


def _yy(d: dt.date) -> str:
    return f"{d.year % 100:02d}"


# Year first, numeric.
register("iso")(lambda d, r: f"{d.year:04d}-{d.month:02d}-{d.day:02d}")
register("compact")(lambda d, r: f"{d.year:04d}{d.month:02d}{d.day:02d}")
register("dotted_ymd")(lambda d, r: f"{d.year:04d}.{d.month:02d}.{d.day:02d}")
register("slash_ymd")(lambda d, r: f"{d.year:04d}/{d.month:02d}/{d.day:02d}")
# Day first, numeric.
register("slash_dmy")(lambda d, r: f"{d.day:02d}/{d.month:02d}/{d.year:04d}")
register("slash_dmy_unpadded")(lambda d, r: f"{d.day}/{d.month}/{d.year:04d}")
register("slash_dmy_yy", short_year=True)(lambda d, r: f"{d.day:02d}/{d.month:02d}/{_yy(d)}")
register("dot_dmy")(lambda d, r: f"{d.day}.{d.month}.{d.year:04d}")
register("dot_dmy_padded")(lambda d, r: f"{d.day:02d}.{d.month:02d}.{d.year:04d}")
register("dot_dmy_yy", short_year=True)(lambda d, r: f"{d.day}.{d.month}.{_yy(d)}")
register("dash_dmy")(lambda d, r: f"{d.day:02d}-{d.month:02d}-{d.year:04d}")
# Day first, named month.
register("d_month_yyyy")(lambda d, r: f"{d.day} {_month(d, r)} {d.year}")
register("d_mon_yy", short_year=True)(lambda d, r: f"{d.day} {MONTHS_ABBR[d.month - 1]} {_yy(d)}")
register("dd_mon_yyyy_dashed")(lambda d, r: f"{d.day:02d}-{MONTHS_ABBR[d.month - 1]}-{d.year}")
register("ord_month_yyyy")(lambda d, r: f"{ordinal(d.day)} {_month(d, r)} {d.year}")
register("ord_of_month_yyyy")(lambda d, r: f"{ordinal(d.day)} of {_month(d, r)} {d.year}")
register("the_ord_of_month_yyyy")(lambda d, r: f"the {ordinal(d.day)} of {_month(d, r)}, {d.year}")
register("weekday_d_month_yyyy")(lambda d, r: f"{_weekday(d, r)} {d.day} {_month(d, r)} {d.year}")
register("wkd_d_mon_yyyy")(  # RFC 2822 style
    lambda d, r: f"{WEEKDAYS_ABBR[d.weekday()]}, {d.day} {MONTHS_ABBR[d.month - 1]} {d.year}")
register("weekday_the_ord_of_month_yyyy")(
    lambda d, r: f"{_weekday(d, r)} the {ordinal(d.day)} of {_month(d, r)} {d.year}")
# Month first, named month.
register("month_d_yyyy")(lambda d, r: f"{_month(d, r)} {d.day}, {d.year}")
register("month_ord_yyyy")(lambda d, r: f"{_month(d, r)} {ordinal(d.day)} {d.year}")
register("mon_d_yy", short_year=True)(lambda d, r: f"{MONTHS_ABBR[d.month - 1]} {d.day} '{_yy(d)}")
register("weekday_month_ord_yyyy")(
    lambda d, r: f"{_weekday(d, r)}, {_month(d, r)} {ordinal(d.day)} {d.year}")
register("weekday_month_d_yyyy")(lambda d, r: f"{_weekday(d, r)} {_month(d, r)} {d.day}, {d.year}")
# Year first, named month.
register("yyyy_month_d")(lambda d, r: f"{d.year} {_month(d, r)} {d.day}")


def supports(fmt_name: str, date: dt.date) -> bool:
    """Whether ``fmt_name`` writes ``date`` faithfully (2-digit years only for 1969-2068)."""
    if fmt_name not in DATE_FORMATS:
        raise DATE_FORMATS.unknown(fmt_name)  # a ConfigError, with the nearest name
    return fmt_name not in SHORT_YEAR_FORMATS or date.year in TWO_DIGIT_YEARS


def _mixed_case(text: str, rng: random.Random) -> str:
    style = rng.choice(("keep", "lower", "upper", "title", "random"))
    if style == "lower":
        return text.lower()
    if style == "upper":
        return text.upper()
    if style == "title":
        return text.title()
    if style == "random":
        return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in text)
    return text


def _stray_spaces(text: str, rng: random.Random) -> str:
    # Doubles some inner spaces; never adds leading or trailing ones (TSV readers strip those).
    return "".join(" " + " " * rng.randint(1, 2) if c == " " and rng.random() < 0.5 else c
                   for c in text)


def render(date: dt.date, fmt_name: str, rng: random.Random, noise: float = 0.3) -> str:
    """Write ``date`` in format ``fmt_name``.

    Args:
        date: the date to write.
        fmt_name: a key of :data:`DATE_FORMATS`; it must :func:`support <supports>` ``date``.
        rng: the source of the format's choices (full or abbreviated names) and of the noise.
        noise: the probability of a case change, and, separately, of stray doubled spaces.
    """
    if not supports(fmt_name, date):
        raise ValueError(f"format {fmt_name!r} writes a 2-digit year, which the %y rule reads "
                         f"back as another year than {date.year}")
    text = DATE_FORMATS[fmt_name](date, rng)
    if rng.random() < noise:
        text = _mixed_case(text, rng)
    if rng.random() < noise:
        text = _stray_spaces(text, rng)
    return text


def normalize(text: str) -> str:
    """The form splits are compared in: lowercased, runs of whitespace collapsed, stripped."""
    return " ".join(text.lower().split())


def make_splits(n_train: int, n_val: int, n_test: int, seed: int,
                start: dt.date = dt.date(1900, 1, 1), end: dt.date = dt.date(2099, 12, 31),
                noise: float = 0.3) -> dict[str, list[tuple[str, str]]]:
    """Disjoint train/val/test lists of ``(source text, ISO target)`` pairs.

    Splits are disjoint by underlying date: a date belongs to the first split that draws it, and
    the others reject it, so every test date is a date never seen in training or validation (and
    hence no test text, after :func:`normalize`, appears there either; this is checked as well).
    Within a split no normalized text repeats. Dates are drawn uniformly from ``[start, end]`` and
    formats uniformly from those that support the date. Deterministic for a ``seed``.

    Args:
        n_train, n_val, n_test: the number of pairs in each split.
        seed: the seed of the one ``random.Random`` that makes every choice.
        start, end: the range of dates, both included.
        noise: passed to :func:`render`.
    """
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    rng = random.Random(seed)
    span = (end - start).days
    names = list(DATE_FORMATS)
    owner: dict[dt.date, str] = {}  # date -> the split it belongs to
    seen: dict[str, str] = {}  # normalized text -> split
    splits: dict[str, list[tuple[str, str]]] = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        rows: list[tuple[str, str]] = []
        attempts = 0
        while len(rows) < n:
            attempts += 1
            if attempts > 50 * n + 1000:
                raise ValueError(f"could not draw {n} distinct {split} dates from {start}..{end}; "
                                 "widen the range or ask for fewer")
            date = start + dt.timedelta(days=rng.randint(0, span))
            if owner.setdefault(date, split) != split:
                continue
            text = render(date, rng.choice([f for f in names if supports(f, date)]), rng, noise)
            key = normalize(text)
            if key in seen:
                continue
            seen[key] = split
            rows.append((text, date.isoformat()))
        splits[split] = rows
    return splits


def write_splits(directory: str | os.PathLike, splits: dict[str, list[tuple[str, str]]]) -> None:
    """Write each split to ``directory/<split>.tsv`` as ``source<TAB>target`` lines, UTF-8.

    Each file is written to a temporary file in the same directory and moved into place with
    ``os.replace``, so a reader never sees half a file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        lines = []
        for source, target in rows:
            if any(c in source or c in target for c in "\t\r\n"):
                raise ValueError(f"tab or newline in a {split} pair: {(source, target)!r}")
            lines.append(f"{source}\t{target}\n")
        write_text(directory / f"{split}.tsv", "".join(lines))
