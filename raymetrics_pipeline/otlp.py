"""Prometheus families → OpenTelemetry metrics, encoded as OTLP/JSON or OTLP/protobuf.

The shape follows Fluent Bit where users' SQL depends on it (names and label keys
verbatim, empty label values kept, counters as monotonic cumulative sums, gauges and
untyped as gauges, double values, the scrape time on every point) and does better where
Fluent Bit is wrong: histogram buckets are per bucket with CUMULATIVE temporality and
summaries keep their quantiles.

The JSON is written by hand for speed and for Parseable OSS, whose decoder silently drops
values or whole metrics on canonical-but-unexpected forms (string ``asInt``, enum names,
missing zero fields; parseable-contract.md §1.6). ``test_otlp`` decodes it with protobuf's
``json_format`` and compares it with the protobuf path built from the same metrics.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _json_string

from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from raymetrics_pipeline.prometheus import NO_LABELS, Exposition, LabelSet, MetricFamily, ParseError

CUMULATIVE = 2  # AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE, sent as an integer
# Parseable refuses more than 10 MiB decompressed (P_MAX_EVENT_PAYLOAD_SIZE); keep a margin.
DEFAULT_MAX_REQUEST_BYTES = 9 * 1024 * 1024


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


def _time(sample, scrape_time_unix_nano: int) -> int:
    return scrape_time_unix_nano if sample.timestamp_ms is None else sample.timestamp_ms * 1_000_000


def _convert_numbers(family: MetricFamily, scrape_time: int, conversion: Conversion) -> None:
    kind = "sum" if family.type == "counter" else "gauge"
    by_name: dict[str, Metric] = {}
    for sample in family.samples:
        metric = by_name.get(sample.name)
        if metric is None:
            metric = by_name[sample.name] = Metric(sample.name, family.help, kind)
            conversion.metrics.append(metric)
        if not math.isfinite(sample.value):
            conversion.non_finite_values += 1
        metric.points.append(NumberPoint(sample.labels, _time(sample, scrape_time), sample.value))


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
            else:
                entry.buckets.append((bound, sample.value))
    return series


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
        time_unix_nano = _time(entry.first_sample, scrape_time)
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
        time_unix_nano = _time(entry.first_sample, scrape_time)
        metric.points.append(SummaryPoint(labels, time_unix_nano, count, total, quantiles))
    if metric.points:
        conversion.metrics.append(metric)


# --- OTLP/JSON -----------------------------------------------------------------------


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


_NON_FINITE_JSON = {math.inf: '"Infinity"', -math.inf: '"-Infinity"'}


def _json_double(value: float) -> str:
    if value != value:
        return '"NaN"'
    return _NON_FINITE_JSON.get(value) or repr(value)


class _AttributeJson(dict):
    """``(key, value)`` → its OTLP/JSON ``KeyValue``; most pairs (session, node, version) repeat on every series."""

    def __missing__(self, pair: tuple[str, str]) -> str:
        text = self[pair] = f'{{"key":{_json_string(pair[0])},"value":{{"stringValue":{_json_string(pair[1])}}}}}'
        return text


class JsonEncoder:
    """Writes OTLP/JSON request bodies."""

    def __init__(self) -> None:
        self._pair_json = _AttributeJson()

    def _attributes(self, attributes: LabelSet) -> str:
        return ",".join(map(self._pair_json.__getitem__, attributes))

    def _points(self, metric: Metric) -> Iterable[str]:
        attributes = self._attributes
        times: dict[int, str] = {}
        for point in metric.points:
            time_text = times.get(point.time_unix_nano)
            if time_text is None:
                time_text = times[point.time_unix_nano] = f'"timeUnixNano":"{point.time_unix_nano}"'
            head = f'{{"attributes":[{attributes(point.attributes)}],{time_text}'
            if metric.kind == "histogram":
                total = "" if point.sum is None else f',"sum":{point.sum!r}'
                yield (
                    f'{head},"count":{point.count}{total},'
                    f'"bucketCounts":[{",".join(map(str, point.bucket_counts))}],'
                    f'"explicitBounds":[{",".join(map(repr, point.explicit_bounds))}]}}'
                )
            elif metric.kind == "summary":
                quantiles = ",".join(f'{{"quantile":{q!r},"value":{v!r}}}' for q, v in point.quantiles)
                yield f'{head},"count":{point.count},"sum":{point.sum!r},"quantileValues":[{quantiles}]}}'
            else:
                yield f'{head},"asDouble":{_json_double(point.value)}}}'

    @staticmethod
    def _metric_head(metric: Metric) -> str:
        data = {
            "gauge": '"gauge":{"dataPoints":[',
            "sum": f'"sum":{{"aggregationTemporality":{CUMULATIVE},"isMonotonic":true,"dataPoints":[',
            "histogram": f'"histogram":{{"aggregationTemporality":{CUMULATIVE},"dataPoints":[',
            "summary": '"summary":{"dataPoints":[',
        }[metric.kind]
        return f'{{"name":{_json_string(metric.name)},"description":{_json_string(metric.description)},{data}'

    def encode(
        self,
        scrapes: Sequence[tuple[LabelSet, Sequence[Metric]]],
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> list[bytes]:
        """One ``ResourceMetrics`` per scrape, packed into bodies of at most ``max_request_bytes``.

        A scrape or a metric too big for one body continues in the next one under a
        repeated resource and metric header, so no body ever exceeds the limit unless a
        single data point does.
        """
        body_head = '{"resourceMetrics":['
        closers = "]}}" + "]}]}" + "]}"  # metric, resource and body
        bodies: list[bytes] = []
        parts, size = [body_head], len(body_head)
        open_resource = open_metric = None

        for resource_attributes, metrics in scrapes:
            resource_head = (
                f'{{"resource":{{"attributes":[{self._attributes(resource_attributes)}]}},"scopeMetrics":[{{"metrics":['
                if resource_attributes
                else '{"scopeMetrics":[{"metrics":['
            )
            resource_key = object()
            for metric in metrics:
                metric_head = self._metric_head(metric)
                for point in self._points(metric):
                    if open_resource is None:
                        chunk = resource_head + metric_head + point
                    elif open_resource is not resource_key:
                        chunk = "]}}]}]}," + resource_head + metric_head + point
                    elif open_metric is not metric:
                        chunk = "]}}," + metric_head + point
                    else:
                        chunk = "," + point
                    if open_resource is not None and size + len(chunk) + len(closers) > max_request_bytes:
                        parts.append(closers)
                        bodies.append("".join(parts).encode())
                        parts, size = [body_head], len(body_head)
                        chunk = resource_head + metric_head + point
                    parts.append(chunk)
                    size += len(chunk)
                    open_resource, open_metric = resource_key, metric
        if open_resource is not None:
            parts.append(closers)
            bodies.append("".join(parts).encode())
        return bodies


# --- OTLP/protobuf -------------------------------------------------------------------


def _proto_attributes(target, attributes: LabelSet) -> None:
    for key, value in attributes:
        target.add(key=key, value=common_pb2.AnyValue(string_value=value))


def to_proto_metric(metric: Metric) -> metrics_pb2.Metric:
    message = metrics_pb2.Metric(name=metric.name, description=metric.description)
    if metric.kind == "gauge" or metric.kind == "sum":
        if metric.kind == "sum":
            message.sum.aggregation_temporality = CUMULATIVE
            message.sum.is_monotonic = True
            points = message.sum.data_points
        else:
            points = message.gauge.data_points
        for point in metric.points:
            proto_point = points.add(time_unix_nano=point.time_unix_nano, as_double=point.value)
            _proto_attributes(proto_point.attributes, point.attributes)
    elif metric.kind == "histogram":
        message.histogram.aggregation_temporality = CUMULATIVE
        for point in metric.points:
            proto_point = message.histogram.data_points.add(
                time_unix_nano=point.time_unix_nano,
                count=point.count,
                bucket_counts=point.bucket_counts,
                explicit_bounds=point.explicit_bounds,
            )
            if point.sum is not None:
                proto_point.sum = point.sum
            _proto_attributes(proto_point.attributes, point.attributes)
    else:
        for point in metric.points:
            proto_point = message.summary.data_points.add(
                time_unix_nano=point.time_unix_nano, count=point.count, sum=point.sum
            )
            for quantile, value in point.quantiles:
                proto_point.quantile_values.add(quantile=quantile, value=value)
            _proto_attributes(proto_point.attributes, point.attributes)
    return message


def _resource(attributes: LabelSet) -> resource_pb2.Resource | None:
    if not attributes:
        return None
    resource = resource_pb2.Resource()
    _proto_attributes(resource.attributes, attributes)
    return resource


def to_proto(scrapes: Sequence[tuple[LabelSet, Sequence[Metric]]]) -> metrics_pb2.MetricsData:
    """All scrapes in one message, one ``ResourceMetrics`` per scrape."""
    data = metrics_pb2.MetricsData()
    for resource_attributes, metrics in scrapes:
        resource_metrics = data.resource_metrics.add(resource=_resource(resource_attributes))
        resource_metrics.scope_metrics.add().metrics.extend(to_proto_metric(m) for m in metrics)
    return data


def encode_protobuf(
    scrapes: Sequence[tuple[LabelSet, Sequence[Metric]]],
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> list[bytes]:
    """OTLP/protobuf bodies of at most ``max_request_bytes``, split between metrics."""
    bodies: list[bytes] = []
    current = metrics_pb2.MetricsData()
    size = 0
    for resource_attributes, metrics in scrapes:
        resource_metrics = None
        for metric in metrics:
            message = to_proto_metric(metric)
            needed = message.ByteSize() + 16
            if size + needed > max_request_bytes and size:
                bodies.append(current.SerializeToString())
                current, size, resource_metrics = metrics_pb2.MetricsData(), 0, None
            if resource_metrics is None:
                resource_metrics = current.resource_metrics.add(resource=_resource(resource_attributes))
                scope = resource_metrics.scope_metrics.add()
                size += 32
            scope.metrics.append(message)
            size += needed
    if size:
        bodies.append(current.SerializeToString())
    return bodies
