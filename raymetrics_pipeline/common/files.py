"""Files that readers never see half-written and that survive a crash whole or not at all."""

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

# A temporary file is named ``.<final name>.<random>.tmp`` in the final file's folder (so the rename
# stays on one file system); readers skip dot-names, and maintenance deletes old ones a crash left.
TEMPORARY_SUFFIX = ".tmp"


def temporary_name(path: Path) -> Path:
    """A name no other writer of ``path`` uses: two of them sharing one temporary could rename the
    other's half-written bytes (two overlapping compactions of one hour write the same file name)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}")


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Let ``write`` fill a temporary file, flush it to disk, then rename it to ``path``.

    After a crash ``path`` is either absent or complete; the directory is synced too, so the
    rename itself survives a power cut.
    """
    temporary = temporary_name(path)
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path


def remove_stale_temporaries(folder: Path, older_than_seconds: float, now: float) -> int:
    """Delete temporary files a killed writer left behind; returns how many."""
    removed = 0
    for path in folder.glob(f".*{TEMPORARY_SUFFIX}"):
        try:
            if now - path.stat().st_mtime > older_than_seconds:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            pass  # its writer finished (renamed it) or another cleaner got there first
    return removed
