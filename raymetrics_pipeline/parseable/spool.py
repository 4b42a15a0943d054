"""A disk spool for OTLP request bodies that could not be delivered yet.

When Parseable is down, slow or refusing the credentials, a run keeps its bodies here and
the next runs send them, oldest first, before anything new. Files are written under a
temporary name and renamed, so a crash never leaves a torn body behind. Bodies Parseable
can never accept (HTTP 400) go to ``rejected/`` for a person to look at, not back into the
queue. The spool is bounded; when full, the oldest bodies are dropped and counted.
"""

from __future__ import annotations

import gzip
import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path

from raymetrics_pipeline.common.files import remove_stale_temporaries, write_atomically
from raymetrics_pipeline.parseable.encode import JSON, PROTOBUF

_SUFFIX_BY_CONTENT_TYPE = {JSON: ".json.gz", PROTOBUF: ".pb.gz"}
_CONTENT_TYPE_BY_SUFFIX = {suffix: content_type for content_type, suffix in _SUFFIX_BY_CONTENT_TYPE.items()}
DEFAULT_MAX_BYTES = 2 * 1024**3
# Refused bodies are kept for a person to look at, not forever: the newest this many bytes.
DEFAULT_MAX_REJECTED_BYTES = 256 * 1024**2
# A body still unrenamed after this long belongs to a run that died (a run lasts under 15 s).
STALE_TEMPORARY_SECONDS = 600
_sequence = itertools.count()


@dataclass(frozen=True)
class SpooledBody:
    path: Path
    content_type: str

    def read(self) -> bytes:
        return gzip.decompress(self.path.read_bytes())


@dataclass(frozen=True)
class SpoolDepth:
    bodies: int
    bytes: int
    oldest_age_seconds: float


class Spool:
    def __init__(
        self,
        directory: Path | str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_rejected_bytes: int = DEFAULT_MAX_REJECTED_BYTES,
    ) -> None:
        self.directory = Path(directory)
        self.rejected_directory = self.directory / "rejected"
        self.max_bytes, self.max_rejected_bytes = max_bytes, max_rejected_bytes

    def _write(self, directory: Path, body: bytes, content_type: str) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(_sequence):06d}{_SUFFIX_BY_CONTENT_TYPE[content_type]}"
        compressed = gzip.compress(body, compresslevel=1, mtime=0)
        return write_atomically(directory / name, lambda handle: handle.write(compressed))

    def put(self, body: bytes, content_type: str) -> int:
        """Keep a body for a later run; returns how many old bodies were dropped to make room."""
        self._write(self.directory, body, content_type)
        return _drop_oldest(self.pending(), self.max_bytes)

    def reject(self, body: bytes, content_type: str) -> int:
        """Set a body Parseable refused aside; returns how many old refused bodies were dropped to make room."""
        self._write(self.rejected_directory, body, content_type)
        return _drop_oldest(_bodies_in(self.rejected_directory), self.max_rejected_bytes)

    def pending(self) -> list[SpooledBody]:
        """Spooled bodies, oldest first."""
        return _bodies_in(self.directory)

    def depth(self, now: float) -> SpoolDepth:
        """What waits: bodies, bytes, and the oldest body's age in seconds at ``now`` (``time.time()``)."""
        stats = [body.path.stat() for body in self.pending()]
        oldest = min((stat.st_mtime for stat in stats), default=now)
        return SpoolDepth(len(stats), sum(stat.st_size for stat in stats), max(0.0, now - oldest))

    def remove(self, spooled: SpooledBody) -> None:
        spooled.path.unlink(missing_ok=True)

    def remove_stale_temporaries(self, now: float) -> int:
        """Delete half-written bodies a killed run left behind (never renamed, so never sent)."""
        return sum(
            remove_stale_temporaries(directory, STALE_TEMPORARY_SECONDS, now)
            for directory in (self.directory, self.rejected_directory)
            if directory.is_dir()
        )


def _bodies_in(directory: Path) -> list[SpooledBody]:
    """The bodies in ``directory``, oldest first (their names start with the time they were written)."""
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.iterdir()):
        content_type = next((ct for suffix, ct in _CONTENT_TYPE_BY_SUFFIX.items() if path.name.endswith(suffix)), None)
        if content_type and path.is_file() and not path.name.startswith("."):
            found.append(SpooledBody(path, content_type))
    return found


def _drop_oldest(bodies: list[SpooledBody], max_bytes: int) -> int:
    """Remove the oldest of ``bodies`` until the rest fit in ``max_bytes``; how many went."""
    sizes = [body.path.stat().st_size for body in bodies]
    total, dropped = sum(sizes), 0
    for body, size in zip(bodies, sizes, strict=True):
        if total <= max_bytes:
            break
        body.path.unlink(missing_ok=True)
        total -= size
        dropped += 1
    return dropped
