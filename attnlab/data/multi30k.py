"""Multi30k task 1 (image-caption translation, en/de/fr): the raw gzip files per split.

    files = multi30k_files(("de", "en"))                    # downloads once into the cache
    files = multi30k_files(("de", "en"), data_dir="data/")  # or a folder already holding them
    pairs = read_parallel(*files["train"])

Files come from the dataset's repository (``BASE_URL``) into ``$ATTNLAB_CACHE/multi30k`` (default
``~/.cache/attnlab/multi30k``), each written atomically and kept for later runs.
"""

from __future__ import annotations

import gzip
import os
import shutil
import urllib.request
import zlib
from pathlib import Path
from typing import Callable, Sequence

from ..io import atomic_path
from .readers import GZIP_MAGIC, DataError

BASE_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw"
SPLITS = ("train", "val", "test_2016_flickr")


def multi30k_files(
    langs: tuple[str, str],
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    base_url: str = BASE_URL,
    splits: Sequence[str] = SPLITS,
    log: Callable[[str], None] | None = None,
) -> dict[str, tuple[Path, Path]]:
    """The source and target file of each split, downloaded if needed.

    Args:
        langs: (source, target) language codes, e.g. ("de", "en").
        data_dir: a folder holding ``{split}.{lang}.gz``; nothing is downloaded.
        cache_dir: where downloads go, in a ``multi30k`` subfolder (default ``$ATTNLAB_CACHE`` or
            ``~/.cache/attnlab``); files already there are not fetched again.
        base_url: the folder URL the files are fetched from (``file://`` URLs work too).
        splits: the splits wanted.
        log: called with a "downloading ..." message before each download.

    Returns:
        ``{split: (source_path, target_path)}``.

    Raises:
        DataError: a file is missing from ``data_dir``, or a download failed.
    """
    if len(langs) != 2:
        raise DataError(f"multi30k: langs must be (source, target), got {langs!r}")
    names = {split: tuple(f"{split}.{lang}.gz" for lang in langs) for split in splits}
    if data_dir is not None:
        d = Path(data_dir)
        for src, tgt in names.values():
            for name in (src, tgt):
                if not (d / name).is_file():
                    raise DataError(f"{d / name}: no such file (data.dir holds {_listing(d)})")
        return {split: (d / src, d / tgt) for split, (src, tgt) in names.items()}

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / "multi30k"
    folder.mkdir(parents=True, exist_ok=True)
    for src, tgt in names.values():
        for name in (src, tgt):
            if not (folder / name).is_file():
                url = f"{base_url.rstrip('/')}/{name}"
                if log is not None:
                    log(f"downloading {url} -> {folder / name}")
                _download(url, folder / name)
    return {split: (folder / src, folder / tgt) for split, (src, tgt) in names.items()}


def default_cache_dir() -> Path:
    """``$ATTNLAB_CACHE``, or ``~/.cache/attnlab``."""
    return Path(os.environ.get("ATTNLAB_CACHE") or Path.home() / ".cache" / "attnlab")


def _listing(d: Path) -> str:
    """A short description of what a folder holds, for error messages."""
    if not d.is_dir():
        return "nothing: no such folder"
    files = sorted(p.name for p in d.iterdir() if p.is_file())
    if not files:
        return "no files"
    return ", ".join(files[:8]) + (f" and {len(files) - 8} more" if len(files) > 8 else "")


def _download(url: str, dest: Path) -> None:
    """Fetch ``url`` into ``dest`` atomically; check the result is a complete, non-empty gzip."""
    with atomic_path(dest) as tmp:
        try:
            with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
                shutil.copyfileobj(resp, out)
        except OSError as e:  # URLError, HTTPError, timeouts and socket errors are all OSErrors
            reason = getattr(e, "reason", None) or e.strerror or e
            raise DataError(
                f"could not download {url} ({reason}); without internet, pass data.dir=... "
                f"naming a folder that holds {dest.name}"
            ) from e
        _check_gzip(tmp, url)


def _check_gzip(path: Path, url: str) -> None:
    with open(path, "rb") as f:
        head = f.read(2)
    if head != GZIP_MAGIC:
        what = "an empty file" if not head else "not a gzip file"
        raise DataError(f"could not download {url} (got {what}); pass data.dir=... naming a folder with the files")
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"could not download {url} (truncated or corrupt gzip: {e}); try again") from e


__all__ = ["BASE_URL", "SPLITS", "default_cache_dir", "multi30k_files"]
