"""The Parseable test double, exercised over real HTTP on 127.0.0.1.

Each test checks one rule of docs/parseable.md (the ``#anchor`` of its section heads each group),
so a failure here means the double drifted from Parseable, not that the pipeline is wrong.
"""

import gzip
import json
from datetime import UTC, datetime

import httpx
import pytest
import zstandard

from raymetrics_pipeline_tests.parseable_double import ParseableDouble, QueryFailed

NOW = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
WINDOW = ("2026-01-01T12:00:00Z", "2026-01-01T12:01:00Z")
OTLP_HEADERS = {"X-P-Stream": "ray", "X-P-Log-Source": "otel-metrics", "Content-Type": "application/json"}
TIME_NS = "1700000000123456789"

# A gauge point with resource, scope and data-point attributes, one of them an intValue.
WORKED_EXAMPLE = {
    "resourceMetrics": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
            "scopeMetrics": [
                {
                    "scope": {"name": "meter", "version": "1.0"},
                    "metrics": [
                        {
                            "name": "queue_depth",
                            "unit": "1",
                            "gauge": {
                                "dataPoints": [
                                    {
                                        "attributes": [
                                            {"key": "NodeAddress", "value": {"stringValue": "10.0.0.1"}},
                                            {"key": "port", "value": {"intValue": "8080"}},
                                        ],
                                        "timeUnixNano": TIME_NS,
                                        "asDouble": 3.5,
                                    }
                                ]
                            },
                        }
                    ],
                }
            ],
        }
    ]
}


@pytest.fixture
def double():
    with ParseableDouble() as running:
        running.set_now(NOW)
        yield running


@pytest.fixture
def client(double):
    with httpx.Client(base_url=double.url, auth=("admin", "admin"), timeout=10) as http:
        yield http


def metrics_document(*metrics, resource=None):
    resource_metrics = {"scopeMetrics": [{"metrics": list(metrics)}]}
    if resource is not None:
        resource_metrics["resource"] = resource
    return {"resourceMetrics": [resource_metrics]}


def gauge(name, *points):
    return {"name": name, "gauge": {"dataPoints": list(points)}}


def point(attributes=None, **fields):
    """A number data point; ``attributes`` maps key to an OTLP AnyValue object."""
    return {
        "attributes": [{"key": key, "value": value} for key, value in (attributes or {}).items()],
        "timeUnixNano": TIME_NS,
        **fields,
    }


def post(client, document=None, headers=None, drop=(), content=None):
    """POST /v1/metrics with the standard headers, minus ``drop``, plus ``headers``; ``content`` overrides the body."""
    merged = {name: value for name, value in {**OTLP_HEADERS, **(headers or {})}.items() if name not in drop}
    return client.post("/v1/metrics", content=json.dumps(document) if content is None else content, headers=merged)


def query(client, sql, start=WINDOW[0], end=WINDOW[1], **body):
    return client.post("/api/v1/query", json={"query": sql, "startTime": start, "endTime": end, **body})


