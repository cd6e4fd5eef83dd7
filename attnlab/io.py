"""Atomic file writing: the one place that does it.

    with atomic_path("out/report.json") as tmp:   # a temp file beside the target
        tmp.write_text(...)                         # or fig.savefig(tmp), urlretrieve(url, tmp)
    write_text("out/report.json", text)             # the same, for text

The target appears whole or not at all: the content goes to a temporary file in the same
directory, is fsynced, gets the usual permissions (0666 minus the umask, not mkstemp's 0600)
and is moved into place with ``os.replace``. On any error the temporary file is removed and
an existing target is left as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "write_text", "write_json"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    Args:
        path: the file to write; missing parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` line endings) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as indented JSON, atomically (non-JSON values via ``str``)."""
    return write_text(path, json.dumps(obj, indent=2, default=str) + "\n")
