"""The embedded local store as the pipeline's backend: its sink, its SQL, its location, its upkeep."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from raymetrics_pipeline.localstore.sink import LocalStoreSink
from raymetrics_pipeline.localstore.store import CompactionReport, LocalStore, RetentionReport

if TYPE_CHECKING:
    from raymetrics_pipeline.localstore.sql import LocalSql


@dataclass(frozen=True)
class StoreUpkeep:
    compaction: CompactionReport
    retention: RetentionReport
    retention_days: float
    store_bytes: int


class LocalStoreBackend:
    """The dataset ``stream`` as files under ``root`` (each hour compacted to Parquet), kept ``retention_days``."""

    def __init__(self, root: Path, stream: str, retention_days: float) -> None:
        self.store = LocalStore(root, stream)
        self.retention_days = retention_days
        self.location = self.store.location

    @contextmanager
    def sink(self) -> Iterator[LocalStoreSink]:
        yield LocalStoreSink(self.store)

    def sql(self) -> LocalSql:
        # DataFusion is imported by the readers (rollups, checks) only: the scrape runs never query.
        from raymetrics_pipeline.localstore.sql import LocalSql

        return LocalSql(self.store)

    def maintain(self, now: datetime) -> StoreUpkeep:
        """Delete hours past retention, then fold each hour's settled cycle files into one."""
        retention = self.store.delete_before(now - timedelta(days=self.retention_days))
        compaction = self.store.compact(now)
        return StoreUpkeep(compaction, retention, self.retention_days, self.store.size_bytes())
