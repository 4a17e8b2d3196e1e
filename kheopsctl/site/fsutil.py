"""Atomic file writes: a reader sees the old file or the new one, never half of one (kill -9 safe)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644) -> bool:
    """Write ``data`` to ``path`` via temp file + fsync + rename. Returns False when the content was already equal."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        if path.read_bytes() == raw and (path.stat().st_mode & 0o777) == mode:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return True


def is_stray_temp(path: Path) -> bool:
    """A temporary file of ``write_atomic`` left by a process that was killed before its rename."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def remove_stray_temps(directory: Path) -> list[Path]:
    """Delete the leftovers of interrupted atomic writes in ``directory``; returns what was removed."""
    if not directory.is_dir():
        return []
    stray = [p for p in directory.iterdir() if p.is_file() and is_stray_temp(p)]
    for p in stray:
        p.unlink(missing_ok=True)
    return stray


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
