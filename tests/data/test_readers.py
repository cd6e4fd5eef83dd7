"""Text readers: plain and gzip lines, parallel files, TSV, JSONL, and their one-line errors."""

import gzip

import pytest

from attnlab.data import DataError, read_jsonl, read_lines, read_parallel, read_tsv


def write(path, data: bytes, gz: bool = False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg and isinstance(info.value, ValueError)
    return msg


def test_plain_and_gzip_give_the_same_lines(tmp_path):
    data = "Ein Mann.\r\nZwei  Hunde \nÄpfel\tund Öl\n\nlast".encode()
    plain = read_lines(write(tmp_path / "a.txt", data))
    packed = read_lines(write(tmp_path / "a.gz", data, gz=True))
    no_suffix = read_lines(write(tmp_path / "b.txt", data, gz=True))  # detected by the magic bytes
    assert plain == packed == no_suffix == ["Ein Mann.", "Zwei  Hunde ", "Äpfel\tund Öl", "", "last"]


def test_only_line_endings_are_stripped(tmp_path):
    assert read_lines(write(tmp_path / "a.txt", b" a \r\nb\rc\n\n")) == [" a ", "b\rc", ""]
    assert read_lines(write(tmp_path / "b.txt", b"\n")) == [""]


def test_missing_and_empty_files(tmp_path):
    missing = tmp_path / "nope.txt"
    assert one_line_error(read_lines, missing) == f"{missing}: no such file"
    empty = write(tmp_path / "empty.txt", b"")
    assert one_line_error(read_lines, empty) == f"{empty}: empty file"
    empty_gz = write(tmp_path / "empty.gz", b"", gz=True)
    assert one_line_error(read_lines, empty_gz) == f"{empty_gz}: empty file"


@pytest.mark.parametrize("gz", [False, True])
def test_invalid_utf8_names_line_and_column(tmp_path, gz):
    path = write(tmp_path / "bad.txt", "ok\nstill ok\nÄbÿ".encode("utf-8") + b"\xfe rest\nafter\n", gz=gz)
    # line 3 is "Äbÿ" (5 bytes, 3 characters) then the stray byte 0xfe: column 4 counts characters
    msg = one_line_error(read_lines, path)
    assert msg == f"{path}, line 3: not valid UTF-8 (byte 0xfe at column 4)"
    latin1 = write(tmp_path / "latin1.txt", "fine\ncaf\xe9\n".encode("latin-1"))
    assert one_line_error(read_lines, latin1) == f"{latin1}, line 2: not valid UTF-8 (byte 0xe9 at column 4)"


def test_corrupt_gzip(tmp_path):
    whole = gzip.compress(("line\n" * 1000).encode())
    truncated = write(tmp_path / "cut.gz", whole[: len(whole) // 2])
    assert one_line_error(read_lines, truncated).startswith(f"{truncated}: corrupt gzip file")
    garbage = write(tmp_path / "junk.gz", b"\x1f\x8b" + b"not really gzip")
    assert one_line_error(read_lines, garbage).startswith(f"{garbage}: corrupt gzip file")


def test_read_parallel(tmp_path):
    src = write(tmp_path / "train.de.gz", b"Ein Hund.\nEine Katze.\n", gz=True)
    tgt = write(tmp_path / "train.en", b"A dog.\nA cat.\n")
    assert read_parallel(src, tgt) == [("Ein Hund.", "A dog."), ("Eine Katze.", "A cat.")]
    short = write(tmp_path / "short.en", b"A dog.\n")
    msg = one_line_error(read_parallel, src, short)
    assert msg == f"{src} has 2 lines but {short} has 1; parallel files must be line-aligned"


def test_read_tsv(tmp_path):
    path = write(tmp_path / "a.tsv", b"text\tlabel\ngood film\t1\nbad\t0\n\n\n")
    assert read_tsv(path, header=True) == [("good film", "1"), ("bad", "0")]
    assert read_tsv(path)[0] == ("text", "label")
    assert read_tsv(write(tmp_path / "b.tsv", b"a\tb\tc\n"), columns=3) == [("a", "b", "c")]


def test_read_tsv_errors(tmp_path):
    path = write(tmp_path / "a.tsv", b"text\tlabel\ngood\t1\nno label here\nx\t0\n")
    assert one_line_error(read_tsv, path, header=True) == f"{path}, line 3: expected 2 tab-separated fields, got 1"
    blank_inside = write(tmp_path / "b.tsv", b"a\t1\n\nb\t0\n")  # only trailing blank lines are ignored
    assert one_line_error(read_tsv, blank_inside) == f"{blank_inside}, line 2: expected 2 tab-separated fields, got 1"
    three = write(tmp_path / "c.tsv", b"a\t1\tx\n")
    assert one_line_error(read_tsv, three) == f"{three}, line 1: expected 2 tab-separated fields, got 3"


def test_read_jsonl(tmp_path):
    data = b'{"source": "Hallo", "target": "Hello", "id": 1}\n\n{"target": "B", "source": "A"}\n'
    path = write(tmp_path / "a.jsonl", data)
    assert read_jsonl(path) == [("Hallo", "Hello"), ("A", "B")]
    assert read_jsonl(path, fields=("target",)) == [("Hello",), ("B",)]
    assert read_jsonl(write(tmp_path / "b.jsonl.gz", path.read_bytes(), gz=True)) == [("Hallo", "Hello"), ("A", "B")]


def test_read_jsonl_errors(tmp_path):
    bad = write(tmp_path / "bad.jsonl", b'{"source": "a", "target": "b"}\n{"source": "a", \n')
    msg = one_line_error(read_jsonl, bad)
    assert msg.startswith(f"{bad}, line 2: invalid JSON (") and "column" in msg
    missing = write(tmp_path / "missing.jsonl", b'{"source": "a", "target": "b"}\n\n{"source": "a", "tgt": "b"}\n')
    msg = one_line_error(read_jsonl, missing)
    assert msg.startswith(f"{missing}, line 3: missing field 'target'") and "'tgt'" in msg
    not_object = write(tmp_path / "list.jsonl", b'["a", "b"]\n')
    assert one_line_error(read_jsonl, not_object) == f"{not_object}, line 1: expected a JSON object, got array"