def select(client, sql, **kwargs):
    response = query(client, sql, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


# --- authentication, headers, routes (#auth, #ingest, #streams) ----------------------------------------


def test_missing_credentials_are_401_and_wrong_ones_403(double):
    with httpx.Client(base_url=double.url) as anonymous:
        response = post(anonymous, WORKED_EXAMPLE)
        assert response.status_code == 401
        assert response.text.startswith("Your session has expired")
        assert post(anonymous, WORKED_EXAMPLE, headers={"Authorization": "Bearer token"}).status_code == 401
        assert query(anonymous, "SELECT 1").status_code == 401
        assert anonymous.get("/api/v1/logstream/ray/schema").status_code == 401
    with httpx.Client(base_url=double.url, auth=("admin", "wrong")) as wrong:
        response = post(wrong, WORKED_EXAMPLE)
        assert response.status_code == 403
        assert response.text.startswith("You don't have permission")
        assert query(wrong, "SELECT 1").status_code == 403


def test_credentials_are_the_ones_given():
    with ParseableDouble(username="ray", password="s3cret") as custom:
        with httpx.Client(base_url=custom.url, auth=("admin", "admin")) as default:
            assert post(default, WORKED_EXAMPLE).status_code == 403
        with httpx.Client(base_url=custom.url, auth=("ray", "s3cret")) as right:
            assert post(right, WORKED_EXAMPLE).status_code == 200


def test_only_the_three_routes_exist(client):
    assert client.get("/v1/metrics").status_code == 405
    assert client.post("/api/v1/metrics", content=json.dumps(WORKED_EXAMPLE), headers=OTLP_HEADERS).status_code == 404
    assert client.put("/api/v1/logstream/ray").status_code == 404


@pytest.mark.parametrize(
    ("headers", "drop", "message"),
    [
        ({}, ("X-P-Stream",), "Header Error: Stream name not found in header [x-p-stream]"),
        ({}, ("X-P-Log-Source",), "Header Error: Log source not found in header [x-p-log-source]"),
        (
            {"X-P-Log-Source": "otel-logs"},
            (),
            'Please use "x-p-log-source: otel-metrics" for ingesting otel metrics data',
        ),
        ({"X-P-Stream": "bad name"}, (), "Stream name cannot contain whitespace"),
        ({"X-P-Stream": "ray.metrics"}, (), "Stream name cannot contain special character: ."),
        ({"X-P-Stream": "select"}, (), "SQL keyword cannot be used as stream name"),
    ],
)
def test_header_and_stream_name_errors_are_400(client, double, headers, drop, message):
    response = post(client, WORKED_EXAMPLE, headers=headers, drop=drop)
    assert (response.status_code, response.text) == (400, message)
    with pytest.raises(KeyError):
        double.rows(headers.get("X-P-Stream", "ray"))


def test_log_source_matches_case_insensitively_and_p_format_keeps_it_raw(client, double):
    assert post(client, WORKED_EXAMPLE, headers={"X-P-Log-Source": "OTEL-Metrics"}).status_code == 200
    assert double.rows("ray")[0]["p_format"] == "OTEL-Metrics"


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        ("application/x-protobuf", "Protobuf ingestion is not supported in Parseable OSS"),
        (
            "application/json; charset=utf-8",
            "Unsupported Content-Type: application/json; charset=utf-8. "
            "Expected application/json or application/x-protobuf",
        ),
        (None, "Missing Content-Type header. Expected application/json or application/x-protobuf"),
    ],
)
def test_content_type_must_be_exactly_application_json(client, double, content_type, message):
    """#content-type; the stream is created before the Content-Type check, so it exists, empty, afterwards."""
    headers, drop = ({"Content-Type": content_type}, ()) if content_type else ({}, ("Content-Type",))
    response = post(client, WORKED_EXAMPLE, headers=headers, drop=drop)
    assert (response.status_code, response.text) == (400, f"Ingestion failed for stream ray: {message}")
    assert double.rows("ray") == []


# --- body size and encoding (#compression) ------------------------------------------------------------


def test_size_limit_applies_to_received_and_decompressed_bytes_after_auth():
    with ParseableDouble(max_payload_bytes=1000) as small, httpx.Client(base_url=small.url) as http:
        oversized = json.dumps(WORKED_EXAMPLE).encode() + b" " * 1000
        assert post(http, content=oversized).status_code == 401  # auth runs before extraction
        http.auth = ("admin", "admin")
        response = post(http, content=oversized)
        assert (response.status_code, response.text) == (413, "payload reached size limit")
        for encoding, compress in (("gzip", gzip.compress), ("zstd", zstandard.ZstdCompressor().compress)):
            bomb = compress(oversized)
            assert len(bomb) < 1000
            assert post(http, content=bomb, headers={"Content-Encoding": encoding}).status_code == 413
            assert small.requests[-1].body_len == len(bomb)
        assert post(http, content=json.dumps(WORKED_EXAMPLE)).status_code == 200


@pytest.mark.parametrize(("encoding", "compress"), [("gzip", gzip.compress), ("zstd", zstandard.compress)])
def test_compressed_bodies_are_decoded(client, double, encoding, compress):
    body = compress(json.dumps(WORKED_EXAMPLE).encode())
    assert post(client, content=body, headers={"Content-Encoding": encoding}).status_code == 200
    assert [row["metric_name"] for row in double.rows("ray")] == ["queue_depth"]


def test_unknown_content_encoding_is_passed_through_and_fails_as_json(client):
    body = gzip.compress(json.dumps(WORKED_EXAMPLE).encode())
    response = post(client, content=body, headers={"Content-Encoding": "snappy"})
    assert response.status_code == 400
    assert response.text.startswith("Could not deserialize into JSON object, ")


