import time

import pytest

from raymetrics_pipeline import otlp
from raymetrics_pipeline.parseable import CONTENT_TYPES, ParseableClient, split_body, validate_stream_name
from raymetrics_pipeline.prometheus import NO_LABELS, parse
from raymetrics_pipeline_tests.otlp_messages import decode_json, decode_protobuf, point_count
from raymetrics_pipeline_tests.parseable_double import ParseableDouble
from raymetrics_pipeline_tests.scrape_fixtures import scrape_fixtures

SECRET = "s3cr3t-Pa55"
FIXTURE = max(scrape_fixtures(include_shared=False), key=lambda f: f.path.stat().st_size)


@pytest.fixture
def parseable():
    with ParseableDouble(username="ray", password=SECRET) as double:
        yield double


def fixture_body() -> tuple[bytes, int]:
    conversion = otlp.to_metrics(parse(FIXTURE.text()), FIXTURE.scrape_time_unix_nano)
    (body,) = otlp.JsonEncoder().encode([(NO_LABELS, conversion.metrics)])
    return body, conversion.data_points


def client(parseable, password=SECRET, **options) -> ParseableClient:
    return ParseableClient(parseable.url, "ray", password, **options)


def test_a_full_scrape_arrives_with_every_point(parseable):
    body, points = fixture_body()
    with client(parseable) as c:
        outcome = c.post(body, time.monotonic() + 10)
    assert outcome.sent and outcome.status == 200 and outcome.attempts == 1
    assert outcome.bytes_sent < outcome.bytes_raw / 5, "gzip on by default"
    rows = parseable.rows("raymetrics")
    assert len(rows) == points
    assert all("data_point_value" in row or row["metric_type"] in ("histogram", "summary") for row in rows)
    request = parseable.requests[-1]
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-p-log-source"] == "otel-metrics" and request.headers["content-encoding"] == "gzip"


def test_retries_what_can_succeed_later_and_honours_retry_after(parseable):
    parseable.fail_next(503, count=1, headers={"Retry-After": "1"})
    parseable.fail_next(429, count=1)
    body, points = fixture_body()
    started = time.monotonic()
    with client(parseable) as c:
        outcome = c.post(body, time.monotonic() + 10)
    assert outcome.sent and outcome.attempts == 3 and outcome.statuses == [503, 429, 200]
    assert time.monotonic() - started >= 1.0
    assert len(parseable.rows("raymetrics")) == points


def test_gives_up_at_the_deadline_instead_of_overrunning_the_tick(parseable):
    parseable.fail_next(503, count=100, headers={"Retry-After": "30"})
    body, _ = fixture_body()
    started = time.monotonic()
    with client(parseable) as c:
        outcome = c.post(body, time.monotonic() + 3)
    assert not outcome.sent and not outcome.rejected
    assert time.monotonic() - started < 3
    assert "deadline" in outcome.error


def test_unreachable_server_is_retried_then_left_for_later():
    with ParseableClient("http://127.0.0.1:9", "ray", SECRET) as c:
        outcome = c.post(b'{"resourceMetrics":[]}', time.monotonic() + 1.5)
    assert not outcome.sent and not outcome.rejected and outcome.attempts >= 2
    assert "cannot reach Parseable" in outcome.error


@pytest.mark.parametrize(
    ("setup", "status", "advice"),
    [
        ("wrong_password", 403, "PARSEABLE_PASSWORD"),
        ("protobuf", 400, "PARSEABLE_OTLP_ENCODING=json"),
        ("no_credentials", 401, "PARSEABLE_USERNAME and PARSEABLE_PASSWORD"),
    ],
)
def test_refusals_say_what_to_fix_and_never_show_the_secret(parseable, setup, status, advice):
    if setup == "no_credentials":
        parseable.fail_next(401, body="Your session has expired or is no longer valid.")
    options = {"encoding": "protobuf"} if setup == "protobuf" else {}
    password = "wrong-" + SECRET if setup == "wrong_password" else SECRET
    conversion = otlp.to_metrics(parse("m 1\n"), 1)
    bodies = (
        otlp.encode_protobuf([(NO_LABELS, conversion.metrics)])
        if setup == "protobuf"
        else otlp.JsonEncoder().encode([(NO_LABELS, conversion.metrics)])
    )
    with client(parseable, password=password, **options) as c:
        outcome = c.post(bodies[0], time.monotonic() + 5)
    assert not outcome.sent and outcome.status == status and outcome.attempts == 1
    assert advice in outcome.error
    assert outcome.rejected == (status == 400)
    assert SECRET not in outcome.error and SECRET not in repr(outcome)


def test_413_splits_and_resends_until_everything_fits():
    body, points = fixture_body()
    with ParseableDouble(username="ray", password=SECRET, max_payload_bytes=len(body) // 3) as small:
        with client(small) as c:
            outcome = c.post(body, time.monotonic() + 10)
        assert outcome.sent and 413 in outcome.statuses and outcome.requests > 3
        assert len(small.rows("raymetrics")) == points


def test_settings_are_checked_before_anything_is_sent():
    with pytest.raises(ValueError, match="PARSEABLE_STREAM"):
        validate_stream_name("ray metrics")
    with pytest.raises(ValueError, match="PARSEABLE_STREAM"):
        validate_stream_name("select")
    with pytest.raises(ValueError, match="PARSEABLE_URL"):
        ParseableClient("localhost:8000", "u", "p")
    with pytest.raises(ValueError, match="must not carry credentials") as error:
        ParseableClient(f"http://admin:{SECRET}@localhost:8000", "u", "p")
    assert SECRET not in str(error.value)
    with pytest.raises(ValueError, match="PARSEABLE_OTLP_ENCODING"):
        ParseableClient("http://localhost:8000", "u", "p", encoding="yaml")


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_split_body_halves_a_request_without_losing_points(encoding):
    conversion = otlp.to_metrics(parse(FIXTURE.text()), FIXTURE.scrape_time_unix_nano)
    scrapes = [(NO_LABELS, conversion.metrics)]
    if encoding == "json":
        (body,) = otlp.JsonEncoder().encode(scrapes)
    else:
        (body,) = otlp.encode_protobuf(scrapes)
    content_type = CONTENT_TYPES[encoding]
    halves = split_body(body, content_type)
    assert len(halves) == 2
    decoded = decode_json(halves) if encoding == "json" else decode_protobuf(halves)
    assert point_count(decoded) == conversion.data_points


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_other_compressions_arrive_whole(parseable, compression):
    body, points = fixture_body()
    with client(parseable, compression=compression) as c:
        outcome = c.post(body, time.monotonic() + 10)
    assert outcome.sent and len(parseable.rows("raymetrics")) == points
    assert parseable.requests[-1].headers.get("content-encoding") == (None if compression == "none" else "zstd")
    if compression == "zstd":
        assert outcome.bytes_sent < outcome.bytes_raw / 10
