"""Prometheus families → OpenTelemetry metrics (the data model; the wire formats are the sinks' business).

The shape follows Fluent Bit where users' SQL depends on it (names and label keys
verbatim, empty label values kept, counters as monotonic cumulative sums, gauges and
untyped as gauges, double values, the scrape time on every point) and does better where
Fluent Bit is wrong: histogram buckets are per bucket with CUMULATIVE temporality and
summaries keep their quantiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

from raymetrics_pipeline.ingest.prometheus import NO_LABELS, Exposition, LabelSet, MetricFamily, ParseError

CUMULATIVE = 2  # AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


@dataclass(slots=True)
class NumberPoint:
    attributes: LabelSet
    time_unix_nano: int
    value: float


@dataclass(slots=True)
class HistogramPoint:
    attributes: LabelSet
    time_unix_nano: int
    count: int
    sum: float | None
    explicit_bounds: list[float]
    bucket_counts: list[int]


@dataclass(slots=True)
class SummaryPoint:
    attributes: LabelSet
    time_unix_nano: int
    count: int
    sum: float
    quantiles: list[tuple[float, float]]


@dataclass(slots=True)
class Metric:
    name: str
    description: str
    kind: str  # "gauge" | "sum" | "histogram" | "summary"
    points: list = field(default_factory=list)


class ResourceMetrics(NamedTuple):
    """One target's scrape as OTLP sends it: its resource's attributes and its metrics."""

    resource: LabelSet
    metrics: list[Metric]


@dataclass(slots=True)
class Conversion:
    """What one scrape became, with what could not be carried over and why."""

    metrics: list[Metric]
    data_points: int
    series: int
    errors: list[ParseError]
    # Values JSON cannot hold as numbers: sent as proto3's "NaN"/"Infinity" strings where
    # Parseable keeps the row (gauge and sum values), left out where a string would make
    # Parseable drop the whole metric (histogram sum, summary quantiles and sums).
    non_finite_values: int = 0


def to_metrics(exposition: Exposition, scrape_time_unix_nano: int) -> Conversion:
    """Turn one parsed scrape into OTLP metrics stamped with the scrape time."""
    conversion = Conversion([], 0, 0, [])
    for family in exposition.families:
        if family.type == "histogram":
            _convert_histogram(family, scrape_time_unix_nano, conversion)
        elif family.type == "summary":
            _convert_summary(family, scrape_time_unix_nano, conversion)
        else:
            _convert_numbers(family, scrape_time_unix_nano, conversion)
    for metric in conversion.metrics:
        conversion.data_points += len(metric.points)
        conversion.series += len({point.attributes for point in metric.points})
    return conversion


# The latest sample time every store can hold: 9999-12-31 (Python's datetime, Arrow's ms timestamps).
_LAST_MS = 253_402_300_799_999


def _time(sample, scrape_time_unix_nano: int, conversion: Conversion) -> int | None:
    """The sample's time; None, with the line reported, for a timestamp no store can hold (before 1970, after
    9999), which once crashed the whole cycle."""
    if sample.timestamp_ms is None:
        return scrape_time_unix_nano
    if 0 <= sample.timestamp_ms <= _LAST_MS:
        return sample.timestamp_ms * 1_000_000
    conversion.errors.append(ParseError(sample.line_no, "timestamp out of range (1970 to 9999)", sample.name))
    return None


def _convert_numbers(family: MetricFamily, scrape_time: int, conversion: Conversion) -> None:
    kind = "sum" if family.type == "counter" else "gauge"
    by_name: dict[str, Metric] = {}
    for sample in family.samples:
        time_unix_nano = _time(sample, scrape_time, conversion)
        if time_unix_nano is None:
            continue
        metric = by_name.get(sample.name)
        if metric is None:
            metric = by_name[sample.name] = Metric(sample.name, family.help, kind)
            conversion.metrics.append(metric)
        if not math.isfinite(sample.value):
            conversion.non_finite_values += 1
        metric.points.append(NumberPoint(sample.labels, time_unix_nano, sample.value))


def _as_count(value: float) -> int | None:
    if math.isfinite(value) and value >= 0 and value == int(value):
        return int(value)
    return None


@dataclass(slots=True)
class _Series:
    first_sample: object
    buckets: list[tuple[float, float]] = field(default_factory=list)
    sum: float | None = None
    count: float | None = None


def _group_series(family: MetricFamily, bound_name: str, conversion: Conversion) -> dict[LabelSet, _Series]:
    series: dict[LabelSet, _Series] = {}
    sum_name, count_name = family.name + "_sum", family.name + "_count"
    for sample in family.samples:
        entry = series.get(sample.labels)
        if entry is None:
            entry = series[sample.labels] = _Series(sample)
        if sample.name == sum_name:
            entry.sum = sample.value
        elif sample.name == count_name:
            entry.count = sample.value
        elif sample.bound is None:
            conversion.errors.append(
                ParseError(sample.line_no, f"{family.type} sample without a '{bound_name}' label", sample.name)
            )
        else:
            try:
                bound = float(sample.bound)
            except ValueError:
                bound = math.nan
            if math.isnan(bound):
                conversion.errors.append(
                    ParseError(sample.line_no, f"invalid '{bound_name}' label value {sample.bound!r}", sample.name)
                )
            elif not _carried(bound, bound_name):
                # OTLP has no place for it (bounds are finite, quantiles within [0, 1]), and an infinite number
                # is not JSON at all: Parseable would refuse the whole request. Only this sample is lost.
                conversion.errors.append(
                    ParseError(sample.line_no, f"'{bound_name}' {sample.bound!r} cannot be sent in OTLP", sample.name)
                )
            else:
                entry.buckets.append((bound, sample.value))
    return series


def _carried(bound: float, bound_name: str) -> bool:
    """A histogram bound OTLP can carry (finite; ``+Inf`` is the implicit last bucket), or a quantile in [0, 1]."""
    if bound_name == "le":
        return bound == math.inf or math.isfinite(bound)
    return 0.0 <= bound <= 1.0


def _convert_histogram(family: MetricFamily, scrape_time: int, conversion: Conversion) -> None:
    metric = Metric(family.name, family.help, "histogram")
    for labels, entry in _group_series(family, "le", conversion).items():
        entry.buckets.sort()
        bounds = [bound for bound, _ in entry.buckets if bound != math.inf]
        cumulative = [_as_count(value) for bound, value in entry.buckets if bound != math.inf]
        infinite = [value for bound, value in entry.buckets if bound == math.inf]
        count = _as_count(entry.count if entry.count is not None else (infinite[0] if infinite else math.nan))
        problem = None
        if count is None:
            problem = "histogram series without a valid _count or +Inf bucket"
        elif None in cumulative or len(set(bounds)) != len(bounds):
            problem = "histogram buckets must be distinct bounds with non-negative integer counts"
        else:
            per_bucket = [b - a for a, b in zip([0, *cumulative], [*cumulative, count], strict=True)]
            if min(per_bucket, default=0) < 0:
                problem = "histogram bucket counts decrease (not cumulative) or exceed _count"
        if problem:
            conversion.errors.append(ParseError(entry.first_sample.line_no, problem, family.name))
            continue
        total = entry.sum
        if total is not None and not math.isfinite(total):
            conversion.non_finite_values += 1
            total = None
        time_unix_nano = _time(entry.first_sample, scrape_time, conversion)
        if time_unix_nano is not None:
            metric.points.append(HistogramPoint(labels, time_unix_nano, count, total, bounds, per_bucket))
    if metric.points:
        conversion.metrics.append(metric)


def _convert_summary(family: MetricFamily, scrape_time: int, conversion: Conversion) -> None:
    metric = Metric(family.name, family.help, "summary")
    for labels, entry in _group_series(family, "quantile", conversion).items():
        count = _as_count(entry.count if entry.count is not None else math.nan)
        if count is None:
            conversion.errors.append(
                ParseError(entry.first_sample.line_no, "summary series without a valid _count", family.name)
            )
            continue
        total = entry.sum if entry.sum is not None else 0.0
        if not math.isfinite(total):
            # SummaryDataPoint.sum is not optional: a NaN cannot be sent safely, and a 0
            # would be a lie, so the point is left out and counted.
            conversion.non_finite_values += 1
            continue
        quantiles = []
        for quantile, value in sorted(entry.buckets):
            if math.isfinite(value):
                quantiles.append((quantile, value))
            else:
                conversion.non_finite_values += 1
        time_unix_nano = _time(entry.first_sample, scrape_time, conversion)
        if time_unix_nano is not None:
            metric.points.append(SummaryPoint(labels, time_unix_nano, count, total, quantiles))
    if metric.points:
        conversion.metrics.append(metric)


def parse_resource_attributes(text: str) -> LabelSet:
    """``k=v,k2=v2`` as in RAYMETRICS_RESOURCE_ATTRIBUTES (and OTEL_RESOURCE_ATTRIBUTES)."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(
                f"RAYMETRICS_RESOURCE_ATTRIBUTES: {item!r} is not key=value; write it like cluster_id=prod-a,env=prod"
            )
        pairs.append((key.strip(), value.strip()))
    return LabelSet(tuple(k for k, _ in pairs), tuple(v for _, v in pairs)) if pairs else NO_LABELS
