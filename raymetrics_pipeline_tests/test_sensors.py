import json
import os
import socket
import time
import uuid
from contextlib import ExitStack

import dagster as dg
import pytest

from raymetrics_pipeline.jobs import scrape_and_ship, scrape_job
from raymetrics_pipeline.resources import (
    LocalStoreResource,
    MetricsBackendResource,
    ParseableResource,
    RayMetricsSource,
    ScaleOut,
)
from raymetrics_pipeline.sensors import STALE_RUN_SECONDS, live_scrape_run, ray_metrics_sensor
from raymetrics_pipeline_tests.exporters import Exporter


def evaluate(instance, backend: MetricsBackendResource, source: RayMetricsSource):
    context = dg.build_sensor_context(instance=instance, resources={"backend": backend, "ray_metrics": source})
    return ray_metrics_sensor.evaluate_tick(context)


def parseable(**settings) -> ParseableResource:
    return ParseableResource(**{"url": "http://127.0.0.1:8000", "data_dir": "/tmp/x", **settings})


PARSEABLE = parseable(username="admin", password="admin")


@pytest.fixture
def endpoints():
    """Two real metrics endpoints listening on 127.0.0.1, as ``host:port``."""
    with Exporter("m 1\n") as first, Exporter("m 2\n") as second:
        yield [first.target, second.target]


@pytest.fixture
def closed_ports():
    """Loopback ports bound but not listening, as a stopped Ray leaves them: a connection is refused."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(3)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        yield [sock.getsockname()[1] for sock in sockets]


@pytest.fixture
def targets(endpoints) -> RayMetricsSource:
    return RayMetricsSource(targets=",".join(endpoints))


def ray_discovery_file(temp_dir, session: str, targets: list[str]):
    """Ray 2.60's discovery file in ``<temp_dir>/<session>/``, with the legacy path ``<temp_dir>/...`` linked to it."""
    session_file = temp_dir / session / "prom_metrics_service_discovery.json"
    session_file.parent.mkdir(parents=True)
    session_file.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": targets}]))
    legacy = temp_dir / "prom_metrics_service_discovery.json"
    legacy.symlink_to(session_file)
    return legacy


def add_scrape_run(instance, status: dg.DagsterRunStatus) -> dg.DagsterRun:
    return instance.add_run(dg.DagsterRun(job_name="scrape_and_ship", run_id=str(uuid.uuid4()), status=status))


def test_launches_a_scrape_with_a_key_per_15_second_window(instance, targets):
    result = evaluate(instance, PARSEABLE, targets)
    (request,) = result.run_requests
    window = int(time.time()) // 15 * 15
    assert request.run_key in (f"scrape-{window}", f"scrape-{window - 15}", f"scrape-{window + 15}")
    assert request.tags["raymetrics/targets"] == request.tags["raymetrics/targets_answering"] == "2"
    assert request.run_config["ops"] == {"scrape_and_ship_metrics": {"config": {"cycles": 0}}}, "keeps scraping"
    assert request.run_config["loggers"] == {"console": {"config": {"log_level": "INFO"}}}, "no DEBUG line an event"
    assert dg.validate_run_config(scrape_and_ship, request.run_config)
    assert ray_metrics_sensor.minimum_interval_seconds == 15
    assert ray_metrics_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert ray_metrics_sensor.job_name == "scrape_and_ship"


def test_without_parseable_it_still_scrapes_into_the_local_store(instance, targets):
    (request,) = evaluate(instance, LocalStoreResource(data_dir="/tmp/x"), targets).run_requests
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
def test_skips_with_a_reason_that_says_what_to_set(instance, backend, expected, targets):
    result = evaluate(instance, backend, targets)
    assert not result.run_requests and expected in result.skip_message


def test_skips_when_nothing_can_be_found_to_scrape(instance, tmp_path):
    result = evaluate(instance, PARSEABLE, RayMetricsSource(discovery_file=str(tmp_path / "none.json")))
    assert not result.run_requests
    assert (
        "RAY_METRICS_TARGETS" in result.skip_message and "ray start --head --metrics-export-port" in result.skip_message
    )
    bad = evaluate(instance, PARSEABLE, RayMetricsSource(targets="nohostport"))
    assert "RAY_METRICS_TARGETS" in bad.skip_message


def test_a_discovery_file_that_is_a_pipe_skips_at_once(instance, tmp_path):
    fifo = tmp_path / "prom_metrics_service_discovery.json"
    os.mkfifo(fifo)
    started = time.monotonic()
    result = evaluate(instance, PARSEABLE, RayMetricsSource(discovery_file=str(fifo)))
    assert time.monotonic() - started < 5 and not result.run_requests
    assert "named pipe" in result.skip_message and "RAY_PROM_DISCOVERY_FILE" in result.skip_message


