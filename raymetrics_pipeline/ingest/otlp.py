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
from itertools import accumulate, chain, repeat
from operator import attrgetter, sub
from typing import NamedTuple

from raymetrics_pipeline.common.remembered import remember
from raymetrics_pipeline.ingest.prometheus import NO_LABELS, Exposition, LabelSet, MetricFamily, ParseError

CUMULATIVE = 2  # AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


class NumberPoint(NamedTuple):
    """A gauge or sum point; a tuple, because a scrape makes thousands and a tuple is the cheapest to make."""

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


class Metric(NamedTuple):
    """A tuple, because a scrape makes thousands of metrics (most with a handful of points)."""

    name: str
    description: str
    kind: str  # "gauge" | "sum" | "histogram" | "summary"
    points: list


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
    numbers: list[MetricFamily] = []  # consecutive gauge, counter and untyped families, converted together
    for family in exposition.families:
        if family.type == "histogram" or family.type == "summary":
            if numbers:
                _convert_number_families(numbers, scrape_time_unix_nano, conversion)
                numbers = []
            convert = _convert_histogram if family.type == "histogram" else _convert_summary
            convert(family, scrape_time_unix_nano, conversion)
        else:
            numbers.append(family)
    if numbers:
        _convert_number_families(numbers, scrape_time_unix_nano, conversion)
    conversion.data_points = sum(map(len, map(_POINTS, conversion.metrics)))
    return conversion


_POINTS = attrgetter("points")
_ATTRIBUTES = attrgetter("attributes")
_SAMPLES = attrgetter("samples")
_HELP = attrgetter("help")
_TYPE = attrgetter("type")
_KIND_OF_TYPE = {"counter": "sum", "gauge": "gauge", "untyped": "gauge"}
_new_tuple = tuple.__new__  # makes a NumberPoint or a Metric from a tuple without a Python-level __new__


def _convert_number_families(families: list[MetricFamily], scrape_time: int, conversion: Conversion) -> None:
    """Gauge, counter and untyped families, converted together: most have a handful of samples, so work done once
    per family, not per sample, would cost the most. Each usual family (one sample name, no timestamps) becomes
    one metric; the others are converted sample by sample."""
    sizes = list(map(len, map(_SAMPLES, families)))
    names, label_sets, values, timestamps, _, _ = zip(*chain.from_iterable(map(_SAMPLES, families)), strict=True)
    starts = [0, *accumulate(sizes)]
    first_names = list(map(names.__getitem__, starts[:-1]))
    if (
        timestamps.count(None) != len(timestamps)
        or tuple(chain.from_iterable(map(repeat, first_names, sizes))) != names
    ):
        if len(families) == 1:
            _convert_numbers(families[0], scrape_time, conversion)
        else:
            for family in families:
                _convert_number_families([family], scrape_time, conversion)
        return
    points = list(map(_new_tuple, repeat(NumberPoint), zip(label_sets, repeat(scrape_time), values)))
    kinds = map(_KIND_OF_TYPE.__getitem__, map(_TYPE, families))
    points_of_families = map(points.__getitem__, map(slice, starts, starts[1:]))
    fields = zip(first_names, map(_HELP, families), kinds, points_of_families, strict=True)
    conversion.metrics += map(_new_tuple, repeat(Metric), fields)
    conversion.non_finite_values += len(values) - sum(map(math.isfinite, values))
    owners = chain.from_iterable(map(repeat, range(len(families)), sizes))  # each point's metric
    conversion.series += len(set(zip(owners, label_sets, strict=True)))  # distinct label sets within a metric


def _time(sample, scrape_time_unix_nano: int) -> int:
    """The time the target stamped on the sample (the parser took only times every store can hold), or else the
    scrape time."""
    return scrape_time_unix_nano if sample.timestamp_ms is None else sample.timestamp_ms * 1_000_000


def _convert_numbers(family: MetricFamily, scrape_time: int, conversion: Conversion) -> None:
    kind = _KIND_OF_TYPE[family.type]
    by_name: dict[str, Metric] = {}
    name = points = None
    isfinite = math.isfinite
    non_finite = 0
    for sample in family.samples:
        if sample.name != name:  # a family's samples mostly share one name: look it up when it changes
            name = sample.name
            metric = by_name.get(name)
            if metric is None:
                metric = by_name[name] = Metric(name, family.help, kind, [])
                conversion.metrics.append(metric)
            points = metric.points
        if not isfinite(sample.value):
            non_finite += 1
        points.append(NumberPoint(sample.labels, _time(sample, scrape_time), sample.value))
    conversion.non_finite_values += non_finite
    for metric in by_name.values():
        conversion.series += len(set(map(_ATTRIBUTES, metric.points)))


def _as_count(value: float) -> int | None:
    if math.isfinite(value) and value >= 0 and value == int(value):
        return int(value)
    return None


