"""Prometheus text → the OTLP data model: names, labels, kinds, buckets and quantiles as users' SQL needs them."""

import pytest

from raymetrics_pipeline.ingest import otlp
from raymetrics_pipeline.ingest.prometheus import NO_LABELS, LabelSet, parse

RESOURCE = LabelSet(("cluster_id", "env"), ("prod-a", "prod"))


def convert(text: str, time_ns: int = 1_700_000_000_000_000_000) -> otlp.Conversion:
    return otlp.to_metrics(parse(text), time_ns)


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


def test_bounds_otlp_cannot_carry_cost_their_sample_only():
    text = """# TYPE lat histogram
lat_bucket{le="-Inf"} 0
lat_bucket{le="1"} 2
lat_bucket{le="+Inf"} 3
lat_count 3
lat_sum 1.5
# TYPE rpc summary
rpc{quantile="+Inf"} 9
rpc{quantile="-0.5"} 1
rpc{quantile="0.5"} 0.2
rpc_sum 4
rpc_count 10
"""
    conversion = convert(text)
    histogram, summary = (metric.points[0] for metric in conversion.metrics)
    assert (histogram.explicit_bounds, histogram.bucket_counts, histogram.count) == ([1.0], [2, 1], 3)
    assert summary.quantiles == [(0.5, 0.2)]
    assert [(error.line_no, "cannot be sent in OTLP" in error.message) for error in conversion.errors] == [
        (2, True),
        (8, True),
        (9, True),
    ]


def test_a_timestamp_no_store_can_hold_costs_its_line_only():
    text = "a 1 99999999999999999999\na 2 -5\nb 3 1700000000000\n"
    text += '# TYPE h histogram\nh_bucket{le="+Inf"} 1 -1\nh_count 1\n'
    exposition = parse(text)
    conversion = otlp.to_metrics(exposition, 99)
    assert [(metric.name, metric.points[0].time_unix_nano) for metric in conversion.metrics] == [
        ("b", 1_700_000_000_000 * 1_000_000),
        ("h", 99),  # its _count is still a point: one bucket, +Inf's
    ]
    assert conversion.metrics[1].points[0].bucket_counts == [1]
    assert [error.line_no for error in exposition.errors] == [1, 2, 5] and conversion.errors == []
    assert all("timestamp out of range" in error.message for error in exposition.errors)


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


def test_resource_attributes_setting():
    assert otlp.parse_resource_attributes(" cluster_id=prod-a, env=prod ,") == RESOURCE
    assert otlp.parse_resource_attributes("") == NO_LABELS
    with pytest.raises(ValueError, match="RAYMETRICS_RESOURCE_ATTRIBUTES"):
        otlp.parse_resource_attributes("cluster_id")