@pytest.mark.parametrize("encoding", ["deflate", "br"])
def test_encodings_the_pipeline_never_sends_are_refused_loudly(client, encoding):
    response = post(client, WORKED_EXAMPLE, headers={"Content-Encoding": encoding})
    assert (response.status_code, response.text) == (
        501,
        f"ParseableDouble does not emulate Content-Encoding {encoding}",
    )


# --- decoding with opentelemetry-proto 0.32 serde (#decoding) -----------------------------------------


@pytest.mark.parametrize(
    "body", [b"{not json", b"{}", b"[]", b'{"resourceMetrics": [{"resource": 5}]}', b'{"resourceMetrics": NaN}']
)
def test_bad_shapes_outside_metric_data_are_400(client, body):
    response = post(client, content=body)
    assert response.status_code == 400
    assert response.text.startswith("Could not deserialize into JSON object, ")


def test_empty_resource_metrics_is_200_without_rows(client, double):
    assert post(client, {"resourceMetrics": []}).status_code == 200
    assert double.rows("ray") == []


def test_string_as_int_or_string_as_double_keeps_the_row_without_a_value(client):
    document = metrics_document(
        gauge(
            "up",
            point({"case": {"stringValue": "int string"}}, asInt="42"),
            point({"case": {"stringValue": "int number"}}, asInt=42),
            point({"case": {"stringValue": "double string"}}, asDouble="NaN"),
        )
    )
    assert post(client, document).status_code == 200
    rows = select(client, 'SELECT "case", data_point_value FROM ray ORDER BY "case"')
    assert rows == [{"case": "double string"}, {"case": "int number", "data_point_value": 42.0}, {"case": "int string"}]


@pytest.mark.parametrize(
    "broken_metric",
    [
        {
            "name": "enum_temporality",
            "sum": {
                "aggregationTemporality": "AGGREGATION_TEMPORALITY_CUMULATIVE",
                "dataPoints": [point(asDouble=1.0)],
            },
        },
        {"name": "string_flags", "gauge": {"dataPoints": [point(asDouble=1.0, flags="1")]}},
        {
            "name": "quantile_without_value",
            "summary": {
                "dataPoints": [{"timeUnixNano": TIME_NS, "count": 1, "sum": 2.0, "quantileValues": [{"quantile": 0.5}]}]
            },
        },
        {
            "name": "string_quantile_value",
            "summary": {
                "dataPoints": [
                    {
                        "timeUnixNano": TIME_NS,
                        "count": 1,
                        "sum": 2.0,
                        "quantileValues": [{"quantile": 0.5, "value": "NaN"}],
                    }
                ]
            },
        },
        {
            "name": "string_histogram_sum",
            "histogram": {
                "aggregationTemporality": 2,
                "dataPoints": [{"timeUnixNano": TIME_NS, "count": 1, "sum": "NaN"}],
            },
        },
        {"name": "empty_any_value", "gauge": {"dataPoints": [point({"broken": {}}, asDouble=1.0)]}},
    ],
    ids=lambda metric: metric["name"],
)
def test_errors_inside_metric_data_silently_drop_that_metric(client, broken_metric):
    document = metrics_document(broken_metric, gauge("survivor", point(asDouble=1.0)))
    assert post(client, document).status_code == 200
    assert select(client, "SELECT metric_name FROM ray") == [{"metric_name": "survivor"}]


def test_invalid_resource_attribute_is_a_400_not_a_drop(client):
    document = metrics_document(gauge("up", point(asDouble=1.0)), resource={"attributes": [{"key": "k", "value": {}}]})
    assert post(client, document).status_code == 400


def test_times_counts_and_bucket_counts_accept_strings_or_numbers(client, double):
    histogram = {
        "name": "latency",
        "histogram": {
            "aggregationTemporality": 1,
            "dataPoints": [
                {
                    "timeUnixNano": 1700000000123456789,
                    "startTimeUnixNano": "1700000000000000000",
                    "count": "3",
                    "bucketCounts": ["1", 2],
                    "explicitBounds": [0.5],
                }
            ],
        },
    }
    assert post(client, metrics_document(histogram)).status_code == 200
    (row,) = double.rows("ray")
    assert (row["data_point_count"], row["data_point_bucket_counts"]) == (3.0, [1, 2])
    assert row["start_time_unix_nano"] == datetime(2023, 11, 14, 22, 13, 20)


