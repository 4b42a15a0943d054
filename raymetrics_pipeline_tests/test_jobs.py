"""The scrape_and_ship job through Dagster: real exporters, the Parseable double, a test instance."""

import json
import logging
import socket
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
from dagster._core.storage.compute_log_manager import ComputeIOType

from raymetrics_pipeline import jobs
from raymetrics_pipeline.assets import RAYMETRICS_ASSET_KEY
from raymetrics_pipeline.ingest import otlp
from raymetrics_pipeline.ingest.cycle import CycleResult, TargetOutcome
from raymetrics_pipeline.ingest.health import UP
from raymetrics_pipeline.ingest.otlp import ResourceMetrics
from raymetrics_pipeline.ingest.prometheus import NO_LABELS, parse
from raymetrics_pipeline.jobs import expire_rollups, maintain_storage, prune_old_runs, scrape_and_ship
from raymetrics_pipeline.localstore.rows import stored_rows
from raymetrics_pipeline.localstore.store import LocalStore
from raymetrics_pipeline.resources import ParseableResource, RayMetricsSource
from raymetrics_pipeline.rollups.database import ensure_schema
from raymetrics_pipeline_tests.backends import local_backend, parseable_backend, rollup_resources
from raymetrics_pipeline_tests.exporters import Exporter
from raymetrics_pipeline_tests.parseable_double import ParseableDouble
from raymetrics_pipeline_tests.scrape_fixtures import scrape_fixtures

SECRET = "job-secret-9f2"
HOUR = timedelta(hours=1)
TEXT = max(scrape_fixtures(include_shared=False), key=lambda f: f.path.stat().st_size).text()
RECORDED = [
    "targets",
    "samples",
    "data_points",
    "series",
    "bytes_raw",
    "bytes_compressed",
    "http_statuses",
    "retries",
    "duration_seconds",
    "parse_errors",
    "per_target",
]


def resources(parseable: ParseableDouble, targets: str, tmp_path) -> dict:
    return {
        "ray_metrics": RayMetricsSource(targets=targets, resource_attributes="cluster_id=test"),
        "backend": parseable_backend(parseable, tmp_path, username="ray", password=SECRET),
    }


