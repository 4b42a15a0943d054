"""One scrape-and-ship cycle: scrape every target, convert, then hand the result to a sink.

Two sinks: Parseable (encode, deliver, spool what does not go through) and the embedded
local store (write the rows Parseable would keep). Plain Python with no Dagster in it; the
Dagster op only supplies settings and records the report this returns.
"""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from raymetrics_pipeline import otlp
from raymetrics_pipeline.localstore import LocalStore
from raymetrics_pipeline.parseable import JSON, ParseableClient, location
from raymetrics_pipeline.parseable_rows import rows_table
from raymetrics_pipeline.prometheus import NO_LABELS, LabelSet, parse
from raymetrics_pipeline.scrape import ScrapeResult, scrape_all
from raymetrics_pipeline.spool import Spool

MAX_REPORTED_PARSE_ERRORS = 5


@dataclass
class TargetReport:
    target: str
    status: int | None
    bytes: int
    duration_seconds: float
    samples: int = 0
    data_points: int = 0
    parse_errors: int = 0
    error: str = ""
    first_parse_errors: list[str] = field(default_factory=list)


@dataclass
class CycleReport:
    targets: list[TargetReport] = field(default_factory=list)
    samples: int = 0
    data_points: int = 0
    series: int = 0
    parse_errors: int = 0
    non_finite_values: int = 0
    requests: int = 0
    retries: int = 0
    bytes_raw: int = 0
    bytes_compressed: int = 0
    http_statuses: list[int] = field(default_factory=list)
    bodies_sent: int = 0
    bodies_spooled: int = 0
    bodies_rejected: int = 0
    spooled_bodies_delivered: int = 0
    spool_pending: int = 0
    spool_dropped: int = 0
    delivery_errors: list[str] = field(default_factory=list)
    rows_stored: int = 0
    bytes_stored: int = 0
    duration_seconds: float = 0.0

    @property
    def targets_up(self) -> int:
        return sum(1 for target in self.targets if not target.error)


def convert_scrapes(
    results: list[ScrapeResult],
    resource_attributes: LabelSet,
    report: CycleReport,
) -> list[tuple[LabelSet, list[otlp.Metric]]]:
    """Parse each good scrape into one resource's metrics, noting per-target outcomes."""
    scrapes = []
    for result in results:
        target = TargetReport(result.target, result.status, result.bytes, result.duration_seconds, error=result.error)
        report.targets.append(target)
        if not result.ok:
            continue
        exposition = parse(result.body)
        conversion = otlp.to_metrics(exposition, result.scrape_time_unix_nano)
        errors = exposition.errors + conversion.errors
        target.samples, target.data_points, target.parse_errors = (
            exposition.sample_count,
            conversion.data_points,
            len(errors),
        )
        target.first_parse_errors = [str(error) for error in errors[:MAX_REPORTED_PARSE_ERRORS]]
        report.samples += exposition.sample_count
        report.data_points += conversion.data_points
        report.series += conversion.series
        report.parse_errors += len(errors)
        report.non_finite_values += conversion.non_finite_values
        if conversion.metrics:
            scrapes.append((resource_attributes, conversion.metrics))
    return scrapes


@contextmanager
def _cyclic_gc_paused():
    """Converting a scrape allocates tens of thousands of small objects that form no cycles;
    left on, the cyclic collector rescans them again and again (about 10% of the time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def encode_scrapes(
    results: list[ScrapeResult],
    resource_attributes: LabelSet,
    content_type: str,
    report: CycleReport,
    max_request_bytes: int = otlp.DEFAULT_MAX_REQUEST_BYTES,
) -> list[bytes]:
    """This cycle's scrapes as uncompressed request bodies of ``content_type``."""
    with _cyclic_gc_paused():
        scrapes = convert_scrapes(results, resource_attributes, report)
        if content_type == JSON:
            return otlp.JsonEncoder().encode(scrapes, max_request_bytes)
        return otlp.encode_protobuf(scrapes, max_request_bytes)


