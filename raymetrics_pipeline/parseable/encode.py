"""What goes over the wire to Parseable: OTLP/JSON or OTLP/protobuf bodies, compressed, and halved after a 413.

The JSON is written by hand, for speed and for Parseable OSS, whose decoder silently drops
values or whole metrics on canonical-but-unexpected forms: 64-bit integers as strings,
enum names, non-finite numbers (docs/parseable.md#decoding). ``test_encode`` decodes it with
protobuf's ``json_format`` and compares it with the protobuf path built from the same metrics.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, repeat
from json.encoder import encode_basestring_ascii as _json_string
from operator import attrgetter, itemgetter

import zstandard
from google.protobuf.message import DecodeError
from isal import igzip_lib
from opentelemetry.proto.metrics.v1 import metrics_pb2

from raymetrics_pipeline.common.remembered import remember
from raymetrics_pipeline.ingest.otlp import (
    CUMULATIVE,
    HistogramPoint,
    Metric,
    NumberPoint,
    ResourceMetrics,
    SummaryPoint,
)
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
    OTLP/JSON and a little smaller, which matters when every run has a 15 s tick. Its small
    working memory gives the same bytes as the default (``igzip.compress(body, 1, mtime=0)``),
    and is reused from one body to the next, where the default's was handed back to the system
    and asked for again page by page (page faults cost a cycle a tenth more CPU).
    """
    if compression == "gzip":
        gzipped = igzip_lib.compress(body, 1, flag=igzip_lib.COMP_GZIP, mem_level=igzip_lib.MEM_LEVEL_SMALL)
        return gzipped, {"Content-Encoding": "gzip"}
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(body), {"Content-Encoding": "zstd"}
    return body, {}


# --- OTLP/JSON -----------------------------------------------------------------------
# Written as bytes, in pieces joined once per body: a string per point, then the body as a string and again as
# bytes, cost more (in memory the system hands over page by page) than writing the JSON itself.

_NON_FINITE_JSON = {math.inf: '"Infinity"', -math.inf: '"-Infinity"'}


def _json_double(value: float) -> str:
    if value != value:
        return '"NaN"'
    return _NON_FINITE_JSON.get(value) or repr(value)


def _json_bytes(text: str) -> bytes:
    """``text`` as a JSON string: ASCII, everything else escaped."""
    return _json_string(text).encode()


# Label sets' attributes, written once, are kept from one cycle to the next: a run scrapes the same series every
# 15 s, so from its second cycle on, they are looked up, not written. Past this many label sets (about 1 kB each:
# a dozen Ray nodes' series), or values of one label name, a cache starts over: a large target's unique values (one
# per task or object) would otherwise keep hundreds of megabytes alive.
_MAX_REMEMBERED = 10_000
_MAX_REMEMBERED_VALUES = 2_000


