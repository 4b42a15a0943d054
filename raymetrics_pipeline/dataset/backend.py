"""What a backend gives the pipeline: a sink for each scrape cycle, SQL over the dataset, upkeep.

Two backends fulfil it: ``parseable.backend.ParseableBackend`` and
``localstore.backend.LocalStoreBackend``. Which one runs is chosen once, from the settings, in
the Dagster resources; nothing else asks.
"""

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

from raymetrics_pipeline.ingest.cycle import Sink


class SqlEngine(Protocol):
    """SQL over one dataset with Parseable's semantics (see ``dataset.query``)."""

    stream: str
    location: str

    def columns(self, start: datetime, end: datetime) -> list[str]:
        """The columns a query over ingest times ``[start, end)`` can name."""

    def run(self, sql: str, start: datetime, end: datetime) -> list[dict]:
        """Rows of ``sql`` over the rows received in ``[start, end)`` (both whole minutes)."""

    def close(self) -> None: ...


class Backend(Protocol):
    location: str  # where the rows are, for people: a URL and dataset, or a folder

    def sink(self) -> AbstractContextManager[Sink]:
        """Where one scrape cycle's metrics go."""

    def sql(self) -> SqlEngine: ...

    def maintain(self, now: datetime) -> object:
        """Housekeeping on the backend's own files; returns a result dataclass for the run's metadata."""