@pytest.mark.parametrize(
    ("metric", "what"),
    [
        (
            {"name": "exp", "exponentialHistogram": {"aggregationTemporality": 2, "dataPoints": []}},
            "exponential histograms",
        ),
        (
            gauge("ex", point(asDouble=1.0, exemplars=[{"timeUnixNano": TIME_NS, "asDouble": 1.0}])),
            "exemplars",
        ),
        (gauge("arr", point({"a": {"arrayValue": {"values": []}}}, asDouble=1.0)), "arrayValue attributes"),
        (gauge("kv", point({"k": {"kvlistValue": {"values": []}}}, asDouble=1.0)), "kvlistValue attributes"),
        (gauge("b", point({"b": {"bytesValue": "AA=="}}, asDouble=1.0)), "bytesValue attributes"),
    ],
    ids=lambda value: value if isinstance(value, str) else value["name"],
)
def test_forms_the_pipeline_never_sends_are_refused_loudly(client, double, metric, what):
    response = post(client, metrics_document(metric))
    assert (response.status_code, response.text) == (501, f"ParseableDouble does not emulate {what}")
    assert double.rows("ray") == []


def test_empty_exemplar_lists_are_fine(client, double):
    assert post(client, metrics_document(gauge("up", point(asDouble=1.0, exemplars=[])))).status_code == 200
    assert [row["metric_name"] for row in double.rows("ray")] == ["up"]


# --- rows, columns and types (#rows, #columns, #system-columns, #types) ----------------------------------


def test_worked_example_row_and_types(client, double):
    """Every column of one gauge row, the naive rendering of timestamps (no ``Z``) and Utf8 for intValue."""
    assert post(client, WORKED_EXAMPLE, headers={"User-Agent": "pipeline/1"}).status_code == 200
    (record,) = select(client, "SELECT * FROM ray")
    series_hash = record.pop("__series_hash_u64")
    assert isinstance(series_hash, int) and 0 <= series_hash < 2**64
    assert record == {
        "NodeAddress": "10.0.0.1",
        "port": "8080",
        "service.name": "svc",
        "metric_name": "queue_depth",
        "metric_description": "",
        "metric_unit": "1",
        "metric_type": "gauge",
        "start_time_unix_nano": "1970-01-01T00:00:00",
        "time_unix_nano": "2023-11-14T22:13:20.123",
        "data_point_value": 3.5,
        "data_point_flags": 0.0,
        "data_point_flags_description": "DO_NOT_USE",
        "resource_dropped_attributes_count": 0.0,
        "resource_schema_url": "",
        "scope_name": "meter",
        "scope_version": "1.0",
        "scope_dropped_attributes_count": 0.0,
        "scope_schema_url": "",
        "p_timestamp": "2026-01-01T12:00:30",
        "p_user_agent": "pipeline/1",
        "p_src_ip": "127.0.0.1",
        "p_format": "otel-metrics",
    }
    (row,) = double.rows("ray")
    assert row["time_unix_nano"] == datetime(2023, 11, 14, 22, 13, 20, 123000)
    assert row["p_timestamp"] == datetime(2026, 1, 1, 12, 0, 30)


def test_schema_endpoint_lists_arrow_fields_sorted_by_name(client):
    post(client, WORKED_EXAMPLE)
    schema = client.get("/api/v1/logstream/ray/schema").json()
    names = [field["name"] for field in schema["fields"]]
    assert names == sorted(names) and schema["metadata"] == {}
    types = {field["name"]: field["data_type"] for field in schema["fields"]}
    assert types["port"] == "Utf8"
    assert types["data_point_value"] == "Float64"
    assert types["__series_hash_u64"] == "UInt64"
    assert types["time_unix_nano"] == types["p_timestamp"] == {"Timestamp": ["Millisecond", None]}
    assert schema["fields"][0] == {
        "name": "NodeAddress",
        "data_type": "Utf8",
        "nullable": True,
        "dict_id": 0,
        "dict_is_ordered": False,
        "metadata": {},
    }
    assert client.get("/api/v1/logstream/missing/schema").status_code == 404