def _as_counts(values: list[float]) -> list[int] | None:
    """``values`` as ints if every one is a non-negative integer (as ``_as_count`` reads it), else None."""
    if all(map(float.is_integer, values)) and min(values, default=0.0) >= 0:  # is_integer: False for inf and NaN
        return list(map(int, values))
    return None


@dataclass(slots=True)
class _Series:
    first_sample: object
    buckets: list[tuple[float, float]] = field(default_factory=list)
    sum: float | None = None
    count: float | None = None


# Bound texts already read and found sendable, by bound label: every series of every scrape has the same few.
_carried_bounds: dict[str, dict[str, float]] = {"le": {}, "quantile": {}}
_MAX_CARRIED_BOUNDS = 10_000


def forget_remembered() -> None:
    """Empty the bound texts kept from one conversion to the next, as a new process finds them."""
    for cache in _carried_bounds.values():
        cache.clear()


def _group_series(family: MetricFamily, bound_name: str, conversion: Conversion) -> dict[LabelSet, _Series]:
    series: dict[LabelSet, _Series] = {}
    sum_name, count_name = family.name + "_sum", family.name + "_count"
    carried = _carried_bounds[bound_name]
    labels = entry = None
    for sample in family.samples:
        name, sample_labels, value, _, _, bound_text = sample
        if sample_labels is not labels:  # a series' samples come together and share one label set
            labels = sample_labels
            entry = series.get(labels)
            if entry is None:
                entry = series[labels] = _Series(sample)
        if name == sum_name:
            entry.sum = value
        elif name == count_name:
            entry.count = value
        elif bound_text is None:
            conversion.errors.append(
                ParseError(sample.line_no, f"{family.type} sample without a '{bound_name}' label", name)
            )
        else:
            bound = carried.get(bound_text)
            if bound is None:
                bound = _carried_bound(sample, bound_name, conversion)
                if bound is None:
                    continue
                remember(carried, bound_text, bound, _MAX_CARRIED_BOUNDS)
            entry.buckets.append((bound, value))
    return series


def _carried_bound(sample, bound_name: str, conversion: Conversion) -> float | None:
    """The sample's bound if OTLP can carry it (a finite histogram bound or ``+Inf``, the implicit last bucket; a
    quantile in [0, 1]); otherwise None, with the sample reported."""
    try:
        bound = float(sample.bound)
    except ValueError:
        bound = math.nan
    if math.isnan(bound):
        problem = f"invalid '{bound_name}' label value {sample.bound!r}"
    elif bound == math.inf or math.isfinite(bound) if bound_name == "le" else 0.0 <= bound <= 1.0:
        return bound
    else:
        # OTLP has no place for it (bounds are finite, quantiles within [0, 1]), and an infinite number
        # is not JSON at all: Parseable would refuse the whole request. Only this sample is lost.
        problem = f"'{bound_name}' {sample.bound!r} cannot be sent in OTLP"
    conversion.errors.append(ParseError(sample.line_no, problem, sample.name))
    return None


def _convert_histogram(family: MetricFamily, scrape_time: int, conversion: Conversion) -> None:
    metric = Metric(family.name, family.help, "histogram", [])
    for labels, entry in _group_series(family, "le", conversion).items():
        entry.buckets.sort()
        bounds, values = map(list, zip(*entry.buckets, strict=True)) if entry.buckets else ([], [])
        finite = len(bounds) - bounds.count(math.inf)  # +Inf sorts last
        del bounds[finite:]
        cumulative = _as_counts(values[:finite])
        count = _as_count(
            entry.count if entry.count is not None else (values[finite] if finite < len(values) else math.nan)
        )
        problem = None
        if count is None:
            problem = "histogram series without a valid _count or +Inf bucket"
        elif cumulative is None or len(set(bounds)) != len(bounds):
            problem = "histogram buckets must be distinct bounds with non-negative integer counts"
        else:
            per_bucket = list(map(sub, [*cumulative, count], [0, *cumulative]))
            if min(per_bucket) < 0:
                problem = "histogram bucket counts decrease (not cumulative) or exceed _count"
        if problem:
            conversion.errors.append(ParseError(entry.first_sample.line_no, problem, family.name))
            continue
        total = entry.sum
        if total is not None and not math.isfinite(total):
            conversion.non_finite_values += 1
            total = None
        time_unix_nano = _time(entry.first_sample, scrape_time)
        metric.points.append(HistogramPoint(labels, time_unix_nano, count, total, bounds, per_bucket))
    if metric.points:
        conversion.metrics.append(metric)
        conversion.series += len(metric.points)  # one point per series, by construction


def _convert_summary(family: MetricFamily, scrape_time: int, conversion: Conversion) -> None:
    metric = Metric(family.name, family.help, "summary", [])
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
        metric.points.append(SummaryPoint(labels, _time(entry.first_sample, scrape_time), count, total, quantiles))
    if metric.points:
        conversion.metrics.append(metric)
        conversion.series += len(metric.points)  # one point per series, by construction


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
