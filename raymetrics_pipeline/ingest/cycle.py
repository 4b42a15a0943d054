"""One scrape cycle: scrape every target, convert each answer once, hand the metrics to a sink.

The sink (Parseable or the embedded local store) decides what becoming stored means and
reports it in a result of its own, and adds its figures to the dataset through the cycle's
reporter; this module reports the scrapes and conversions, and adds each target's scrape
figures to its rows (ingest/health.py).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, fields, replace
from typing import Protocol, TypeVar

from raymetrics_pipeline.ingest import health, otlp
from raymetrics_pipeline.ingest.prometheus import NO_LABELS, LabelSet, ParseError, parse, pieces, stopped
from raymetrics_pipeline.ingest.scrape import ScrapeResult, scrape_all

REPORTED_PARSE_ERRORS = 5  # per target: enough to see what is wrong without flooding the logs
# A target's answer is parsed and converted this many characters at a time (prometheus.pieces), so memory
# holds one piece's objects however large the answer; Ray's usual answers (well under 1 MB) are one piece.
PIECE_CHARS = 4 * 1024 * 1024
# A target's parsing and conversion stop after this long (the rest of its answer is reported, not converted).
# A million series take about 10 s here; the bound is for answers no real endpoint serves.
TARGET_CONVERT_SECONDS = 60.0


class Stopwatch:
    """Seconds spent in each stage of a cycle (scrape, parse, encode, compress, send, ...).

    Stages nest: the encoder pulls the conversions, a send compresses; a stage entered inside
    another pauses the outer one, so every second is counted once, in the innermost stage.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self.seconds: dict[str, float] = {}
        self._running: list[str] = []
        self._since = 0.0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._charge_running_stage()
        self._running.append(name)
        try:
            yield
        finally:
            self._charge_running_stage()
            self._running.pop()

    def _charge_running_stage(self) -> None:
        now = self._clock()
        if self._running:
            name = self._running[-1]
            self.seconds[name] = self.seconds.get(name, 0.0) + now - self._since
        self._since = now


# The stages run in code the cycle only reaches through its sink (the encoder, the Parseable client), so the
# cycle's stopwatch is found here rather than passed through every signature; outside a cycle nothing is timed.
_cycle_stopwatch: ContextVar[Stopwatch | None] = ContextVar("cycle_stopwatch", default=None)
Item = TypeVar("Item")


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Count the block's time as stage ``name`` of the running cycle."""
    stopwatch = _cycle_stopwatch.get()
    if stopwatch is None:
        yield
        return
    with stopwatch.stage(name):
        yield


def timed(items: Iterator[Item], name: str) -> Generator[Item, None, object]:
    """``items`` as they come, the work of producing each counted as stage ``name`` (not the caller's work
    between them); returns what ``items`` returns, when it is a generator."""
    while True:
        with stage(name):
            try:
                item = next(items)
            except StopIteration as done:
                return done.value
        yield item


@contextmanager
def stopwatch_running(clock: Callable[[], float] = time.perf_counter) -> Iterator[Stopwatch]:
    """A stopwatch that ``stage`` and ``timed`` charge until the block ends."""
    stopwatch = Stopwatch(clock)
    token = _cycle_stopwatch.set(stopwatch)
    try:
        yield stopwatch
    finally:
        _cycle_stopwatch.reset(token)


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
    stage_seconds: dict[str, float] = field(default_factory=dict)  # Stopwatch.seconds

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
    """One scrape's whole answer as OTLP metrics with the target's scrape figures, and what happened to it."""
    pieces = convert_in_pieces(result, resource)
    metrics: list[otlp.Metric] = []
    while True:
        try:
            metrics += next(pieces).metrics
        except StopIteration as done:
            return done.value, otlp.ResourceMetrics(health.target_resource(resource, result.target), metrics)


def convert_in_pieces(result: ScrapeResult, resource: LabelSet) -> Generator[otlp.ResourceMetrics, None, TargetOutcome]:
    """One scrape's answer as OTLP metrics, a piece of the answer at a time (``PIECE_CHARS``), then the
    target's scrape figures; returns what happened to it.

    Parsing and converting stop after ``TARGET_CONVERT_SECONDS``, saying at which line.
    """
    outcome = TargetOutcome(result.target, result.status, result.bytes, result.duration_seconds, result.error)
    target_resource = health.target_resource(resource, result.target)
    deadline = time.monotonic() + TARGET_CONVERT_SECONDS
    samples = data_points = series = non_finite = 0
    errors: list[ParseError] = []
    error_count = 0
    newest = None  # the figures share the time of the rows they describe: the scrape time, or the newest a
    # target stamped on its samples (a federating Prometheus, a replayed recording)
    for first_line_no, piece in pieces(result.body, PIECE_CHARS) if result.ok else ():
        if time.monotonic() > deadline:
            errors.append(stopped(first_line_no, result.body.count("\n")))
            error_count += 1
            break
        exposition = parse(piece, deadline, first_line_no)
        complete = exposition.complete
        conversion = otlp.to_metrics(exposition, result.scrape_time_unix_nano)
        samples += exposition.sample_count
        data_points += conversion.data_points
        series += conversion.series
        non_finite += conversion.non_finite_values
        piece_errors = exposition.errors + conversion.errors
        error_count += len(piece_errors)
        errors += piece_errors[: REPORTED_PARSE_ERRORS - len(errors)]
        del piece, exposition  # only the converted metrics are kept, until the sink has taken them
        sampled_at = max((point.time_unix_nano for metric in conversion.metrics for point in metric.points), default=0)
        newest = max(newest or 0, sampled_at) or None
        yield otlp.ResourceMetrics(target_resource, conversion.metrics)
        if not complete:
            break  # the parse said where it stopped
    outcome = replace(
        outcome,
        samples=samples,
        data_points=data_points,
        series=series,
        parse_errors=error_count,
        non_finite_values=non_finite,
        first_parse_errors=tuple(str(error) for error in errors),
        newest_sample_unix_nano=newest,
    )
    figures = health.gauges(scrape_figures(outcome), newest or result.scrape_time_unix_nano)
    yield otlp.ResourceMetrics(target_resource, figures)
    return outcome


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
    parsed, and memory holds one target's metrics at a time, not the cycle's. The result says
    how long each stage took (``stage_seconds``: scrape, parse, and the sink's own: encode,
    compress, send or write), to see where a slow cycle's time went.
    """
    started, started_unix_nano = time.monotonic(), time.time_ns()
    with stopwatch_running() as stopwatch:
        with stage("scrape"):
            results: list[ScrapeResult | None] = list(scrape_all(list(targets), scrape_timeout_seconds))
        outcomes: dict[int, TargetOutcome] = {}

        def converted() -> Iterator[otlp.ResourceMetrics]:
            for index in sorted(range(len(results)), key=lambda index: results[index].bytes):
                result, results[index] = results[index], None  # the scraped text goes once converted
                outcomes[index] = yield from timed(convert_in_pieces(result, resource_attributes), "parse")

        with cyclic_gc_paused():
            report = health.reporter(resource_attributes, started_unix_nano)
            delivery = sink.ship(converted(), started + budget_seconds, report)
    converted_targets = [outcomes[index] for index in sorted(outcomes)]
    return CycleResult(converted_targets, delivery, time.monotonic() - started, stopwatch.seconds)
