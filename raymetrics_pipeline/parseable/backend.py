"""Parseable as the pipeline's backend: its sink, its SQL, its location, its upkeep."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from raymetrics_pipeline.parseable.client import IngestClient
from raymetrics_pipeline.parseable.connection import ParseableSettings
from raymetrics_pipeline.parseable.sink import ParseableSink
from raymetrics_pipeline.parseable.spool import DEFAULT_MAX_AGE_SECONDS, DEFAULT_MAX_BYTES, Spool
from raymetrics_pipeline.parseable.sql import ParseableSql

INGEST_TIMEOUT_SECONDS = 5.0  # the connection's default; the send loop sets each request's own (client.py)
QUERY_TIMEOUT_SECONDS = 60.0  # an hour's rollup over a busy cluster takes seconds, not minutes


@dataclass(frozen=True)
class SpoolUpkeep:
    spool_pending: int
    stale_temporaries_removed: int


class ParseableBackend:
    """Metrics to a Parseable server as OTLP; undelivered bodies wait in ``spool_dir``.

    Building one checks every setting (a ``ValueError`` says which to fix) and opens nothing.
    """

    def __init__(
        self,
        url: str,
        username: str | None,
        password: str | None,
        stream: str,
        spool_dir: Path,
        encoding: str = "json",
        compression: str = "gzip",
        spool_max_bytes: int = DEFAULT_MAX_BYTES,
        spool_max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
    ) -> None:
        self.settings = ParseableSettings(url, username, password, stream)
        self.encoding, self.compression = encoding, compression
        IngestClient.check(encoding, compression)
        self.spool = Spool(spool_dir, spool_max_bytes, spool_max_age_seconds)
        self.location = self.settings.location

    @contextmanager
    def sink(self) -> Iterator[ParseableSink]:
        with self.settings.connect(INGEST_TIMEOUT_SECONDS) as connection:
            yield ParseableSink(IngestClient(connection, self.encoding, self.compression), self.spool)

    def sql(self) -> ParseableSql:
        return ParseableSql(self.settings.connect(QUERY_TIMEOUT_SECONDS))

    def maintain(self, now: datetime) -> SpoolUpkeep:
        """Parseable keeps its own retention; here only the spool's leftovers are cleared."""
        removed = self.spool.remove_stale_temporaries(now.timestamp())
        return SpoolUpkeep(spool_pending=len(self.spool.pending()), stale_temporaries_removed=removed)
