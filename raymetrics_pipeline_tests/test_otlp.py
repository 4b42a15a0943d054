import json
import math

import pytest

from raymetrics_pipeline import otlp
from raymetrics_pipeline.prometheus import NO_LABELS, LabelSet, parse
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
    scrapes = [(RESOURCE, conversion.metrics)]
    bodies = otlp.JsonEncoder().encode(scrapes)
    for body in bodies:
        json.loads(body, parse_constant=reject_bare_constants)
    assert decode_json(bodies) == otlp.to_proto(scrapes)
    assert decode_protobuf(otlp.encode_protobuf(scrapes)) == otlp.to_proto(scrapes)


@pytest.mark.parametrize("fixture", FIXTURES[:3], ids=lambda f: f.id)
def test_json_is_in_the_shape_parseable_oss_keeps(fixture):
    """Integer enums, asDouble numbers, no asInt strings, no exemplars, every point stamped."""
    conversion = convert(fixture.text(), fixture.scrape_time_unix_nano)
    (body,) = otlp.JsonEncoder().encode([(NO_LABELS, conversion.metrics)])
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


def test_labels_are_attributes_verbatim_with_empty_values_kept():
    conversion = convert('ray_tasks{JobId="",NodeAddress="10.0.0.1",State="FAILED",Version="2.60.0"} 3\n')
    (metric,) = conversion.metrics
    assert metric.kind == "gauge"
    assert tuple(metric.points[0].attributes) == (
        ("JobId", ""),
        ("NodeAddress", "10.0.0.1"),
        ("State", "FAILED"),
        ("Version", "2.60.0"),
    )


def test_counters_become_monotonic_cumulative_sums_named_as_exposed():
    conversion = convert("# TYPE ray_calls counter\nray_calls_total 5\n# TYPE up_time untyped\nup_time 3\n")
    kinds = {m.name: m.kind for m in conversion.metrics}
    assert kinds == {"ray_calls_total": "sum", "up_time": "gauge"}


def test_histogram_buckets_are_per_bucket_not_cumulative():
    text = """# HELP lat Latency.
# TYPE lat histogram
lat_bucket{route="/a",le="0.1"} 2
lat_bucket{route="/a",le="1"} 5
lat_bucket{route="/a",le="+Inf"} 6
lat_count{route="/a"} 6
lat_sum{route="/a"} 4.2
lat_bucket{route="/b",le="1"} 0
lat_bucket{route="/b",le="+Inf"} 1
lat_sum{route="/b"} NaN
"""
    conversion = convert(text)
    (metric,) = conversion.metrics
    first, second = metric.points
    assert tuple(first.attributes) == (("route", "/a"),)
    assert (first.explicit_bounds, first.bucket_counts, first.count, first.sum) == ([0.1, 1.0], [2, 3, 1], 6, 4.2)
    assert (second.bucket_counts, second.count, second.sum) == ([0, 1], 1, None)
    assert conversion.non_finite_values == 1 and metric.description == "Latency."


def test_summaries_keep_their_quantiles_and_drop_what_json_cannot_carry():
    text = """# TYPE rpc summary
rpc{method="a",quantile="0.5"} 0.2
rpc{method="a",quantile="0.99"} NaN
rpc_sum{method="a"} 4
rpc_count{method="a"} 10
"""
    conversion = convert(text)
    (point,) = conversion.metrics[0].points
    assert (point.quantiles, point.sum, point.count) == ([(0.5, 0.2)], 4.0, 10)
    assert conversion.non_finite_values == 1


def test_non_finite_gauge_values_follow_the_proto3_json_mapping():
    conversion = convert("a NaN\nb +Inf\nc -Inf\n")
    (body,) = otlp.JsonEncoder().encode([(NO_LABELS, conversion.metrics)])
    values = [
        m["gauge"]["dataPoints"][0]["asDouble"]
        for m in json.loads(body)["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
    ]
    assert values == ["NaN", "Infinity", "-Infinity"]
    decoded = decode_json([body])
    decoded_values = [m.gauge.data_points[0].as_double for m in decoded.resource_metrics[0].scope_metrics[0].metrics]
    assert math.isnan(decoded_values[0]) and decoded_values[1:] == [math.inf, -math.inf]
    assert conversion.non_finite_values == 3


def test_broken_histograms_are_reported_not_shipped():
    text = """# TYPE h histogram
h_bucket{le="1"} 5
h_bucket{le="2"} 3
h_count 5
# TYPE g histogram
g_sum 1
"""
    conversion = convert(text)
    assert conversion.metrics == []
    assert [e.line_no for e in conversion.errors] == [2, 6]


def test_exposition_timestamps_override_the_scrape_time():
    conversion = convert("m 1 1700000000123\nn 2\n", time_ns=99)
    assert [m.points[0].time_unix_nano for m in conversion.metrics] == [1700000000123000000, 99]


@pytest.mark.parametrize("limit", [4_000, 30_000, 300_000])
def test_requests_are_split_under_the_size_limit_without_losing_points(limit):
    largest = max(FIXTURES, key=lambda f: f.path.stat().st_size)
    conversion = convert(largest.text(), largest.scrape_time_unix_nano)
    scrapes = [(RESOURCE, conversion.metrics), (NO_LABELS, conversion.metrics)]
    bodies = otlp.JsonEncoder().encode(scrapes, limit)
    assert len(bodies) > 1 and all(len(b) <= limit for b in bodies)
    assert point_count(decode_json(bodies)) == 2 * conversion.data_points
    protobuf_bodies = otlp.encode_protobuf(scrapes, max(limit, 60_000))
    assert len(protobuf_bodies) > 1 and all(len(b) <= max(limit, 60_000) for b in protobuf_bodies)


def test_resource_attributes_setting():
    assert otlp.parse_resource_attributes(" cluster_id=prod-a, env=prod ,") == RESOURCE
    assert otlp.parse_resource_attributes("") == NO_LABELS
    with pytest.raises(ValueError, match="RAYMETRICS_RESOURCE_ATTRIBUTES"):
        otlp.parse_resource_attributes("cluster_id")