def test_follows_the_discovery_file_as_it_changes(instance, tmp_path, endpoints):
    path = tmp_path / "prom_metrics_service_discovery.json"
    source = RayMetricsSource(discovery_file=str(path), host_override="127.0.0.1")
    ports = [target.rsplit(":", 1)[1] for target in endpoints]
    path.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": [f"10.1.1.1:{ports[0]}"]}]))
    assert evaluate(instance, PARSEABLE, source).run_requests[0].tags["raymetrics/targets"] == "1"
    path.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": [f"10.1.1.1:{port}" for port in ports]}]))
    assert evaluate(instance, PARSEABLE, source).run_requests[0].tags["raymetrics/targets"] == "2"


SESSION = "session_2026-11-30_07-30-55_508794_18017"


def test_after_ray_stop_it_skips_naming_the_session_and_what_to_check(instance, tmp_path, closed_ports):
    """`ray stop` leaves the discovery file listing ports nothing listens on any more: no run, a reason."""
    legacy = ray_discovery_file(tmp_path, SESSION, [f"127.0.0.1:{port}" for port in closed_ports])
    started = time.monotonic()
    result = evaluate(instance, PARSEABLE, RayMetricsSource(discovery_file=str(legacy)))
    elapsed = time.monotonic() - started
    assert not result.run_requests and elapsed < 2
    assert result.skip_message.startswith(
        f"No Ray metrics endpoint answers (3 targets from RAY_PROM_DISCOVERY_FILE {legacy}, session {SESSION}: "
        f"127.0.0.1:{closed_ports[0]} connection refused;"
    )
    assert "Is Ray running?" in result.skip_message and "ray start --head" in result.skip_message
    assert "set RAY_METRICS_HOST" in result.skip_message
    assert instance.get_runs() == [], "nothing launched"


def test_unreachable_addresses_point_at_ray_metrics_host(instance, tmp_path, closed_ports):
    """Discovery with the node's interface address, reached here only through RAY_METRICS_HOST."""
    legacy = ray_discovery_file(tmp_path, SESSION, [f"10.1.1.1:{port}" for port in closed_ports])
    source = RayMetricsSource(discovery_file=str(legacy), host_override="127.0.0.1")
    result = evaluate(instance, PARSEABLE, source)
    assert not result.run_requests
    assert "host replaced by RAY_METRICS_HOST=127.0.0.1" in result.skip_message
    assert "Check that RAY_METRICS_HOST=127.0.0.1 reaches" in result.skip_message


def test_when_some_endpoints_answer_it_launches_and_counts_them(instance, tmp_path, endpoints, closed_ports):
    legacy = ray_discovery_file(tmp_path, SESSION, [endpoints[0], f"127.0.0.1:{closed_ports[0]}"])
    (request,) = evaluate(instance, PARSEABLE, RayMetricsSource(discovery_file=str(legacy))).run_requests
    assert request.tags["raymetrics/targets"] == "2" and request.tags["raymetrics/targets_answering"] == "1"
    assert request.tags["raymetrics/session"] == SESSION


def test_skips_while_a_scrape_is_genuinely_in_flight(instance, targets):
    run = add_scrape_run(instance, dg.DagsterRunStatus.STARTED)
    result = evaluate(instance, PARSEABLE, targets)
    assert not result.run_requests and run.run_id in result.skip_message


def test_a_dead_run_does_not_block_scraping_forever(instance, targets):
    """A run killed with kill -9 stays STARTED in Dagster's records; past the stale age it is failed."""
    run = add_scrape_run(instance, dg.DagsterRunStatus.STARTED)
    assert live_scrape_run(instance, time.time()) == run.run_id
    assert live_scrape_run(instance, time.time() + STALE_RUN_SECONDS + 1) is None
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert evaluate(instance, PARSEABLE, targets).run_requests


def test_with_shards_it_launches_the_same_job_name_with_the_same_run_config(instance, targets):
    """RAYMETRICS_SCRAPE_SHARDS above 1 reshapes scrape_and_ship, under its name and run config (docs/scaling.md)."""
    sharded = scrape_job(ScaleOut(shards=3))
    (request,) = evaluate(instance, PARSEABLE, targets).run_requests
    assert sharded.name == ray_metrics_sensor.job_name
    ops = dg.validate_run_config(sharded, request.run_config)["ops"]
    every_shard = {f"scrape_and_ship_metrics.scrape_shard_{shard}" for shard in range(3)}
    assert {op: ops[op]["config"]["cycles"] for op in every_shard} == dict.fromkeys(every_shard, 0)
