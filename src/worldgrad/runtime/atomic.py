"""Atomic small-file writes (temp file, fsync, rename): readers never see half a file. No torch import."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


def temp_path(path: str | os.PathLike[str]) -> Path:
    """A unique hidden temp name beside ``path`` (same folder, so the final rename stays atomic).

    Args:
        path: the file that the temp file will replace.

    Returns:
        ``<dir>/.<name>.<8 hex>.tmp``.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Flushes a folder's entries, so a rename inside it survives a power cut (best effort: POSIX only)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit_temp(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Flushes ``tmp`` to disk, then renames it onto ``path`` (the one step that makes the new file visible).

    Args:
        tmp: a fully written file in the same folder as ``path``.
        path: the destination; replaced atomically if it exists.
    """
    with open(tmp, "rb+") as f:  # fsync is per file, so a fresh handle flushes what any writer left dirty
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


def save_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Writes ``obj`` as JSON to ``path`` through a temp file and a rename.

    Args:
        path: destination file; its folder must exist.
        obj: a JSON-able value.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
        commit_temp(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only still there when something failed