def test_sum_histogram_and_summary_columns(client, double):
    sum_metric = {
        "name": "requests",
        "sum": {"aggregationTemporality": 2, "isMonotonic": True, "dataPoints": [point(asInt=7)]},
    }
    histogram = {
        "name": "latency",
        "histogram": {
            "aggregationTemporality": 1,
            "dataPoints": [
                {
                    "timeUnixNano": TIME_NS,
                    "count": 6,
                    "sum": 4.5,
                    "bucketCounts": [1, 2, 3],
                    "explicitBounds": [0.5, 1.0],
                    "min": 0.1,
                    "max": 2.0,
                }
            ],
        },
    }
    summary = {
        "name": "sizes",
        "summary": {
            "dataPoints": [
                {
                    "timeUnixNano": TIME_NS,
                    "count": 2,
                    "sum": 3.0,
                    "quantileValues": [{"quantile": 0.5, "value": 1.0}, {"quantile": 0.99, "value": 2.0}],
                }
            ]
        },
    }
    assert post(client, metrics_document(sum_metric, histogram, summary)).status_code == 200
    rows = {row["metric_name"]: row for row in double.rows("ray")}
    assert {
        key: rows["requests"][key]
        for key in (
            "metric_type",
            "data_point_value",
            "aggregation_temporality",
            "aggregation_temporality_description",
            "is_monotonic",
        )
    } == {
        "metric_type": "sum",
        "data_point_value": 7.0,
        "aggregation_temporality": 2.0,
        "aggregation_temporality_description": "CUMULATIVE",
        "is_monotonic": True,
    }
    assert {
        key: rows["latency"][key]
        for key in (
            "data_point_count",
            "data_point_sum",
            "data_point_bucket_counts",
            "data_point_explicit_bounds",
            "data_point_min",
            "data_point_max",
            "aggregation_temporality_description",
        )
    } == {
        "data_point_count": 6.0,
        "data_point_sum": 4.5,
        "data_point_bucket_counts": [1, 2, 3],
        "data_point_explicit_bounds": [0.5, 1.0],
        "data_point_min": 0.1,
        "data_point_max": 2.0,
        "aggregation_temporality_description": "DELTA",
    }
    assert "data_point_flags" not in rows["sizes"] and "data_point_quantile_values" not in rows["sizes"]
    assert rows["sizes"]["data_point_quantile_values_quantile"] == [0.5, 0.99]
    assert rows["sizes"]["data_point_quantile_values_value"] == [1.0, 2.0]
    assert select(client, "SELECT data_point_quantile_values_value AS v FROM ray WHERE metric_name = 'sizes'") == [
        {"v": [1.0, 2.0]}
    ]


def test_metric_without_points_still_yields_one_row(client, double):
    empty_sum = {"name": "idle", "description": "nothing yet", "sum": {"aggregationTemporality": 2}}
    assert post(client, metrics_document(empty_sum)).status_code == 200
    (row,) = double.rows("ray")
    assert (row["metric_name"], row["metric_description"], row["metric_type"], row["is_monotonic"]) == (
        "idle",
        "nothing yet",
        "sum",
        False,
    )
    assert "time_unix_nano" not in row


def test_attribute_values_and_collisions(client, double):
    """#rows: intValue as text; a resource attribute overwrites a data-point one of the same key."""
    attributes = {
        "count": {"intValue": 3},
        "ratio": {"doubleValue": 2},
        "ok": {"boolValue": True},
        "service.name": {"stringValue": "from data point"},
    }
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "from resource"}}]}
    document = metrics_document(gauge("up", point(attributes, asDouble=1.0)), resource=resource)
    assert post(client, document).status_code == 200
    (row,) = double.rows("ray")
    assert {key: row[key] for key in ("count", "ratio", "ok", "service.name")} == {
        "count": "3",
        "ratio": 2.0,
        "ok": True,
        "service.name": "from resource",
    }


def test_a_label_named_p_timestamp_is_refused(client, double):
    document = metrics_document(gauge("up", point({"p_timestamp": {"stringValue": "x"}}, asDouble=1.0)))
    response = post(client, document)
    assert (response.status_code, response.text) == (400, "field p_timestamp is a reserved field")
    assert double.rows("ray") == []


