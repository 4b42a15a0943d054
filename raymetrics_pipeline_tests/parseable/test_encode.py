"""OTLP bodies for Parseable: JSON that protobuf's own decoder reads as the protobuf path's message, in the
shape Parseable OSS keeps, cut under the payload limit and halved after a 413 without losing a point."""

import json
import math

import pytest

from raymetrics_pipeline.ingest import otlp
from raymetrics_pipeline.ingest.otlp import ResourceMetrics
from raymetrics_pipeline.ingest.prometheus import NO_LABELS, LabelSet, parse
from raymetrics_pipeline.parseable.encode import CONTENT_TYPES, JsonEncoder, Unsplittable, encode_protobuf, split_body
from raymetrics_pipeline_tests.otlp_messages import decode_json, decode_protobuf, point_count
from raymetrics_pipeline_tests.scrape_fixtures import scrape_fixtures

FIXTURES = scrape_fixtures()
RESOURCE = LabelSet(("cluster_id", "env"), ("prod-a", "prod"))


def convert(text: str, time_ns: int = 1_700_000_000_000_000_000) -> otlp.Conversion:
    return otlp.to_metrics(parse(text), time_ns)


def reject_bare_constants(name):
    raise AssertionError(f"bare {name} in JSON")


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda f: f.id)
def test_json_decodes_to_the_same_message_as_the_protobuf_path(fixture):
    conversion = convert(fixture.text(), fixture.scrape_time_unix_nano)
    scrapes = [ResourceMetrics(RESOURCE, conversion.metrics)]
    bodies = list(JsonEncoder().encode(scrapes))
    for body in bodies:
        json.loads(body, parse_constant=reject_bare_constants)
    decoded = decode_json(bodies)
    assert decoded == decode_protobuf(encode_protobuf(scrapes))
    assert point_count(decoded) == conversion.data_points


@pytest.mark.parametrize("fixture", FIXTURES[:3], ids=lambda f: f.id)
def test_json_is_in_the_shape_parseable_oss_keeps(fixture):
    """Integer enums, asDouble numbers, no asInt strings, no exemplars, every point stamped."""
    conversion = convert(fixture.text(), fixture.scrape_time_unix_nano)
    (body,) = JsonEncoder().encode([ResourceMetrics(NO_LABELS, conversion.metrics)])
    document = json.loads(body)
    (resource_metrics,) = document["resourceMetrics"]
    assert "resource" not in resource_metrics  # as Fluent Bit: no resource unless configured
    points = 0
    for metric in resource_metrics["scopeMetrics"][0]["metrics"]:
        kind = next(k for k in ("gauge", "sum", "histogram", "summary") if k in metric)
        if kind in ("sum", "histogram"):
            assert metric[kind]["aggregationTemporality"] == 2
        if kind == "sum":
            assert metric["sum"]["isMonotonic"] is True
        for point in metric[kind]["dataPoints"]:
            points += 1
            assert "asInt" not in point and "exemplars" not in point
            assert point["timeUnixNano"] == str(fixture.scrape_time_unix_nano)
            if kind in ("gauge", "sum"):
                assert isinstance(point["asDouble"], float)
            if kind == "histogram":
                assert sum(point["bucketCounts"]) == point["count"]
                assert len(point["bucketCounts"]) == len(point["explicitBounds"]) + 1
    assert points == conversion.data_points


def test_non_finite_gauge_values_follow_the_proto3_json_mapping():
    conversion = convert("a NaN\nb +Inf\nc -Inf\n")
    (body,) = JsonEncoder().encode([ResourceMetrics(NO_LABELS, conversion.metrics)])
    values = [
        m["gauge"]["dataPoints"][0]["asDouble"]
        for m in json.loads(body)["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
    ]
    assert values == ["NaN", "Infinity", "-Infinity"]
    decoded = decode_json([body])
    decoded_values = [m.gauge.data_points[0].as_double for m in decoded.resource_metrics[0].scope_metrics[0].metrics]
    assert math.isnan(decoded_values[0]) and decoded_values[1:] == [math.inf, -math.inf]
    assert conversion.non_finite_values == 3


def test_infinite_bounds_and_quantiles_never_reach_the_wire():
    """A `le="-Inf"` bucket or an infinite quantile once made the body invalid JSON: every target's data refused."""
    conversion = convert('# TYPE h histogram\nh_bucket{le="-Inf"} 0\nh_bucket{le="+Inf"} 1\nh_count 1\nh_sum 2\n'
                         '# TYPE s summary\ns{quantile="+Inf"} 1\ns_sum 1\ns_count 1\n')  # fmt: skip
    (body,) = JsonEncoder().encode([ResourceMetrics(NO_LABELS, conversion.metrics)])
    metrics = json.loads(body)["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
    (histogram,) = [m["histogram"]["dataPoints"][0] for m in metrics if "histogram" in m]
    assert histogram.get("explicitBounds", []) == [] and histogram["count"] in (1, "1")
    assert len(conversion.errors) == 2
    assert decode_protobuf([next(encode_protobuf([ResourceMetrics(NO_LABELS, conversion.metrics)]))])


@pytest.mark.parametrize("limit", [4_000, 30_000, 300_000])
def test_requests_are_split_under_the_size_limit_without_losing_points(limit):
    largest = max(FIXTURES, key=lambda f: f.path.stat().st_size)
    conversion = convert(largest.text(), largest.scrape_time_unix_nano)
    scrapes = [ResourceMetrics(RESOURCE, conversion.metrics), ResourceMetrics(NO_LABELS, conversion.metrics)]
    bodies = list(JsonEncoder().encode(scrapes, limit))
    assert len(bodies) > 1 and all(len(b) <= limit for b in bodies)
    assert point_count(decode_json(bodies)) == 2 * conversion.data_points
    protobuf_bodies = list(encode_protobuf(scrapes, max(limit, 60_000)))
    assert len(protobuf_bodies) > 1 and all(len(b) <= max(limit, 60_000) for b in protobuf_bodies)


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_split_body_halves_a_request_without_losing_points(encoding):
    largest = max(FIXTURES, key=lambda f: f.path.stat().st_size)
    conversion = convert(largest.text(), largest.scrape_time_unix_nano)
    scrapes = [ResourceMetrics(RESOURCE, conversion.metrics), ResourceMetrics(NO_LABELS, conversion.metrics)]
    encoder = JsonEncoder().encode if encoding == "json" else encode_protobuf
    decode = decode_json if encoding == "json" else decode_protobuf
    (body,) = encoder(scrapes)
    original = decode([body])
    pending, pieces = [body], []
    while pending:  # halve down to single data points: resources, then metrics, then points
        part = pending.pop()
        try:
            pending += split_body(part, CONTENT_TYPES[encoding])
        except Unsplittable:
            pieces.append(part)
    assert point_count(decode(pieces)) == point_count(original) == 2 * conversion.data_points
    assert all(point_count(decode([piece])) == 1 for piece in pieces)
    halves = split_body(body, CONTENT_TYPES[encoding])
    assert [len(decode([half]).resource_metrics) for half in halves] == [1, 1]
    assert decode([halves[0]]).resource_metrics[0] == original.resource_metrics[0]
