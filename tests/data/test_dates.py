"""Dates data: every format read back by an independent parser, the %y rule, day-first slashes,
true weekdays, disjoint and deterministic splits, and atomic TSV writing."""

import datetime as dt
import random
import re

import pytest

from attnlab.data.dates import DATE_FORMATS, make_splits, normalize, render, supports, write_splits

MONTHS = "january february march april may june july august september october november december"
WEEKDAYS = "monday tuesday wednesday thursday friday saturday sunday"
MONTH_OF = {**{m: i + 1 for i, m in enumerate(MONTHS.split())},
            **{m[:3]: i + 1 for i, m in enumerate(MONTHS.split())}}
WEEKDAY_OF = {**{w: i for i, w in enumerate(WEEKDAYS.split())},
              **{w[:3]: i for i, w in enumerate(WEEKDAYS.split())}}
SUFFIX = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd", 31: "st"}


def yy(two: str) -> int:
    """strptime's %y rule, written out."""
    n = int(two)
    return 1900 + n if n >= 69 else 2000 + n


def parse(text: str) -> dt.date:
    """Read a rendered date back without the generator's tables: numeric forms are year-first
    when the year has 4 digits and otherwise day-first; worded forms name the month, may name a
    weekday (which must be right) and carry an ordinal suffix (which must be right)."""
    s = " ".join(text.lower().split())
    if m := re.fullmatch(r"(\d{4})(\d{2})(\d{2})", s):
        return dt.date(*map(int, m.groups()))
    if m := re.fullmatch(r"(\d+)([./-])(\d+)\2(\d+)", s):
        a, _, b, c = m.groups()
        if len(a) == 4:
            return dt.date(int(a), int(b), int(c))
        year = int(c) if len(c) == 4 else yy(c)
        return dt.date(year, int(b), int(a))
    if m := re.fullmatch(r"(\d{2})-([a-z]{3})-(\d{4})", s):
        return dt.date(int(m[3]), MONTH_OF[m[2]], int(m[1]))
    words = re.findall(r"[a-z]+|'?\d+(?:st|nd|rd|th)?", s)
    months = [MONTH_OF[w] for w in words if w in MONTH_OF]
    weekdays = [WEEKDAY_OF[w] for w in words if w in WEEKDAY_OF]
    assert len(months) == 1 and len(weekdays) <= 1, text
    assert set(w for w in words if w.isalpha()) <= set(MONTH_OF) | set(WEEKDAY_OF) | {"the", "of"}
    numbers = [w for w in words if not w.isalpha()]
    assert len(numbers) == 2, text
    long_years = [w for w in numbers if re.fullmatch(r"\d{4}", w)]
    year_tok = long_years[0] if long_years else numbers[-1]
    day_tok = next(w for w in numbers if w is not year_tok)
    year = int(year_tok) if len(year_tok) == 4 else yy(year_tok.lstrip("'"))
    day = int(re.match(r"\d+", day_tok)[0])
    if suffix := day_tok[len(str(day)):]:
        assert suffix == SUFFIX.get(day, "th"), text
    date = dt.date(year, months[0], day)
    if weekdays:
        assert weekdays[0] == date.weekday(), f"wrong weekday in {text!r}"
    return date


DATES = [dt.date(2021, 3, 3), dt.date(2021, 3, 4), dt.date(1900, 1, 1), dt.date(2099, 12, 31),
         dt.date(1969, 7, 20), dt.date(2068, 2, 29), dt.date(2000, 2, 29), dt.date(1999, 11, 11),
         dt.date(2012, 12, 12), dt.date(1913, 5, 13), dt.date(2022, 8, 21), dt.date(2023, 10, 22),
         dt.date(1950, 1, 23)]


def test_there_are_many_formats():
    assert len(DATE_FORMATS) >= 20


@pytest.mark.parametrize("fmt", sorted(DATE_FORMATS))
def test_every_format_reads_back(fmt):
    rng = random.Random(fmt)
    start = dt.date(1900, 1, 1)
    dates = DATES + [start + dt.timedelta(days=rng.randint(0, 73048)) for _ in range(200)]
    for date in dates:
        if supports(fmt, date):
            for _ in range(3):
                text = render(date, fmt, rng, noise=0.5)
                assert parse(text) == date, (fmt, text)


def test_short_years_follow_the_y_rule_and_only_where_faithful():
    short = [f for f in DATE_FORMATS if not supports(f, dt.date(1968, 1, 1))]
    assert short and all(not supports(f, dt.date(2069, 1, 1)) for f in short)
    assert all(supports(f, dt.date(1969, 1, 1)) and supports(f, dt.date(2068, 12, 31)) for f in short)
    rng = random.Random(0)
    for year, two in ((1969, "69"), (1999, "99"), (2000, "00"), (2068, "68"), (2021, "21")):
        for fmt in short:
            text = render(dt.date(year, 3, 4), fmt, rng, noise=0)
            assert re.search(rf"(?<!\d){two}$", text), text
            assert yy(two) == year
    with pytest.raises(ValueError, match="2-digit"):
        render(dt.date(1950, 3, 4), short[0], rng)