def test_time_like_strings_become_timestamps_and_type_conflicts_get_sibling_columns(client, double):
    """#types: RFC3339 under a time-like name is Timestamp(ms); a later other-typed value goes to ``<name>_<type>``."""
    first = {"deploy_time": {"stringValue": "2026-01-01T10:00:00.5+02:00"}, "status": {"stringValue": "ok"}}
    later = {"deploy_time": {"stringValue": "yesterday"}, "status": {"doubleValue": 1.5}}
    post(client, metrics_document(gauge("up", point(first, asDouble=1.0))))
    post(client, metrics_document(gauge("up", point(later, asDouble=1.0))))
    first_row, later_row = double.rows("ray")
    assert first_row["deploy_time"] == datetime(2026, 1, 1, 8, 0, 0, 500000)
    assert (later_row["deploy_time_utf8"], later_row["status_float64"]) == ("yesterday", 1.5)
    schema = client.get("/api/v1/logstream/ray/schema").json()
    types = {field["name"]: field["data_type"] for field in schema["fields"]}
    assert (types["deploy_time"], types["status"], types["status_float64"]) == (
        {"Timestamp": ["Millisecond", None]},
        "Utf8",
        "Float64",
    )
    assert select(client, "SELECT deploy_time FROM ray WHERE deploy_time IS NOT NULL") == [
        {"deploy_time": "2026-01-01T08:00:00.500"}
    ]


def test_series_hash_follows_labels_not_samples(client, double):
    document = metrics_document(
        gauge(
            "up",
            point({"node": {"stringValue": "a"}}, asDouble=1.0),
            point({"node": {"stringValue": "a"}}, asDouble=2.0, timeUnixNano="1700000015000000000"),
            point({"node": {"stringValue": "b"}}, asDouble=1.0),
        )
    )
    post(client, document)
    first, second, other = (row["__series_hash_u64"] for row in double.rows("ray"))
    assert first == second != other


def test_case_distinct_columns_stay_apart(client):
    labels = {
        "Version": {"stringValue": "2.60.0"},
        "version": {"stringValue": "1"},
        "Method": {"stringValue": "GET"},
        "method": {"stringValue": "get"},
    }
    assert post(client, metrics_document(gauge("up", point(labels, asDouble=1.0)))).status_code == 200
    assert select(client, 'SELECT "Version", version, "Method", "method" FROM ray') == [
        {"Version": "2.60.0", "version": "1", "Method": "GET", "method": "get"}
    ]


# --- query API (#query-api, #bare-count, #query-results, #query-errors) ------------------------------


def test_window_is_minute_truncated_and_end_exclusive(client, double):
    post(client, metrics_document(gauge("early", point(asDouble=1.0))))
    double.set_now(datetime(2026, 1, 1, 12, 1, tzinfo=UTC))
    post(client, metrics_document(gauge("on_the_minute", point(asDouble=1.0))))

    def names(start, end):
        return [
            row["metric_name"]
            for row in select(client, "SELECT metric_name FROM ray ORDER BY p_timestamp", start=start, end=end)
        ]

    assert names("2026-01-01T12:00:00Z", "2026-01-01T12:01:00Z") == ["early"]
    assert names("2026-01-01T12:00:59Z", "2026-01-01T12:01:59+00:00") == ["early"]
    assert names("2026-01-01T12:00:00Z", "2026-01-01T12:00:59Z") == []
    assert names("2026-01-01T12:00:00Z", "2026-01-01T12:02:00Z") == ["early", "on_the_minute"]


def test_the_window_is_on_ingest_time_from_the_settable_clock(client, double):
    """``time_unix_nano`` is in 2023; the rows are found by ``p_timestamp``, which set_now/advance control."""
    post(client, metrics_document(gauge("first", point(asDouble=1.0))))
    double.advance(90)
    assert double.now() == datetime(2026, 1, 1, 12, 2, tzinfo=UTC)
    post(client, metrics_document(gauge("second", point(asDouble=1.0))))
    rows = select(client, "SELECT metric_name, p_timestamp FROM ray", end="2026-01-01T12:03:00Z")
    assert sorted(rows, key=lambda row: row["metric_name"]) == [
        {"metric_name": "first", "p_timestamp": "2026-01-01T12:00:30"},
        {"metric_name": "second", "p_timestamp": "2026-01-01T12:02:00"},
    ]
    with pytest.raises(ValueError, match="timezone"):
        double.set_now(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-01-01T12:05:00Z", WINDOW[1], "Start time cannot be greater than the end time"),
        ("2026-01-01T12:00:00", WINDOW[1], "Error parsing time"),
    ],
)
def test_bad_time_ranges_are_400(client, start, end, message):
    response = query(client, "SELECT 1", start=start, end=end)
    assert response.status_code == 400
    assert response.text.startswith("Error while parsing provided time range: ") and message in response.text


