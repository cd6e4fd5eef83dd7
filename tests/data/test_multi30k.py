"""Multi30k files: a local data_dir, and the download path run offline through file:// URLs."""

import gzip
import shutil
from pathlib import Path

import pytest

from attnlab.data import DataError, multi30k_files, read_parallel
from attnlab.data.multi30k import BASE_URL, SPLITS, default_cache_dir

MULTI30K = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "multi30k"


@pytest.fixture
def shared_multi30k() -> Path:
    if not MULTI30K.is_dir():
        pytest.skip(f"../shared/data/multi30k not found: expected at {MULTI30K}")
    return MULTI30K


def test_constants():
    assert BASE_URL == "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw"
    assert SPLITS == ("train", "val", "test_2016_flickr")


def test_download_from_file_url(shared_multi30k, tmp_path):
    messages = []
    files = multi30k_files(("de", "en"), cache_dir=tmp_path, base_url=shared_multi30k.as_uri(), log=messages.append)
    folder = tmp_path / "multi30k"
    assert files == {s: (folder / f"{s}.de.gz", folder / f"{s}.en.gz") for s in SPLITS}
    assert len(messages) == 6 and all(m.startswith("downloading file://") for m in messages)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{s}.{lang}.gz" for s in SPLITS for lang in ("de", "en"))
    for src, tgt in files.values():  # byte-identical copies
        assert src.read_bytes() == (shared_multi30k / src.name).read_bytes()
    assert len(read_parallel(*files["val"])) == 1014

    messages.clear()  # present files are not fetched again
    assert multi30k_files(("de", "en"), cache_dir=tmp_path, base_url=shared_multi30k.as_uri(),
                          log=messages.append) == files
    assert messages == []


def test_cache_dir_from_environment(shared_multi30k, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache"
    files = multi30k_files(("en", "de"), base_url=shared_multi30k.as_uri(), splits=("val",))
    folder = tmp_path / "cache" / "multi30k"
    assert files == {"val": (folder / "val.en.gz", folder / "val.de.gz")}


def test_data_dir(shared_multi30k):
    files = multi30k_files(("de", "en"), data_dir=shared_multi30k)
    test = files["test_2016_flickr"]
    assert test == (shared_multi30k / "test_2016_flickr.de.gz", shared_multi30k / "test_2016_flickr.en.gz")


def test_data_dir_missing_file(tmp_path):
    for name in ("train.de.gz", "train.en.gz", "val.de.gz"):
        (tmp_path / name).write_bytes(gzip.compress(b"x\n"))
    with pytest.raises(DataError) as info:
        multi30k_files(("de", "en"), data_dir=tmp_path)
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 'val.en.gz'}: no such file (data.dir holds ") and "train.de.gz" in msg
    assert "\n" not in msg
    with pytest.raises(DataError, match="no such folder"):
        multi30k_files(("de", "en"), data_dir=tmp_path / "absent")


def test_unreachable_url(tmp_path):
    url = (tmp_path / "nowhere").as_uri()
    with pytest.raises(DataError) as info:
        multi30k_files(("de", "en"), cache_dir=tmp_path / "cache", base_url=url, splits=("val",))
    msg = str(info.value)
    assert msg.startswith(f"could not download {url}/val.de.gz (") and "data.dir=" in msg and "\n" not in msg
    assert list((tmp_path / "cache" / "multi30k").iterdir()) == []  # no partial files left


def test_download_rejects_non_gzip(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "val.de.gz").write_text("<html>not found</html>")
    (src / "val.en.gz").write_bytes(b"")
    with pytest.raises(DataError, match="not a gzip file"):
        multi30k_files(("de", "en"), cache_dir=tmp_path, base_url=src.as_uri(), splits=("val",))
    shutil.copy(src / "val.en.gz", src / "val.de.gz")
    with pytest.raises(DataError, match="an empty file"):
        multi30k_files(("de", "en"), cache_dir=tmp_path, base_url=src.as_uri(), splits=("val",))
    assert list((tmp_path / "multi30k").iterdir()) == []
