import json
import time
import uuid

import dagster as dg
import pytest

from raymetrics_pipeline.resources import (
    LocalStoreResource,
    MetricsBackendResource,
    ParseableResource,
    RayMetricsSource,
)
from raymetrics_pipeline.sensors import STALE_RUN_SECONDS, live_scrape_run, ray_metrics_sensor


def evaluate(instance, backend: MetricsBackendResource, source: RayMetricsSource):
    context = dg.build_sensor_context(instance=instance, resources={"backend": backend, "ray_metrics": source})
    return ray_metrics_sensor.evaluate_tick(context)


def parseable(**settings) -> ParseableResource:
    return ParseableResource(**{"url": "http://127.0.0.1:8000", "data_dir": "/tmp/x", **settings})


PARSEABLE = parseable(username="admin", password="admin")
TARGETS = RayMetricsSource(targets="127.0.0.1:8080,127.0.0.1:44217")


def add_scrape_run(instance, status: dg.DagsterRunStatus) -> dg.DagsterRun:
    return instance.add_run(dg.DagsterRun(job_name="scrape_and_ship", run_id=str(uuid.uuid4()), status=status))


def test_launches_a_scrape_with_a_key_per_15_second_window(instance):
    result = evaluate(instance, PARSEABLE, TARGETS)
    (request,) = result.run_requests
    window = int(time.time()) // 15 * 15
    assert request.run_key in (f"scrape-{window}", f"scrape-{window - 15}", f"scrape-{window + 15}")
    assert request.tags["raymetrics/targets"] == "2"
    assert ray_metrics_sensor.minimum_interval_seconds == 15
    assert ray_metrics_sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_without_parseable_it_still_scrapes_into_the_local_store(instance):
    (request,) = evaluate(instance, LocalStoreResource(data_dir="/tmp/x"), TARGETS).run_requests
    assert request.tags["raymetrics/targets"] == "2"


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        (parseable(username="admin"), "PARSEABLE_PASSWORD"),
        (parseable(username="a", password="b", stream="bad name"), "PARSEABLE_STREAM"),
        (parseable(username="a", password="b", url="localhost:8000"), "PARSEABLE_URL"),
        (LocalStoreResource(data_dir="/tmp/x", stream="select"), "PARSEABLE_STREAM"),
    ],
)
def test_skips_with_a_reason_that_says_what_to_set(instance, backend, expected):
    result = evaluate(instance, backend, TARGETS)
    assert not result.run_requests and expected in result.skip_message


def test_skips_when_nothing_can_be_found_to_scrape(instance, tmp_path):
    result = evaluate(instance, PARSEABLE, RayMetricsSource(discovery_file=str(tmp_path / "none.json")))
    assert not result.run_requests
    assert (
        "RAY_METRICS_TARGETS" in result.skip_message and "ray start --head --metrics-export-port" in result.skip_message
    )
    bad = evaluate(instance, PARSEABLE, RayMetricsSource(targets="nohostport"))
    assert "RAY_METRICS_TARGETS" in bad.skip_message


def test_follows_the_discovery_file_as_it_changes(instance, tmp_path):
    path = tmp_path / "prom_metrics_service_discovery.json"
    source = RayMetricsSource(discovery_file=str(path), host_override="127.0.0.1")
    path.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": ["10.1.1.1:8080"]}]))
    assert evaluate(instance, PARSEABLE, source).run_requests[0].tags["raymetrics/targets"] == "1"
    path.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": ["10.1.1.1:8080", "10.1.1.1:44217"]}]))
    assert evaluate(instance, PARSEABLE, source).run_requests[0].tags["raymetrics/targets"] == "2"


def test_skips_while_a_scrape_is_genuinely_in_flight(instance):
    run = add_scrape_run(instance, dg.DagsterRunStatus.STARTED)
    result = evaluate(instance, PARSEABLE, TARGETS)
    assert not result.run_requests and run.run_id in result.skip_message


def test_a_dead_run_does_not_block_scraping_forever(instance):
    """A run killed with kill -9 stays STARTED in Dagster's records; past the stale age it is failed."""
    run = add_scrape_run(instance, dg.DagsterRunStatus.STARTED)
    assert live_scrape_run(instance, time.time()) == run.run_id
    assert live_scrape_run(instance, time.time() + STALE_RUN_SECONDS + 1) is None
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert evaluate(instance, PARSEABLE, TARGETS).run_requests