def test_end_time_now_is_refused_loudly(client):
    response = query(client, "SELECT 1", start="10m", end="now")
    assert (response.status_code, response.text) == (
        501,
        'ParseableDouble does not emulate endTime "now" (send RFC3339 times)',
    )


def test_start_and_end_time_are_required(client):
    response = client.post("/api/v1/query", json={"query": "SELECT 1", "endTime": WINDOW[1]})
    assert (response.status_code, response.text) == (400, "Json deserialize error: missing field `startTime`")


def test_nulls_are_omitted_unless_send_null(client):
    post(client, metrics_document(gauge("up", point(asInt="5"))))
    sql = "SELECT metric_name, data_point_value FROM ray WHERE metric_name = 'up'"
    assert "No field named data_point_value" in query(client, sql).text  # no value ever seen, no column
    post(client, metrics_document(gauge("valued", point(asDouble=1.0))))
    assert select(client, sql) == [{"metric_name": "up"}]
    assert select(client, sql, sendNull=True) == [{"metric_name": "up", "data_point_value": None}]


def test_bare_count_skips_unuploaded_rows_but_a_where_clause_counts_them(client):
    post(client, WORKED_EXAMPLE)
    assert select(client, "SELECT COUNT(*) FROM ray") == [{"count(*)": 0}]
    assert select(client, "SELECT COUNT(*) AS n FROM ray") == [{"n": 0}]
    assert select(client, "SELECT COUNT(*) FROM ray WHERE p_timestamp IS NOT NULL") == [{"count(*)": 1}]
    assert select(client, "SELECT COUNT(*) AS n, metric_name FROM ray GROUP BY metric_name") == [
        {"n": 1, "metric_name": "queue_depth"}
    ]


def test_sql_errors_are_400_text_and_stream_names_keep_their_case(client):
    post(client, WORKED_EXAMPLE, headers={"X-P-Stream": "RayMetrics"})
    assert select(client, 'SELECT metric_name FROM "RayMetrics"') == [{"metric_name": "queue_depth"}]
    for sql in ("SELECT metric_name FROM RayMetrics", 'SELECT nope FROM "RayMetrics"', "SELEC 1"):
        response = query(client, sql)
        assert response.status_code == 400 and response.text.startswith("Datafusion Error: "), sql


def test_query_method_takes_the_same_path_as_http(client, double):
    post(client, WORKED_EXAMPLE)
    sql = "SELECT metric_name, p_timestamp FROM ray"
    assert double.query(sql, *WINDOW) == select(client, sql)
    start = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert double.query(sql, start, "2026-01-01T12:01:00Z") == select(client, sql)
    with pytest.raises(QueryFailed) as failure:
        double.query("SELECT * FROM missing", *WINDOW)
    assert failure.value.status == 400


# --- test controls ------------------------------------------------------------------------------------


def test_fail_next_answers_before_auth_then_recovers(double):
    double.fail_next(503, count=2, headers={"Retry-After": "3"}, body="busy")
    with httpx.Client(base_url=double.url, auth=("admin", "admin")) as http:
        failures = [post(http, WORKED_EXAMPLE) for _ in range(2)]
        assert post(http, WORKED_EXAMPLE).status_code == 200
    assert [(r.status_code, r.headers["retry-after"], r.text) for r in failures] == [(503, "3", "busy")] * 2
    assert [(r.method, r.path, r.status) for r in double.requests] == [("POST", "/v1/metrics", 503)] * 2 + [
        ("POST", "/v1/metrics", 200)
    ]
    assert double.requests[0].headers["x-p-stream"] == "ray"
    assert double.requests[0].body_len == len(json.dumps(WORKED_EXAMPLE))


def test_table_is_typed_and_alphabetical_and_a_fixed_port_can_be_reused(double):
    with httpx.Client(base_url=double.url, auth=("admin", "admin")) as http:
        post(http, WORKED_EXAMPLE)
    table = double.table("ray")
    assert table.schema.names == sorted(table.schema.names)
    assert str(table.schema.field("p_timestamp").type) == "timestamp[ms]"
    for read in (double.rows, double.table):
        with pytest.raises(KeyError):
            read("missing")
    port = int(double.url.rsplit(":", 1)[1])
    double.stop()
    with ParseableDouble(port=port) as again:
        assert again.url == f"http://127.0.0.1:{port}"
