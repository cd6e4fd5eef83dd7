"""GLUE's SST-2 release: download the zip once and keep its ``train.tsv`` and ``dev.tsv``.

    folder = glue_sst2()                        # ~/.cache/attnlab/glue-sst2/{train,dev}.tsv
    rows = read_labelled(folder / "dev.tsv", "tsv")

The files are GLUE's own (header ``sentence<TAB>label``); the zip comes from ``SST2_URL``
(``file://`` URLs work too). Nothing is written until the archive is complete and holds both
files; each file is written atomically.
"""

from __future__ import annotations

import io
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable

from ..io import atomic_path
from .multi30k import default_cache_dir
from .readers import DataError

__all__ = ["SST2_URL", "SST2_FILES", "glue_sst2"]

SST2_URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
SST2_FILES = ("train.tsv", "dev.tsv")
MAX_MEMBER_BYTES = 1 << 30  # SST-2's train.tsv is 4 MB


def glue_sst2(cache_dir: str | Path | None = None, url: str = SST2_URL,
              log: Callable[[str], None] | None = None) -> Path:
    """The folder holding GLUE SST-2's ``train.tsv`` and ``dev.tsv``, downloaded if needed.

    Args:
        cache_dir: where the folder ``glue-sst2`` goes (default ``$ATTNLAB_CACHE`` or ``~/.cache/attnlab``).
        url: the zip's URL.
        log: called with a "downloading ..." message before the download.

    Raises:
        DataError: the download failed, or the archive is not a zip holding ``SST-2/train.tsv``
            and ``SST-2/dev.tsv``.
    """
    folder = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "glue-sst2"
    if all((folder / name).is_file() for name in SST2_FILES):
        return folder
    if log is not None:
        log(f"downloading {url} -> {folder}")
    try:
        with urllib.request.urlopen(url, timeout=120) as resp:
            raw = resp.read()
    except OSError as e:  # URLError, HTTPError, timeouts and socket errors are all OSErrors
        reason = getattr(e, "reason", None) or e.strerror or e
        raise DataError(f"could not download {url} ({reason}); without internet, pass data.dir=... "
                        "naming a folder that holds train.tsv") from e
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except Exception:  # noqa: BLE001 - see _member: zipfile refuses damaged bytes with many types
        raise DataError(f"could not download {url}: got {len(raw):,} bytes that are not a zip archive") from None
    members = {Path(n).name: n for n in archive.namelist() if Path(n).name in SST2_FILES and not n.endswith("/")}
    missing = [name for name in SST2_FILES if name not in members]
    if missing:
        raise DataError(f"{url}: the archive has no {', '.join(missing)} (it holds {len(archive.namelist())} entries)")
    contents = {name: _member(archive, members[name], url) for name in SST2_FILES}  # all checked before any is written
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        with atomic_path(folder / name) as tmp:
            tmp.write_bytes(data)
    return folder


def _member(archive: zipfile.ZipFile, name: str, url: str) -> bytes:
    """A member's bytes, its CRC checked; a DataError for a damaged, encrypted or oversized one."""
    info = archive.getinfo(name)
    if info.file_size > MAX_MEMBER_BYTES:  # the reader stops at file_size, so the claim is a real bound
        raise DataError(f"{url}: {name} would unpack to {info.file_size:,} bytes; SST-2's files are a few MB")
    try:
        with archive.open(info) as f:
            return f.read()
    except Exception as e:  # noqa: BLE001 - damaged bytes surface as BadZipFile, zlib/lzma errors, EOFError,
        # ValueError (a negative seek), NotImplementedError (a version or method), RuntimeError (a password)
        why = e or type(e).__name__
        raise DataError(f"could not download {url}: cannot unpack {name} ({why}); try again") from None
