"""The local store's sink: a cycle's metrics as the rows Parseable would keep, one file per cycle."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from raymetrics_pipeline.ingest.cycle import stage
from raymetrics_pipeline.ingest.health import Reporter
from raymetrics_pipeline.ingest.otlp import ResourceMetrics
from raymetrics_pipeline.localstore.rows import stored_rows
from raymetrics_pipeline.localstore.store import LocalStore


@dataclass(frozen=True)
class Stored:
    rows_stored: int = 0
    bytes_stored: int = 0

    @property
    def delivered(self) -> bool:
        return self.rows_stored > 0

    @property
    def failure(self) -> None:
        return None  # a write that fails raises OSError, which the run reports

    @property
    def warnings(self) -> list[str]:
        return []


class LocalStoreSink:
    def __init__(self, store: LocalStore) -> None:
        self.store = store

    def ship(self, scrapes: Iterable[ResourceMetrics], deadline: float, report: Reporter) -> Stored:
        """Write the rows now, with the count of them as the pipeline's own metric; a local write needs no
        deadline."""
        scrapes = list(scrapes)  # one file per cycle: every target's rows at once
        received = datetime.now(UTC)
        rows = sum(len(metric.points) for _, metrics in scrapes for metric in metrics)
        with stage("encode"):
            stored = stored_rows([*scrapes, report({"delivery_rows_stored": rows})], received)
        with stage("write"):
            path = self.store.write(stored, received)
        return Stored(len(stored), path.stat().st_size)