def deliver(
    bodies: list[bytes],
    content_type: str,
    client: ParseableClient,
    spool: Spool,
    deadline: float,
    report: CycleReport,
) -> None:
    """Send this cycle's bodies, then older spooled ones; keep whatever did not go through.

    New data goes first so freshness recovers as soon as Parseable is back; the spool is
    drained only while Parseable is answering and time is left.
    """
    healthy = True
    for body in bodies:
        if healthy:
            outcome = client.post(body, deadline, content_type)
            _count(outcome, report)
            if outcome.sent:
                report.bodies_sent += 1
                continue
            report.delivery_errors.append(outcome.error)
            if outcome.rejected:
                spool.reject(body, content_type)
                report.bodies_rejected += 1
                continue
            healthy = False
        report.spool_dropped += spool.put(body, content_type)
        report.bodies_spooled += 1

    for spooled in spool.pending() if healthy else []:
        if time.monotonic() >= deadline - 0.5:
            break
        body = spooled.read()
        outcome = client.post(body, deadline, spooled.content_type)
        _count(outcome, report)
        if outcome.sent:
            spool.remove(spooled)
            report.spooled_bodies_delivered += 1
            continue
        report.delivery_errors.append(f"spooled {spooled.path.name}: {outcome.error}")
        if not outcome.rejected:
            break
        spool.reject(body, spooled.content_type)
        spool.remove(spooled)
        report.bodies_rejected += 1
    report.spool_pending = len(spool.pending())


def _count(outcome, report: CycleReport) -> None:
    report.requests += outcome.requests
    report.retries += max(0, outcome.attempts - 1)
    report.bytes_raw += outcome.bytes_raw
    report.bytes_compressed += outcome.bytes_sent
    report.http_statuses += outcome.statuses


class Sink(Protocol):
    def where(self) -> str:
        """Where the rows end up, for people: a URL and dataset, or a folder."""

    def ship(self, results: list[ScrapeResult], resource_attributes: LabelSet, report: CycleReport, deadline: float):
        """Convert ``results``, then store or send them before ``deadline`` (``time.monotonic()``)."""


class ParseableSink:
    """OTLP to Parseable; whatever does not go through waits in the spool for the next cycle."""

    def __init__(
        self, client: ParseableClient, spool: Spool, max_request_bytes: int = otlp.DEFAULT_MAX_REQUEST_BYTES
    ) -> None:
        self.client, self.spool, self.max_request_bytes = client, spool, max_request_bytes

    def where(self) -> str:
        return location(self.client.url, self.client.stream)

    def ship(self, results, resource_attributes, report, deadline) -> None:
        content_type = self.client.content_type
        bodies = encode_scrapes(results, resource_attributes, content_type, report, self.max_request_bytes)
        deliver(bodies, content_type, self.client, self.spool, deadline, report)


class LocalStoreSink:
    """The embedded default: the rows Parseable would keep, written to the local store."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store

    def where(self) -> str:
        return self.store.location

    def ship(self, results, resource_attributes, report, deadline) -> None:
        received = datetime.now(UTC)
        with _cyclic_gc_paused():
            table = rows_table(convert_scrapes(results, resource_attributes, report), received)
        if table.num_rows:
            path = self.store.write(table, received)
            report.rows_stored, report.bytes_stored = table.num_rows, path.stat().st_size


def run_cycle(
    targets: list[str],
    sink: Sink,
    scrape_timeout_seconds: float = 5.0,
    resource_attributes: LabelSet = NO_LABELS,
    budget_seconds: float = 12.0,
) -> CycleReport:
    """Scrape ``targets`` and hand the result to ``sink`` within ``budget_seconds``."""
    started = time.monotonic()
    report = CycleReport()
    results = scrape_all(list(targets), scrape_timeout_seconds)
    sink.ship(results, resource_attributes, report, started + budget_seconds)
    report.duration_seconds = time.monotonic() - started
    return report
