"""One scrape cycle: scrape every target, convert each answer once, hand the metrics to a sink.

The sink (Parseable or the embedded local store) decides what becoming stored means and
reports it in a result of its own, and adds its figures to the dataset through the cycle's
reporter; this module reports the scrapes and conversions, and adds each target's scrape
figures to its rows (ingest/health.py).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import Protocol

from raymetrics_pipeline.ingest import health, otlp
from raymetrics_pipeline.ingest.prometheus import NO_LABELS, LabelSet, parse
from raymetrics_pipeline.ingest.scrape import ScrapeResult, scrape_all

REPORTED_PARSE_ERRORS = 5  # per target: enough to see what is wrong without flooding the logs


class Delivery(Protocol):
    """What a sink reports about one cycle's metrics."""

    @property
    def delivered(self) -> bool:
        """Some of the metrics reached the dataset."""

    @property
    def failure(self) -> str | None:
        """Why the run must show as failed (data kept for later or set aside), or None."""

    @property
    def warnings(self) -> list[str]: ...


class Sink(Protocol):
    def ship(self, scrapes: Iterable[otlp.ResourceMetrics], deadline: float, report: health.Reporter) -> Delivery:
        """Store or send ``scrapes`` (converted as they are taken) by ``deadline`` (``time.monotonic()``), and
        the sink's own figures as ``report`` turns them into rows."""


@dataclass(frozen=True)
class TargetOutcome:
    """One target's scrape and the conversion of its answer."""

    target: str
    status: int | None
    scraped_bytes: int
    seconds: float
    error: str = ""
    samples: int = 0
    data_points: int = 0
    series: int = 0
    parse_errors: int = 0
    non_finite_values: int = 0
    first_parse_errors: tuple[str, ...] = ()
    newest_sample_unix_nano: int | None = None  # the scrape time, unless the target stamps its samples

    @property
    def up(self) -> bool:
        return not self.error


@dataclass(frozen=True)
class CycleResult:
    targets: list[TargetOutcome]
    delivery: Delivery
    seconds: float

    @property
    def targets_up(self) -> int:
        return sum(target.up for target in self.targets)

    @property
    def newest_sample_unix_nano(self) -> int | None:
        """The time of the newest Ray sample the cycle handed on (None when no target served one)."""
        return max((t.newest_sample_unix_nano for t in self.targets if t.newest_sample_unix_nano), default=None)

    def totals(self) -> dict[str, int]:
        """Every count of the targets' outcomes (samples, data points, parse errors, ...) summed over targets."""
        counts = [f.name for f in fields(TargetOutcome) if f.type == "int"]  # annotations are strings here
        return {name: sum(getattr(target, name) for target in self.targets) for name in counts}


def scrape_figures(outcome: TargetOutcome) -> dict[str, float]:
    """A target's scrape as the pipeline's own metrics (names without ``raymetrics_pipeline_``)."""
    return {
        "up": float(outcome.up),
        "scrape_duration_seconds": outcome.seconds,
        "scrape_bytes": outcome.scraped_bytes,
        "scrape_samples": outcome.samples,
        "scrape_data_points": outcome.data_points,
        "scrape_series": outcome.series,
        "scrape_parse_errors": outcome.parse_errors,
    }


def convert(result: ScrapeResult, resource: LabelSet) -> tuple[TargetOutcome, otlp.ResourceMetrics]:
    """One scrape's answer as OTLP metrics, with the target's scrape figures, and what happened to it."""
    outcome, metrics = _convert_answer(result)
    # The figures share the time of the rows they describe: the scrape time, unless the target stamps its
    # samples (a federating Prometheus, or a replayed recording), then the newest of those.
    sampled_at = max((point.time_unix_nano for metric in metrics for point in metric.points), default=None)
    outcome = replace(outcome, newest_sample_unix_nano=sampled_at)
    figures = health.gauges(scrape_figures(outcome), sampled_at or result.scrape_time_unix_nano)
    return outcome, otlp.ResourceMetrics(health.target_resource(resource, result.target), metrics + figures)


def _convert_answer(result: ScrapeResult) -> tuple[TargetOutcome, list[otlp.Metric]]:
    outcome = TargetOutcome(result.target, result.status, result.bytes, result.duration_seconds, result.error)
    if not result.ok:
        return outcome, []
    exposition = parse(result.body)
    conversion = otlp.to_metrics(exposition, result.scrape_time_unix_nano)
    errors = exposition.errors + conversion.errors
    outcome = replace(
        outcome,
        samples=exposition.sample_count,
        data_points=conversion.data_points,
        series=conversion.series,
        parse_errors=len(errors),
        non_finite_values=conversion.non_finite_values,
        first_parse_errors=tuple(str(error) for error in errors[:REPORTED_PARSE_ERRORS]),
    )
    return outcome, conversion.metrics


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Converting and encoding a scrape allocates tens of thousands of small objects that form no
    cycles; left on, the cyclic collector rescans them again and again (about 10% of the time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def run_cycle(
    targets: Sequence[str],
    sink: Sink,
    scrape_timeout_seconds: float = 5.0,
    resource_attributes: LabelSet = NO_LABELS,
    budget_seconds: float = 12.0,
) -> CycleResult:
    """Scrape ``targets`` and hand what they served to ``sink`` within ``budget_seconds``.

    Targets are converted one at a time as the sink takes them, smallest answer first: a sink
    sends each body as it fills, so the small targets are delivered before a large one is even
    parsed, and memory holds one target's metrics at a time, not the cycle's.
    """
    started, started_unix_nano = time.monotonic(), time.time_ns()
    results: list[ScrapeResult | None] = list(scrape_all(list(targets), scrape_timeout_seconds))
    outcomes: dict[int, TargetOutcome] = {}

    def converted() -> Iterator[otlp.ResourceMetrics]:
        for index in sorted(range(len(results)), key=lambda index: results[index].bytes):
            result, results[index] = results[index], None  # the scraped text goes once converted
            outcomes[index], metrics = convert(result, resource_attributes)
            yield metrics

    with cyclic_gc_paused():
        report = health.reporter(resource_attributes, started_unix_nano)
        delivery = sink.ship(converted(), started + budget_seconds, report)
    return CycleResult([outcomes[index] for index in sorted(outcomes)], delivery, time.monotonic() - started)
