"""A disk spool for OTLP request bodies that could not be delivered yet.

When Parseable is down, slow or refusing the credentials, a run keeps its bodies here and
the next runs send them, oldest first. Files are written under a temporary name and renamed,
so a crash never leaves a torn body behind. Bodies Parseable can never accept (HTTP 400) go
to ``rejected/`` with Parseable's message beside them (``<body>.txt``), for a person to look
at, not back into the queue. The spool is bounded in bytes and in age; what a bound drops is
counted.

One run at a time resends (an exclusive lock on ``.resend.lock``), and a body being resent is
renamed ``<body>.sending`` first: a run killed mid-request leaves exactly that body marked, and
the next run counts it as ambiguous (Parseable may have stored it) before sending it again.
"""

from __future__ import annotations

import fcntl
import gzip
import itertools
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from raymetrics_pipeline.common.files import remove_stale_temporaries, write_atomically
from raymetrics_pipeline.parseable.encode import JSON, PROTOBUF

_SUFFIX_BY_CONTENT_TYPE = {JSON: ".json.gz", PROTOBUF: ".pb.gz"}
_CONTENT_TYPE_BY_SUFFIX = {suffix: content_type for content_type, suffix in _SUFFIX_BY_CONTENT_TYPE.items()}
DEFAULT_MAX_BYTES = 2 * 1024**3
# Older than this, a body would land in Parseable past any minute the rollups still look at.
DEFAULT_MAX_AGE_SECONDS = 7 * 86_400
SENDING_SUFFIX = ".sending"
REASON_SUFFIX = ".txt"
# Refused bodies are kept for a person to look at, not forever: the newest this many bytes.
DEFAULT_MAX_REJECTED_BYTES = 256 * 1024**2
# A body still unrenamed after this long belongs to a run that died (a run lasts two minutes at most).
STALE_TEMPORARY_SECONDS = 600
_sequence = itertools.count()


@dataclass(frozen=True)
class SpooledBody:
    path: Path
    content_type: str

    @property
    def sending(self) -> Path:
        return self.path.with_name(self.path.name + SENDING_SUFFIX)


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
        max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
        max_rejected_bytes: int = DEFAULT_MAX_REJECTED_BYTES,
    ) -> None:
        self.directory = Path(directory)
        self.rejected_directory = self.directory / "rejected"
        self.max_bytes, self.max_age_seconds, self.max_rejected_bytes = max_bytes, max_age_seconds, max_rejected_bytes

    def _write(self, directory: Path, body: bytes, content_type: str) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(_sequence):06d}{_SUFFIX_BY_CONTENT_TYPE[content_type]}"
        compressed = gzip.compress(body, compresslevel=1, mtime=0)
        return write_atomically(directory / name, lambda handle: handle.write(compressed))

    def put(self, body: bytes, content_type: str) -> int:
        """Keep a body for a later run; returns how many old bodies were dropped to make room."""
        self._write(self.directory, body, content_type)
        return _drop_oldest(self.pending(), self.max_bytes)

    def reject(self, body: bytes, content_type: str, reason: str) -> int:
        """Set a body Parseable refused aside with its reason; returns how many old refused bodies were
        dropped to make room."""
        path = self._write(self.rejected_directory, body, content_type)
        write_atomically(path.with_name(path.name + REASON_SUFFIX), lambda handle: handle.write(reason.encode()))
        return _drop_oldest(_bodies_in(self.rejected_directory), self.max_rejected_bytes)

    def drop_expired(self, now: float) -> int:
        """Drop waiting bodies older than the age bound (``now`` is ``time.time()``); how many went."""
        expired = [body for body in self.pending() if now - _written_at(body) > self.max_age_seconds]
        for body in expired:
            body.path.unlink(missing_ok=True)
        return len(expired)

    @contextmanager
    def resending(self) -> Iterator[bool]:
        """Hold the right to resend while inside; False when another run holds it (that run resends)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".resend.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True  # the lock goes with the file's close, also when the process is killed

    def recover_interrupted(self) -> int:
        """Put back bodies a killed run was resending; how many (each is ambiguous: Parseable may hold it).

        Call only while holding ``resending``: then no live run is sending them.
        """
        interrupted = list(self.directory.glob(f"*{SENDING_SUFFIX}")) if self.directory.is_dir() else []
        for path in interrupted:
            os.replace(path, path.with_name(path.name.removesuffix(SENDING_SUFFIX)))
        return len(interrupted)

    def claim(self, spooled: SpooledBody) -> bytes | None:
        """Mark a body as being sent and read it; None when it is gone (another run dropped it for space or
        age between the listing and now: scrape shards share the spool)."""
        try:
            os.replace(spooled.path, spooled.sending)
        except FileNotFoundError:
            return None
        return gzip.decompress(spooled.sending.read_bytes())

    def unmark_sending(self, spooled: SpooledBody) -> None:
        os.replace(spooled.sending, spooled.path)

    def pending(self) -> list[SpooledBody]:
        """Spooled bodies, oldest first."""
        return _bodies_in(self.directory)

    def depth(self, now: float) -> SpoolDepth:
        """What waits: bodies, bytes, and the oldest body's age in seconds at ``now`` (``time.time()``)."""
        sizes = {body: size for body in self.pending() if (size := _size(body)) is not None}
        oldest = min((_written_at(body) for body in sizes), default=now)
        return SpoolDepth(len(sizes), sum(sizes.values()), max(0.0, now - oldest))

    def remove_sent(self, spooled: SpooledBody) -> None:
        spooled.sending.unlink(missing_ok=True)

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


def _written_at(body: SpooledBody) -> float:
    """When the body was first spooled (its name starts with the time in ns; a resend does not renew it)."""
    return int(body.path.name.split("-", 1)[0]) / 1e9


def _size(body: SpooledBody) -> int | None:
    """The body's bytes on disk; None when another run has just taken it to resend, or dropped it."""
    try:
        return body.path.stat().st_size
    except FileNotFoundError:
        return None


def _drop_oldest(bodies: list[SpooledBody], max_bytes: int) -> int:
    """Remove the oldest of ``bodies`` (and a refused one's reason) until the rest fit in ``max_bytes``;
    how many went."""
    sizes = {body: size for body in bodies if (size := _size(body)) is not None}
    total, dropped = sum(sizes.values()), 0
    for body, size in sizes.items():
        if total <= max_bytes:
            break
        body.path.unlink(missing_ok=True)
        body.path.with_name(body.path.name + REASON_SUFFIX).unlink(missing_ok=True)
        total -= size
        dropped += 1
    return dropped
