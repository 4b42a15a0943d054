"""The send loop against the Parseable double over real HTTP: retries, deadlines, splits, refusals, secrets."""

import time

import pytest

from raymetrics_pipeline.ingest import otlp
from raymetrics_pipeline.ingest.otlp import ResourceMetrics
from raymetrics_pipeline.ingest.prometheus import NO_LABELS, parse
from raymetrics_pipeline.parseable.client import IngestClient
from raymetrics_pipeline.parseable.connection import ParseableSettings
from raymetrics_pipeline.parseable.encode import DEFAULT_MAX_REQUEST_BYTES, JSON, PROTOBUF, encode
from raymetrics_pipeline.parseable.status import Verdict
from raymetrics_pipeline_tests.parseable_double import ParseableDouble
from raymetrics_pipeline_tests.scrape_fixtures import scrape_fixtures

SECRET = "s3cr3t-Pa55"
FIXTURE = max(scrape_fixtures(include_shared=False), key=lambda f: f.path.stat().st_size)


@pytest.fixture
def secured():
    with ParseableDouble(username="ray", password=SECRET) as double:
        yield double


def body_of(text: str, content_type: str = JSON) -> tuple[bytes, int]:
    conversion = otlp.to_metrics(parse(text), FIXTURE.scrape_time_unix_nano)
    (body,) = encode([ResourceMetrics(NO_LABELS, conversion.metrics)], content_type, DEFAULT_MAX_REQUEST_BYTES)
    return body, conversion.data_points


def post(double, body: bytes, seconds: float = 10, password=SECRET, **options):
    with ParseableSettings(double.url, "ray", password).connect(5.0) as connection:
        return IngestClient(connection, **options).post(body, time.monotonic() + seconds)


def test_a_full_scrape_arrives_with_every_point(secured):
    body, points = body_of(FIXTURE.text())
    outcome = post(secured, body)
    assert outcome.verdict is Verdict.SENT and outcome.statuses == [200] and outcome.attempts == 1
    assert outcome.bytes_sent < outcome.bytes_raw / 5, "gzip on by default"
    rows = secured.rows("raymetrics")
    assert len(rows) == points
    assert all("data_point_value" in row or row["metric_type"] in ("histogram", "summary") for row in rows)
    request = secured.requests[-1]
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-p-log-source"] == "otel-metrics" and request.headers["content-encoding"] == "gzip"


def test_retries_what_can_succeed_later_and_honours_retry_after(secured):
    secured.fail_next(503, count=1, headers={"Retry-After": "1"})
    secured.fail_next(429, count=1)
    body, points = body_of(FIXTURE.text())
    started = time.monotonic()
    outcome = post(secured, body)
    assert outcome.verdict is Verdict.SENT and outcome.attempts == 3 and outcome.statuses == [503, 429, 200]
    assert time.monotonic() - started >= 1.0
    assert len(secured.rows("raymetrics")) == points


def test_gives_up_at_the_deadline_instead_of_overrunning_the_tick(secured):
    secured.fail_next(503, count=100, headers={"Retry-After": "30"})
    body, _ = body_of(FIXTURE.text())
    started = time.monotonic()
    outcome = post(secured, body, seconds=3)
    assert outcome.verdict is Verdict.KEEP
    assert time.monotonic() - started < 3
    assert "deadline" in outcome.error


def test_unreachable_server_is_retried_then_left_for_later():
    with ParseableSettings("http://127.0.0.1:9", "ray", SECRET).connect(5.0) as connection:
        outcome = IngestClient(connection).post(b'{"resourceMetrics":[]}', time.monotonic() + 1.5)
    assert outcome.verdict is Verdict.KEEP and outcome.attempts >= 2
    assert "cannot reach Parseable" in outcome.error


@pytest.mark.parametrize(
    ("setup", "status", "verdict", "advice"),
    [
        ("wrong_password", 403, Verdict.KEEP, "PARSEABLE_PASSWORD"),
        ("protobuf", 400, Verdict.REJECT, "PARSEABLE_OTLP_ENCODING=json"),
        ("no_credentials", 401, Verdict.KEEP, "PARSEABLE_USERNAME and PARSEABLE_PASSWORD"),
    ],
)
def test_refusals_say_what_to_fix_and_never_show_the_secret(secured, setup, status, verdict, advice):
    if setup == "no_credentials":
        secured.fail_next(401, body="Your session has expired or is no longer valid.")
    encoding = "protobuf" if setup == "protobuf" else "json"
    body, _ = body_of("m 1\n", PROTOBUF if setup == "protobuf" else JSON)
    password = "wrong-" + SECRET if setup == "wrong_password" else SECRET
    outcome = post(secured, body, seconds=5, password=password, encoding=encoding)
    assert outcome.verdict is verdict and outcome.statuses == [status] and outcome.attempts == 1
    assert advice in outcome.error
    assert SECRET not in outcome.error and SECRET not in repr(outcome)


def test_413_splits_and_resends_until_everything_fits():
    body, points = body_of(FIXTURE.text())
    with ParseableDouble(username="ray", password=SECRET, max_payload_bytes=len(body) // 3) as small:
        outcome = post(small, body)
        assert outcome.verdict is Verdict.SENT and 413 in outcome.statuses and outcome.requests > 3
        assert len(small.rows("raymetrics")) == points


def test_settings_are_checked_before_anything_is_sent():
    with pytest.raises(ValueError, match="PARSEABLE_STREAM"):
        ParseableSettings("http://localhost:8000", "u", "p", "ray metrics")
    with pytest.raises(ValueError, match="PARSEABLE_STREAM"):
        ParseableSettings("http://localhost:8000", "u", "p", "select")
    with pytest.raises(ValueError, match="PARSEABLE_URL"):
        ParseableSettings("localhost:8000", "u", "p")
    with pytest.raises(ValueError, match="PARSEABLE_PASSWORD"):
        ParseableSettings("http://localhost:8000", "u", None)
    with pytest.raises(ValueError, match="PARSEABLE_STREAM"):
        ParseableSettings("http://localhost:8000", "u", "p", "métriques")  # would fail later, in an HTTP header
    with pytest.raises(ValueError, match="PARSEABLE_URL.*contains a space"):
        ParseableSettings("http://127.0.0.1: 80", "u", "p")  # httpx would silently drop the port
    for url in (
        f"http://admin:{SECRET}@localhost:8000",
        f"htp://admin:{SECRET}@localhost:8000",
        f"http://admin:{SECRET}@local host:8000",
    ):
        with pytest.raises(ValueError, match="PARSEABLE_URL") as error:
            ParseableSettings(url, "u", "p")
        assert SECRET not in str(error.value)
    with pytest.raises(ValueError, match="PARSEABLE_OTLP_ENCODING"):
        IngestClient.check("yaml", "gzip")
    with pytest.raises(ValueError, match="PARSEABLE_COMPRESSION"):
        IngestClient.check("json", "brotli")


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_other_compressions_arrive_whole(secured, compression):
    body, points = body_of(FIXTURE.text())
    outcome = post(secured, body, compression=compression)
    assert outcome.verdict is Verdict.SENT and len(secured.rows("raymetrics")) == points
    assert secured.requests[-1].headers.get("content-encoding") == (None if compression == "none" else "zstd")
    if compression == "zstd":
        assert outcome.bytes_sent < outcome.bytes_raw / 10
