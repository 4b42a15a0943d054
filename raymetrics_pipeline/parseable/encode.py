"""What goes over the wire to Parseable: OTLP/JSON or OTLP/protobuf bodies, compressed, and halved after a 413.

The JSON is written by hand, for speed and for Parseable OSS, whose decoder silently drops
values or whole metrics on canonical-but-unexpected forms: 64-bit integers as strings,
enum names, non-finite numbers (docs/parseable.md#decoding). ``test_encode`` decodes it with
protobuf's ``json_format`` and compares it with the protobuf path built from the same metrics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from json.encoder import encode_basestring_ascii as _json_string

import zstandard
from google.protobuf.message import DecodeError
from isal import igzip
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from raymetrics_pipeline.ingest.otlp import CUMULATIVE, Metric, ResourceMetrics
from raymetrics_pipeline.ingest.prometheus import LabelSet

# Exactly this: Parseable compares the whole Content-Type header (docs/parseable.md#content-type).
JSON = "application/json"
PROTOBUF = "application/x-protobuf"
CONTENT_TYPES = {"json": JSON, "protobuf": PROTOBUF}
COMPRESSIONS = ("gzip", "zstd", "none")
# Parseable refuses more than 10 MiB decompressed (docs/parseable.md#payload-limit); keep a margin.
DEFAULT_MAX_REQUEST_BYTES = 9 * 1024 * 1024


class Unsplittable(ValueError):
    """A body that cannot be halved: one data point alone is over the limit, or it does not decode."""


def encode(scrapes: Iterable[ResourceMetrics], content_type: str, max_request_bytes: int) -> Iterator[bytes]:
    """``scrapes`` as uncompressed request bodies of ``content_type``, none over ``max_request_bytes``.

    Bodies come as they fill, and scrapes are taken one at a time, so a caller can send each body
    while the next target is still being converted, and memory holds one body, not the cycle.
    """
    if content_type == JSON:
        return JsonEncoder().encode(scrapes, max_request_bytes)
    return encode_protobuf(scrapes, max_request_bytes)


def compress(body: bytes, compression: str) -> tuple[bytes, dict[str, str]]:
    """The request payload and its ``Content-Encoding`` header.

    gzip comes from ISA-L (``isal``): standard gzip, about 6x faster than zlib's level 1 on
    OTLP/JSON and a little smaller, which matters when every run has a 15 s tick.
    """
    if compression == "gzip":
        return igzip.compress(body, 1, mtime=0), {"Content-Encoding": "gzip"}
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(body), {"Content-Encoding": "zstd"}
    return body, {}


# --- OTLP/JSON -----------------------------------------------------------------------


_NON_FINITE_JSON = {math.inf: '"Infinity"', -math.inf: '"-Infinity"'}


def _json_double(value: float) -> str:
    if value != value:
        return '"NaN"'
    return _NON_FINITE_JSON.get(value) or repr(value)


# Pairs remembered at most: a large target's unique values (one per task or object) would otherwise keep
# hundreds of megabytes of JSON alive for the whole cycle.
_MAX_REMEMBERED_PAIRS = 50_000


class _AttributeJson(dict):
    """``(key, value)`` → its OTLP/JSON ``KeyValue``; most pairs (session, node, version) repeat on every series."""

    def __missing__(self, pair: tuple[str, str]) -> str:
        if len(self) >= _MAX_REMEMBERED_PAIRS:
            self.clear()
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
        scrapes: Iterable[ResourceMetrics],
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> Iterator[bytes]:
        """One ``ResourceMetrics`` per scrape, packed into bodies of at most ``max_request_bytes``.

        A scrape or a metric too big for one body continues in the next one under a
        repeated resource and metric header, so no body ever exceeds the limit unless a
        single data point does.
        """
        body_head = '{"resourceMetrics":['
        closers = "]}}" + "]}]}" + "]}"  # metric, resource and body
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
                        yield "".join(parts).encode()
                        parts, size = [body_head], len(body_head)
                        chunk = resource_head + metric_head + point
                    parts.append(chunk)
                    size += len(chunk)
                    open_resource, open_metric = resource_key, metric
        if open_resource is not None:
            parts.append(closers)
            yield "".join(parts).encode()


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


def encode_protobuf(
    scrapes: Iterable[ResourceMetrics],
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> Iterator[bytes]:
    """OTLP/protobuf bodies of at most ``max_request_bytes``, split between metrics."""
    current = metrics_pb2.MetricsData()
    size = 0
    for resource_attributes, metrics in scrapes:
        resource_metrics = None
        for metric in metrics:
            message = to_proto_metric(metric)
            needed = message.ByteSize() + 16
            if size + needed > max_request_bytes and size:
                yield current.SerializeToString()
                current, size, resource_metrics = metrics_pb2.MetricsData(), 0, None
            if resource_metrics is None:
                resource_metrics = current.resource_metrics.add(resource=_resource(resource_attributes))
                scope = resource_metrics.scope_metrics.add()
                size += 32
            scope.metrics.append(message)
            size += needed
    if size:
        yield current.SerializeToString()


# --- Halving a body after a 413 ------------------------------------------------------
# Both encodings are walked alike: a body's entries are resources, a resource's are the metrics
# of its one scope (our encoders write one), a metric's are its data points. The first level
# with more than one entry is cut in two; everything above it is copied around each half.


def split_body(body: bytes, content_type: str) -> list[bytes]:
    """Two bodies that together hold every data point of ``body``."""
    if content_type == JSON:
        try:
            document = json.loads(body)
        except ValueError as error:
            raise Unsplittable(f"cannot split a JSON body that does not parse: {error}") from error
        halves = _halve(document, _json_entries, _json_with_entries)
        return [json.dumps(half, separators=(",", ":")).encode() for half in halves]
    try:
        message = metrics_pb2.MetricsData.FromString(body)
    except DecodeError as error:
        raise Unsplittable(f"cannot split a protobuf body that does not decode: {error}") from error
    return [half.SerializeToString() for half in _halve(message, _proto_entries, _proto_with_entries)]


def _halve(body, entries: Callable, with_entries: Callable) -> list:
    path, node = [], body
    for level in range(3):
        found = entries(node, level)
        if len(found) > 1:
            middle = len(found) // 2
            return [
                _rebuild(path + [(node, level)], list(part), with_entries) for part in (found[:middle], found[middle:])
            ]
        if not found:
            break
        path.append((node, level))
        node = found[0]
    raise Unsplittable("a single OTLP data point is larger than Parseable's payload limit")


def _rebuild(path: list, part: list, with_entries: Callable):
    for node, level in reversed(path):
        part = [with_entries(node, level, part)]
    return part[0]


def _json_kind(metric: dict) -> str:
    return next(kind for kind in ("gauge", "sum", "histogram", "summary") if kind in metric)


def _json_entries(node: dict, level: int) -> list:
    if level == 0:
        return node.get("resourceMetrics", [])
    if level == 1:
        return node["scopeMetrics"][0]["metrics"]
    return node[_json_kind(node)]["dataPoints"]


def _json_with_entries(node: dict, level: int, entries: list) -> dict:
    if level == 0:
        return {"resourceMetrics": entries}
    if level == 1:
        return {**node, "scopeMetrics": [{**node["scopeMetrics"][0], "metrics": entries}]}
    kind = _json_kind(node)
    return {**node, kind: {**node[kind], "dataPoints": entries}}


def _proto_entries(node, level: int):
    if level == 0:
        return node.resource_metrics
    if level == 1:
        return node.scope_metrics[0].metrics
    return getattr(node, node.WhichOneof("data")).data_points


def _proto_with_entries(node, level: int, entries: list):
    copy = type(node)()
    copy.CopyFrom(node)
    target = _proto_entries(copy, level)
    del target[:]
    target.extend(entries)
    return copy