class _ValueJson(dict):
    """One label name's values → their OTLP/JSON ``KeyValue``; most values (session, node, version) repeat on
    every series."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key_json = b'{"key":' + _json_bytes(key) + b',"value":{"stringValue":'

    def __missing__(self, value: str) -> bytes:
        return remember(self, value, self.key_json + _json_bytes(value) + b"}}", _MAX_REMEMBERED_VALUES)


_value_json = _ValueJson.__getitem__  # dict's own, in C; it calls __missing__


class _AttributesJson(dict):
    """A label set's ``(keys, values)`` → its attributes as OTLP/JSON; a scrape's families share many label sets
    (Ray's gRPC counters and histograms, for one), and keyed by plain tuples they are looked up in C."""

    def __init__(self) -> None:
        super().__init__()
        self._columns: dict[tuple[str, ...], tuple[_ValueJson, ...]] = {}  # label names → each one's values

    def __missing__(self, labels: tuple[tuple[str, ...], tuple[str, ...]]) -> bytes:
        keys, values = labels
        columns = self._columns.get(keys)
        if columns is None:
            columns = remember(self._columns, keys, tuple(map(_ValueJson, keys)), _MAX_REMEMBERED)
        return remember(self, labels, b",".join(map(_value_json, columns, values)), _MAX_REMEMBERED)


_attributes_json = _AttributesJson()
_NUMBER_KINDS = frozenset({"gauge", "sum"})


class _TimeJson(dict):
    """A time → what comes between a gauge or sum point's attributes and its value; a cycle's points share a
    handful of times."""

    def __missing__(self, time_unix_nano: int) -> bytes:
        return remember(self, time_unix_nano, b'],"timeUnixNano":"%d","asDouble":' % time_unix_nano, 1_000)


_time_json = _TimeJson()
_double_json = b"%r".__mod__  # a finite double as repr() writes it (the shortest text that reads back the same)
_NUMBER_POINT_START = b'{"attributes":['
_NEXT_NUMBER_POINT = b"}," + _NUMBER_POINT_START
_LAST_NUMBER_POINT_END = (b"}",)
_JSON_DATA_HEADS = {
    "gauge": b'"gauge":{"dataPoints":[',
    "sum": b'"sum":{"aggregationTemporality":%d,"isMonotonic":true,"dataPoints":[' % CUMULATIVE,
    "histogram": b'"histogram":{"aggregationTemporality":%d,"dataPoints":[' % CUMULATIVE,
    "summary": b'"summary":{"dataPoints":[',
}


class _MetricHeads(dict):
    """A metric's (name, description, kind) → its JSON up to its data points; kept from one cycle to the next, as
    a target's metrics are the same in every scrape."""

    def __missing__(self, metric: tuple[str, str, str]) -> bytes:
        name, description, kind = metric
        head = b'{"name":%b,"description":%b,%b' % (_json_bytes(name), _json_bytes(description), _JSON_DATA_HEADS[kind])
        return remember(self, metric, head, _MAX_REMEMBERED)


_metric_heads = _MetricHeads()


class _BoundsJson(dict):
    """A histogram's bounds → their JSON list's items; a family's series and a target's scrapes share them."""

    def __missing__(self, bounds: tuple[float, ...]) -> bytes:
        return remember(self, bounds, b",".join(map(_double_json, bounds)), _MAX_REMEMBERED)


_bounds_json = _BoundsJson()
_KEYS = attrgetter("keys")
_VALUES = attrgetter("values")


class JsonEncoder:
    """Writes OTLP/JSON request bodies."""

    def __init__(self) -> None:
        self._attributes_json = _attributes_json

    def _attributes(self, attributes: LabelSet) -> bytes:
        return self._attributes_json[attributes.keys, attributes.values]

    def _number_point_parts(self, points: list[NumberPoint]) -> tuple[list[bytes], list[bytes], list[bytes]]:
        """The JSON of gauge and sum points (of any number of metrics) in three parts, written in one pass in C,
        without a string per point: their attributes, what follows (the time), their values."""
        if not points:
            return [], [], []
        attribute_sets, times, values = zip(*points, strict=True)
        if all(map(math.isfinite, values)):
            value_texts = list(map(_double_json, values))
        else:
            value_texts = [_json_double(value).encode() for value in values]
        keys_and_values = zip(map(_KEYS, attribute_sets), map(_VALUES, attribute_sets), strict=True)
        attributes = list(map(self._attributes_json.__getitem__, keys_and_values))
        return attributes, list(map(_time_json.__getitem__, times)), value_texts

    def _number_points(self, points: list[NumberPoint]) -> list[bytes]:
        parts = zip(*self._number_point_parts(points), strict=True)
        return [b"%b%b%b%b}" % (_NUMBER_POINT_START, attributes, time, value) for attributes, time, value in parts]

    def _points(self, metric: Metric) -> list[bytes]:
        """Each data point's JSON."""
        if metric.kind == "gauge" or metric.kind == "sum":
            return self._number_points(metric.points)
        texts = []
        for point in metric.points:
            head = b'{"attributes":[%b],"timeUnixNano":"%d","count":%d' % (
                self._attributes(point.attributes),
                point.time_unix_nano,
                point.count,
            )
            if metric.kind == "histogram":
                total = b"" if point.sum is None else b',"sum":%r' % point.sum
                counts = b",".join(map(b"%d".__mod__, point.bucket_counts))
                if 0.0 in point.explicit_bounds:  # as a key, 0.0 would stand for -0.0 too
                    bounds = b",".join(map(_double_json, point.explicit_bounds))
                else:
                    bounds = _bounds_json[tuple(point.explicit_bounds)]
                texts.append(b'%b%b,"bucketCounts":[%b],"explicitBounds":[%b]}' % (head, total, counts, bounds))
            else:
                quantiles = b",".join(b'{"quantile":%r,"value":%r}' % quantile for quantile in point.quantiles)
                texts.append(b'%b,"sum":%r,"quantileValues":[%b]}' % (head, point.sum, quantiles))
        return texts

    @staticmethod
    def _metric_head(metric: Metric) -> bytes:
        return _metric_heads[metric.name, metric.description, metric.kind]

    def _metrics(self, metrics: list[Metric]) -> list[bytes]:
        """``metrics`` (each with points) as pieces of JSON that join into their list in a scope. The gauge and sum
        points of all of them are written in one pass (most metrics have a handful of points: per metric work
        would cost the most), in pieces that mostly exist already: remembered attributes, times, constants."""
        numbers = [point for metric in metrics if metric.kind in _NUMBER_KINDS for point in metric.points]
        attributes, times, values = self._number_point_parts(numbers)
        pieces: list[bytes] = []
        taken = 0
        closing = b""  # what closes the metric before
        for metric in metrics:
            head = _metric_heads[metric.name, metric.description, metric.kind]
            if metric.kind in _NUMBER_KINDS:
                end = taken + len(metric.points)
                pieces += (closing, head, _NUMBER_POINT_START)
                ends = chain(repeat(_NEXT_NUMBER_POINT, end - taken - 1), _LAST_NUMBER_POINT_END)
                pieces += chain.from_iterable(
                    zip(attributes[taken:end], times[taken:end], values[taken:end], ends, strict=True)
                )
                taken = end
            else:
                pieces += (closing, head, b",".join(self._points(metric)))
            closing = b"]}},"
        return pieces

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
        body_head = b'{"resourceMetrics":['
        closers = b"]}}" + b"]}]}" + b"]}"  # metric, resource and body
        parts, size = [body_head], len(body_head)
        open_resource = open_metric = None

        for resource_attributes, metrics in scrapes:
            resource_head = (
                b'{"resource":{"attributes":[%b]},"scopeMetrics":[{"metrics":[' % self._attributes(resource_attributes)
                if resource_attributes
                else b'{"scopeMetrics":[{"metrics":['
            )
            resource_key = object()
            metrics = [metric for metric in metrics if metric.points]
            if not metrics:
                continue
            opening = resource_head if open_resource is None else b"]}}]}]}," + resource_head
            pieces = self._metrics(metrics)
            length = len(opening) + sum(map(len, pieces))
            if size + length + len(closers) <= max_request_bytes:
                # The whole scrape fits: what the loops below would add, at once.
                parts.append(opening)
                parts += pieces
                size += length
                open_resource, open_metric = resource_key, metrics[-1]
                continue
            for metric in metrics:
                metric_head = self._metric_head(metric)
                points = self._points(metric)
                if open_resource is None:
                    opening = resource_head + metric_head
                elif open_resource is not resource_key:
                    opening = b"]}}]}]}," + resource_head + metric_head
                else:
                    opening = b"]}}," + metric_head
                joined = b",".join(points)
                if size + len(opening) + len(joined) + len(closers) <= max_request_bytes:
                    # The whole metric fits: what the point-by-point loop below would add, in one piece.
                    parts += (opening, joined)
                    size += len(opening) + len(joined)
                    open_resource, open_metric = resource_key, metric
                    continue
                for point in points:
                    if open_resource is None:
                        chunk = resource_head + metric_head + point
                    elif open_resource is not resource_key:
                        chunk = b"]}}]}]}," + resource_head + metric_head + point
                    elif open_metric is not metric:
                        chunk = b"]}}," + metric_head + point
                    else:
                        chunk = b"," + point
                    if open_resource is not None and size + len(chunk) + len(closers) > max_request_bytes:
                        parts.append(closers)
                        yield b"".join(parts)
                        parts, size = [body_head], len(body_head)
                        chunk = resource_head + metric_head + point
                    parts.append(chunk)
                    size += len(chunk)
                    open_resource, open_metric = resource_key, metric
        if open_resource is not None:
            parts.append(closers)
            yield b"".join(parts)


# --- OTLP/protobuf -------------------------------------------------------------------
# Written by hand like the JSON, and for the same reason: opentelemetry-proto messages built point by point cost
# three times the rest of the cycle. Fields in field-number order, as protobuf writes them
# (opentelemetry/proto/metrics/v1/metrics.proto); test_encode decodes the bodies with protobuf itself.

_SMALL_VARINTS = [bytes((n,)) for n in range(0x80)]


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL_VARINTS[n]
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _delimited(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag (field number and wire type 2), the payload's length, the payload."""
    return tag + _varint(len(payload)) + payload


def _string(tag: bytes, text: str) -> bytes:
    return _delimited(tag, text.encode()) if text else b""  # proto3 leaves out empty strings


_DOUBLE = struct.Struct("<d")
_TIME_AND_DOUBLE = struct.Struct("<BQBd")  # NumberDataPoint.time_unix_nano (3, fixed64), as_double (4, double)


class _ValueProto(dict):
    """One label name's values → their ``KeyValue`` (with its length, without the tag of the field holding it)."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key_field = _string(b"\x0a", key)

    def __missing__(self, value: str) -> bytes:
        # KeyValue.key (1), KeyValue.value (2): an AnyValue with string_value (1), written even when empty (a oneof)
        key_value = self.key_field + _delimited(b"\x12", _delimited(b"\x0a", value.encode()))
        return remember(self, value, _varint(len(key_value)) + key_value, _MAX_REMEMBERED_VALUES)


_value_proto = _ValueProto.__getitem__
_value_proto_columns: dict[tuple[str, ...], tuple[_ValueProto, ...]] = {}


def _attributes_proto(tag: bytes, attributes: LabelSet) -> bytes:
    """``attributes`` as repeated ``KeyValue`` field ``tag``."""
    columns = _value_proto_columns.get(attributes.keys)
    if columns is None:
        columns = remember(
            _value_proto_columns, attributes.keys, tuple(map(_ValueProto, attributes.keys)), _MAX_REMEMBERED
        )
    return tag + tag.join(map(_value_proto, columns, attributes.values)) if attributes.values else b""


class _NumberPointParts(dict):
    """A label set's ``(keys, values)`` → what a ``NumberDataPoint`` with a time and a double holds besides them:
    its data_points tag and length, and its attributes (7); remembered from one cycle to the next."""

    def __missing__(self, labels: tuple[tuple[str, ...], tuple[str, ...]]) -> tuple[bytes, bytes]:
        attributes = _attributes_proto(b"\x3a", LabelSet(*labels))
        parts = (b"\x0a" + _varint(_TIME_AND_DOUBLE.size + len(attributes)), attributes)
        return remember(self, labels, parts, _MAX_REMEMBERED)


_number_point_parts = _NumberPointParts()
_FIRST = itemgetter(0)
_SECOND = itemgetter(1)


def _number_points_proto(points: list[NumberPoint]) -> bytes:
    """Gauge or Sum data_points (1)."""
    attribute_sets, times, values = zip(*points, strict=True)
    if 0 not in times:  # the usual: every point has a time (proto3 would leave out a 0). Written in C.
        keys_and_values = zip(map(_KEYS, attribute_sets), map(_VALUES, attribute_sets), strict=True)
        parts = list(map(_number_point_parts.__getitem__, keys_and_values))
        times_and_values = map(_TIME_AND_DOUBLE.pack, repeat(0x19), times, repeat(0x21), values)
        pieces = zip(map(_FIRST, parts), times_and_values, map(_SECOND, parts), strict=True)
        return b"".join(chain.from_iterable(pieces))
    return b"".join(
        _delimited(
            b"\x0a",
            (b"\x19" + struct.pack("<Q", point.time_unix_nano) if point.time_unix_nano else b"")
            + b"\x21"
            + _DOUBLE.pack(point.value)
            + _attributes_proto(b"\x3a", point.attributes),
        )
        for point in points
    )


def _double(tag: bytes, value: float) -> bytes:
    """A proto3 double field, left out when +0.0 (protobuf compares the bits: -0.0 is written)."""
    return tag + _DOUBLE.pack(value) if value or math.copysign(1.0, value) < 0 else b""


def _fixed64(tag: bytes, value: int) -> bytes:
    return tag + struct.pack("<Q", value) if value else b""


def _histogram_point_proto(point: HistogramPoint) -> bytes:
    count = len(point.bucket_counts)
    bounds = len(point.explicit_bounds)
    return _delimited(
        b"\x0a",
        _fixed64(b"\x19", point.time_unix_nano)
        + _fixed64(b"\x21", point.count)
        + (b"" if point.sum is None else b"\x29" + _DOUBLE.pack(point.sum))  # optional: written when set
        + (_delimited(b"\x32", struct.pack(f"<{count}Q", *point.bucket_counts)) if count else b"")
        + (_delimited(b"\x3a", struct.pack(f"<{bounds}d", *point.explicit_bounds)) if bounds else b"")
        + _attributes_proto(b"\x4a", point.attributes),
    )


def _summary_point_proto(point: SummaryPoint) -> bytes:
    quantiles = b"".join(
        _delimited(b"\x32", _double(b"\x09", quantile) + _double(b"\x11", value)) for quantile, value in point.quantiles
    )
    return _delimited(
        b"\x0a",
        _fixed64(b"\x19", point.time_unix_nano)
        + _fixed64(b"\x21", point.count)
        + _double(b"\x29", point.sum)
        + quantiles
        + _attributes_proto(b"\x3a", point.attributes),
    )


# Metric's data field (gauge 5, sum 7, histogram 9, summary 11) and what follows its data_points (1):
# aggregation_temporality (2) and is_monotonic (3).
_PROTO_DATA = {
    "gauge": (b"\x2a", b""),
    "sum": (b"\x3a", b"\x10" + _varint(CUMULATIVE) + b"\x18\x01"),
    "histogram": (b"\x4a", b"\x10" + _varint(CUMULATIVE)),
    "summary": (b"\x5a", b""),
}


def _metric_proto(metric: Metric) -> bytes:
    if metric.kind == "gauge" or metric.kind == "sum":
        points = _number_points_proto(metric.points) if metric.points else b""
    elif metric.kind == "histogram":
        points = b"".join(map(_histogram_point_proto, metric.points))
    else:
        points = b"".join(map(_summary_point_proto, metric.points))
    tag, settings = _PROTO_DATA[metric.kind]
    data = points + settings
    # An empty gauge or summary is left out, as protobuf leaves out a message with nothing set.
    return (
        _string(b"\x0a", metric.name) + _string(b"\x12", metric.description) + (_delimited(tag, data) if data else b"")
    )


def encode_protobuf(
    scrapes: Iterable[ResourceMetrics],
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> Iterator[bytes]:
    """OTLP/protobuf bodies of at most ``max_request_bytes``, split between metrics."""
    body: list[bytes] = []  # MetricsData.resource_metrics (1), each with its tag and length
    size = 0
    for resource_attributes, metrics in scrapes:
        resource = _delimited(b"\x0a", _attributes_proto(b"\x0a", resource_attributes)) if resource_attributes else b""
        scope: list[bytes] = []  # this resource's ScopeMetrics.metrics (2) in the body being filled
        for metric in metrics:
            try:
                message = _metric_proto(metric)
            except struct.error as error:  # a time past 2554 or a count past 2**64: what protobuf raises
                raise ValueError(f"Value out of range in {metric.name}: {error}") from error
            needed = len(message) + 16
            if size + needed > max_request_bytes and size:
                yield b"".join(_with_resource_metrics(body, resource, scope))
                body, size, scope = [], 0, []
            if not scope:
                size += 32 + len(resource)
            scope.append(_delimited(b"\x12", message))
            size += needed
        body = _with_resource_metrics(body, resource, scope)
    if size:
        yield b"".join(body)


def _with_resource_metrics(body: list[bytes], resource: bytes, scope: list[bytes]) -> list[bytes]:
    """``body`` with a ResourceMetrics of ``resource`` (1) and one ScopeMetrics (2) of ``scope``, if not empty."""
    if scope:
        body.append(_delimited(b"\x0a", resource + _delimited(b"\x12", b"".join(scope))))
    return body


def forget_remembered() -> None:
    """Empty what encoding keeps from one cycle to the next, as a new process finds it (to measure a run's first
    cycle, or to test that what is remembered changes nothing)."""
    remembered = (_attributes_json, _attributes_json._columns, _time_json, _metric_heads, _bounds_json)
    for cache in (*remembered, _value_proto_columns, _number_point_parts):
        cache.clear()


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