def step_metadata(result) -> dict:
    output = next(e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT")
    return {key: value.value for key, value in output.event_specific_data.metadata.items()}


def all_event_text(instance, run_id: str) -> str:
    return "\n".join(str(record) for record in instance.all_logs(run_id))


def keep_scraping(**config) -> dict:
    return {"ops": {"scrape_and_ship_metrics": {"config": config}}}


def test_a_run_from_the_sensor_records_every_cycle_until_its_time_is_up(instance, tmp_path, monkeypatch):
    """The sensor's runs scrape every 15 s for an hour: one Dagster run, one materialization per cycle."""
    monkeypatch.setattr(jobs, "SCRAPE_INTERVAL_SECONDS", 0.3)
    with Exporter(TEXT) as ray, ParseableDouble(username="ray", password=SECRET) as parseable:
        result = scrape_and_ship.execute_in_process(
            resources=resources(parseable, ray.target, tmp_path),
            instance=instance,
            run_config=keep_scraping(cycles=0, run_minutes=1.5 / 60),
        )
        scrapes = len({row["time_unix_nano"] for row in parseable.rows("raymetrics") if row["metric_name"] == UP})
    cycles = step_metadata(result)["cycles"]
    materializations = result.asset_materializations_for_node("scrape_and_ship_metrics")
    checks = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert result.success and 3 <= cycles <= 6 and len(materializations) == cycles
    assert len(checks) == 1, "the first cycle's freshness verdict stands for the run's later ones"
    assert scrapes == cycles, "each cycle scraped anew"


def test_a_failed_cycle_ends_the_run_as_a_failure(instance, tmp_path, monkeypatch):
    """A run that keeps scraping shows a failed cycle as a failed run; the sensor starts the next one."""
    monkeypatch.setattr(jobs, "SCRAPE_INTERVAL_SECONDS", 0.1)
    with Exporter(TEXT) as ray:
        result = scrape_and_ship.execute_in_process(
            resources={
                "ray_metrics": RayMetricsSource(targets=ray.target),
                "backend": ParseableResource(
                    data_dir=str(tmp_path), url="http://127.0.0.1:9", username="u", password="p"
                ),
            },
            instance=instance,
            run_config=keep_scraping(cycles=0),
            raise_on_error=False,
        )
    failure = next(e for e in result.all_node_events if e.event_type_value == "STEP_FAILURE")
    assert not result.success and "Delivery to Parseable failed" in failure.event_specific_data.error.message


def test_a_run_ships_and_records_what_it_did(instance, tmp_path):
    with (
        Exporter(TEXT) as ray,
        Exporter(status=500) as broken,
        ParseableDouble(username="ray", password=SECRET) as parseable,
    ):
        result = scrape_and_ship.execute_in_process(
            resources=resources(parseable, f"{ray.target},{broken.target}", tmp_path), instance=instance
        )
        rows = parseable.rows("raymetrics")
    assert result.success
    (materialization,) = result.asset_materializations_for_node("scrape_and_ship_metrics")
    assert materialization.asset_key == RAYMETRICS_ASSET_KEY
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert set(RECORDED) <= set(metadata)
    assert metadata["targets"] == 2 and metadata["targets_up"] == 1
    ray_rows = [row for row in rows if not row["metric_name"].startswith("raymetrics_pipeline_")]
    assert metadata["data_points"] == len(ray_rows) and metadata["http_statuses"] == [200]
    assert "HTTP 500" in metadata["per_target"]
    assert step_metadata(result) == {"cycles": 1}, "the figures are stored once, on the materialization"
    assert SECRET not in all_event_text(instance, result.run_id)


def test_an_outage_fails_the_run_but_keeps_the_data(instance, tmp_path):
    with Exporter(TEXT) as ray:
        backend = ParseableResource(url="http://127.0.0.1:9", username="ray", password=SECRET, data_dir=str(tmp_path))
        result = scrape_and_ship.execute_in_process(
            resources={"ray_metrics": RayMetricsSource(targets=ray.target), "backend": backend},
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    failure = next(e for e in result.all_node_events if e.event_type_value == "STEP_FAILURE")
    assert "kept in the spool" in failure.event_specific_data.error.message
    # The scrape's body and the delivery's own figures.
    assert len(list((tmp_path / "spool").glob("*.json.gz"))) == 2
    assert SECRET not in all_event_text(instance, result.run_id)


def test_a_cycle_lists_its_troubled_targets_first_and_at_most_twenty():
    outcomes = [TargetOutcome(f"10.0.0.{n}:8080", 200, 1000, 0.1, samples=10) for n in range(30)]
    outcomes[25] = TargetOutcome("10.0.0.25:8080", None, 0, 5.0, error="connection refused")
    cycle = CycleResult(outcomes, delivery=None, seconds=1.0)
    table = jobs._per_target(cycle)
    rows = [line for line in table.splitlines() if line.startswith("| 10.0.0.")]
    assert len(rows) == jobs.LISTED_TARGETS and "connection refused" in rows[0]
    assert table.endswith("… and 10 more targets (the run's log names every one that failed).")


def test_old_finished_runs_are_pruned_with_their_output_but_rollup_runs_stay(instance):
    def add(job_name: str, status: dg.DagsterRunStatus) -> str:
        run_id = str(uuid.uuid4())
        with instance.compute_log_manager.open_log_stream([run_id, "compute_logs", "step"], ComputeIOType.STDERR):
            pass
        return instance.add_run(dg.DagsterRun(job_name=job_name, run_id=run_id, status=status)).run_id

    finished = [add("scrape_and_ship", status) for status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)]
    finished += [add(job, dg.DagsterRunStatus.SUCCESS) for job in ("refresh_reports", "maintain_storage")]
    in_flight = add("scrape_and_ship", dg.DagsterRunStatus.STARTED)
    rollups = add("refresh_rollups", dg.DagsterRunStatus.SUCCESS)
    keep = prune_old_runs.execute_in_process(instance=instance)
    assert keep.success and all(instance.has_run(run_id) for run_id in finished)
    result = prune_old_runs.execute_in_process(
        instance=instance, run_config={"ops": {"delete_old_runs": {"config": {"older_than_days": 0}}}}
    )
    deleted = {"scrape_and_ship": 2, "refresh_reports": 1, "maintain_storage": 1, "prune_old_runs": 1}  # the run above
    assert step_metadata(result)["deleted_by_job"] == deleted
    assert not any(instance.has_run(run_id) for run_id in finished)
    logs = Path(instance.compute_log_manager._base_dir)
    assert not any((logs / run_id).exists() for run_id in finished)
    assert instance.has_run(in_flight) and instance.has_run(rollups) and (logs / rollups).is_dir()


def test_every_job_is_pruned_but_the_rollups():
    from raymetrics_pipeline.definitions import defs

    # Runs launched from the UI's Materialize button (__ASSET_JOB) may materialize hours: kept as well.
    named_jobs = {job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__")}
    assert named_jobs - set(jobs.PRUNED_JOBS) == {"refresh_rollups"}


def test_a_refused_series_fails_the_run_and_is_set_aside_while_the_rest_arrives(instance, tmp_path):
    # Parseable refuses a row that sets its own p_timestamp (docs/parseable.md): a label can do that.
    refused = 'bad{p_timestamp="x"} 1\n'
    with Exporter("m 1\n" + refused) as ray, ParseableDouble(username="ray", password=SECRET) as parseable:
        result = scrape_and_ship.execute_in_process(
            resources=resources(parseable, ray.target, tmp_path), instance=instance, raise_on_error=False
        )
        stored = {row["metric_name"] for row in parseable.rows("raymetrics")}
    failure = next(e for e in result.all_node_events if e.event_type_value == "STEP_FAILURE")
    assert "1 refused for good" in failure.event_specific_data.error.message
    assert "p_timestamp is a reserved field" in failure.event_specific_data.error.message
    assert len(list((tmp_path / "spool" / "rejected").glob("*.json.gz"))) == 1
    assert "m" in stored and "bad" not in stored


def test_without_parseable_a_run_writes_the_local_store(instance, tmp_path):
    with Exporter(TEXT) as ray:
        result = scrape_and_ship.execute_in_process(
            resources={"ray_metrics": RayMetricsSource(targets=ray.target), "backend": local_backend(tmp_path)},
            instance=instance,
        )
    assert result.success
    (materialization,) = result.asset_materializations_for_node("scrape_and_ship_metrics")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert metadata["destination"] == LocalStore(tmp_path / "store").location
    with local_backend(tmp_path).query() as query:
        rows = query.query("SELECT COUNT(*) AS n FROM raymetrics", datetime.now(UTC) - HOUR)
        (own,) = query.query(
            "SELECT COUNT(*) AS n FROM raymetrics WHERE metric_name LIKE 'raymetrics_pipeline_%'",
            datetime.now(UTC) - HOUR,
        )
    assert metadata["rows_stored"] == metadata["data_points"] + own["n"] and metadata["data_points"] > 400
    assert metadata["bytes_stored"] > 0
    assert rows == [{"n": metadata["rows_stored"]}]


def test_local_store_maintenance_compacts_finished_hours_and_expires_old_ones(instance, tmp_path):
    store = LocalStore(tmp_path / "store")
    now = datetime.now(UTC)
    scrapes = [ResourceMetrics(NO_LABELS, otlp.to_metrics(parse(TEXT), 0).metrics)]
    expired, finished = now - timedelta(days=8), now - 3 * HOUR
    for received in (expired, finished, finished + timedelta(seconds=15), now):
        store.write(stored_rows(scrapes, received), received)
    result = maintain_storage.execute_in_process(resources={"backend": local_backend(tmp_path)}, instance=instance)
    metadata = step_metadata(result)
    assert (metadata["hours_compacted"], metadata["files_before"], metadata["files_after"]) == (1, 2, 1)
    assert (metadata["hours_deleted"], metadata["files_deleted"]) == (1, 1)
    assert [path.name.split("-")[0] for path in store.files()] == ["compacted", "cycle"]
    assert not list(store.hours(end=now - timedelta(days=7))), "nothing older than the retention is left"


def test_rollup_retention_runs_as_its_own_job_and_keeps_recent_minutes(instance, tmp_path):
    now = datetime.now(UTC).replace(second=0, microsecond=0, tzinfo=None)
    with duckdb.connect(str(tmp_path / "rollups.duckdb")) as connection:
        ensure_schema(connection)
        for minute in (now - timedelta(days=500), now - timedelta(minutes=3)):
            connection.execute(
                "INSERT INTO node_minute (minute, cluster_id, session_name, node) VALUES (?, '', 's1', 'n1')", [minute]
            )
    result = expire_rollups.execute_in_process(resources=rollup_resources(tmp_path), instance=instance)
    assert step_metadata(result)["deleted_rows"] == 1
    with duckdb.connect(str(tmp_path / "rollups.duckdb"), read_only=True) as connection:
        assert connection.execute("SELECT COUNT(*) FROM node_minute").fetchall() == [(1,)]


def test_a_run_where_some_endpoints_refuse_ships_the_others_and_says_what_to_check(instance, tmp_path):
    """A Ray discovery file (linked into its session folder, as Ray 2.60 writes it) listing a live endpoint and one
    whose port nothing listens on any more."""
    session = "session_2026-11-30_07-30-55_508794_18017"
    with Exporter(TEXT) as ray, socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        gone = f"127.0.0.1:{closed.getsockname()[1]}"
        session_file = tmp_path / "ray" / session / "prom_metrics_service_discovery.json"
        session_file.parent.mkdir(parents=True)
        session_file.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": [ray.target, gone]}]))
        legacy = tmp_path / "ray" / "prom_metrics_service_discovery.json"
        legacy.symlink_to(session_file)
        result = scrape_and_ship.execute_in_process(
            resources={"ray_metrics": RayMetricsSource(discovery_file=str(legacy)), "backend": local_backend(tmp_path)},
            instance=instance,
        )
    assert result.success
    (materialization,) = result.asset_materializations_for_node("scrape_and_ship_metrics")
    assert materialization.metadata["targets_up"].value == 1
    warnings = [
        record.user_message
        for record in instance.all_logs(result.run_id)
        if record.level == logging.WARNING and "did not answer" in record.user_message
    ]
    (warning,) = warnings
    assert warning.startswith(f"1 of 2 Ray metrics endpoints did not answer ({gone} ConnectError")
    assert "the others were scraped. Is Ray running?" in warning and "set RAY_METRICS_HOST" in warning
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == "raymetrics_is_fresh" and evaluation.passed