def test_slashed_dates_are_day_first():
    rng = random.Random(0)
    date = dt.date(2021, 3, 4)
    assert render(date, "slash_dmy", rng, noise=0) == "04/03/2021"
    assert render(date, "slash_dmy_unpadded", rng, noise=0) == "4/3/2021"
    assert render(date, "slash_dmy_yy", rng, noise=0) == "04/03/21"


def test_spec_examples_and_weekdays():
    rng = random.Random(0)
    date = dt.date(2021, 3, 3)  # a Wednesday
    seen = {render(date, f, rng, noise=0) for f in DATE_FORMATS for _ in range(10)}
    for example in ("Wednesday, March 3rd 2021", "Wed, March 3rd 2021", "3 Mar 21", "03/03/2021",
                    "the 3rd of March, 2021", "2021.03.03", "March 3, 2021", "3 March 2021",
                    "2021-03-03", "3.3.2021", "03/03/21", "20210303", "Wed, 3 Mar 2021"):
        assert example in seen
    assert not any("Tue" in s for s in seen)
    for day in range(1, 32):
        for text in {render(dt.date(2021, 1, day), "weekday_month_ord_yyyy", rng, noise=0)
                     for _ in range(6)}:
            assert text.split(",")[0][:3] == dt.date(2021, 1, day).strftime("%a")


@pytest.fixture(scope="module")
def splits():
    return make_splits(3000, 400, 400, seed=7)


def test_splits_sizes_targets_and_coverage(splits):
    assert {k: len(v) for k, v in splits.items()} == {"train": 3000, "val": 400, "test": 400}
    rows = [r for rows in splits.values() for r in rows]
    for source, target in rows:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", target)
        assert dt.date.fromisoformat(target).isoformat() == target
        assert parse(source) == dt.date.fromisoformat(target), source
    assert {dt.date.fromisoformat(t).year for _, t in rows} == set(range(1900, 2100))
    assert len({normalize(s) for s, _ in rows}) == len(rows)
    sources = [s for s, _ in rows]
    assert any(s != s.lower() and s != s.upper() and re.search("[a-z]", s) for s in sources)
    assert any(s.isupper() and re.search("[A-Z]", s) for s in sources)
    assert any("  " in s for s in sources)


def test_all_formats_are_used(splits):
    # Rebuild the choices: with noise=0 every source is exactly one format's rendering.
    clean = make_splits(3000, 0, 0, seed=7, noise=0)["train"]
    used = set()
    for source, target in clean:
        date = dt.date.fromisoformat(target)
        for fmt in set(DATE_FORMATS) - used:
            if supports(fmt, date) and any(render(date, fmt, random.Random(i), noise=0) == source
                                           for i in range(8)):
                used.add(fmt)
    assert used == set(DATE_FORMATS)


def test_splits_are_disjoint(splits):
    dates = {k: {t for _, t in v} for k, v in splits.items()}
    texts = {k: {normalize(s) for s, _ in v} for k, v in splits.items()}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not dates[a] & dates[b]
        assert not texts[a] & texts[b]


def test_splits_are_deterministic(splits):
    assert make_splits(3000, 400, 400, seed=7) == splits
    assert make_splits(3000, 400, 400, seed=8) != splits


def test_splits_respect_the_range_and_refuse_impossible_requests():
    out = make_splits(20, 5, 5, seed=0, start=dt.date(2020, 1, 1), end=dt.date(2020, 12, 31))
    assert all(t.startswith("2020-") for rows in out.values() for _, t in rows)
    with pytest.raises(ValueError, match="could not draw"):
        make_splits(10, 10, 10, seed=0, start=dt.date(2020, 1, 1), end=dt.date(2020, 1, 5))


def test_write_splits(tmp_path, splits):
    write_splits(tmp_path / "out", splits)
    for name, rows in splits.items():
        lines = (tmp_path / "out" / f"{name}.tsv").read_text(encoding="utf-8").splitlines()
        assert [tuple(line.split("\t")) for line in lines] == rows
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["test.tsv", "train.tsv", "val.tsv"]
    with pytest.raises(ValueError, match="tab"):
        write_splits(tmp_path / "bad", {"train": [("a\tb", "2021-01-01")]})
    assert not [p for p in (tmp_path / "bad").iterdir() if p.suffix == ".tsv"]
