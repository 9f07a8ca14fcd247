"""Atomic files for the service's state: a reader sees the old file or the new one, never half of either.

Write to a temporary file in the same directory, fsync it, rename it over the target, fsync the
directory (so the rename itself survives a crash). A writer killed half-way leaves only the
temporary file, whose name starts with the caller's prefix so start-up can sweep it.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(target: Path, payload: bytes, tmp_prefix: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix, suffix=target.suffix, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
