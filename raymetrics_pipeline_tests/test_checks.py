"""Asset checks and the guards around the rollups: freshness, gaps, pressure, missing columns, a held lock."""

import asyncio
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import pytest

# What the UI's GraphQL (AssetCheck.executionForLatestMaterialization) uses to decide whether the latest
# evaluation is shown; Dagster has no public way to build its loading context outside a server.
from dagster._core.loader import LoadingContextForTest

from raymetrics_pipeline import jobs
from raymetrics_pipeline.assets import HOURLY, RAYMETRICS_ASSET_KEY, minute_rollups, raymetrics_in
from raymetrics_pipeline.checks import (
    node_memory_pressure,
    node_minute_is_fresh_and_complete,
    object_store_pressure,
    raymetrics_is_fresh,
)
from raymetrics_pipeline.ingest import otlp
from raymetrics_pipeline.ingest.otlp import ResourceMetrics
from raymetrics_pipeline.ingest.prometheus import NO_LABELS, parse
from raymetrics_pipeline.jobs import scrape_and_ship
from raymetrics_pipeline.localstore.rows import stored_rows
from raymetrics_pipeline.localstore.store import LocalStore
from raymetrics_pipeline.resources import ParseableResource, RayMetricsSource, RollupSettings
from raymetrics_pipeline.rollups.database import ensure_schema
from raymetrics_pipeline_tests.backends import local_backend, rollup_resources
from raymetrics_pipeline_tests.exporters import Exporter

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
TEXT = 'ray_node_cpu_utilization{ip="10.0.0.1",SessionName="s1"} 50\n'


def resources(tmp_path) -> dict:
    return {"backend": local_backend(tmp_path), **rollup_resources(tmp_path)}


def write_sample(tmp_path, sampled: datetime, text: str = TEXT) -> None:
    scrapes = [ResourceMetrics(NO_LABELS, otlp.to_metrics(parse(text), int(sampled.timestamp() * 1e9)).metrics)]
    LocalStore(tmp_path / "store").write(stored_rows(scrapes, sampled), sampled)


def run_checks(instance, tmp_path, *checks, **resource_overrides) -> dict[str, dg.AssetCheckEvaluation]:
    """Run ``checks`` as the reports job does, with nothing else selected."""
    job = dg.define_asset_job("checks_only", selection=dg.AssetSelection.checks(*checks))
    defs = dg.Definitions(
        assets=[raymetrics_in(local_backend(tmp_path)), minute_rollups],
        asset_checks=list(checks),
        jobs=[job],
        resources={**resources(tmp_path), **resource_overrides},
    )
    result = defs.resolve_job_def("checks_only").execute_in_process(instance=instance, raise_on_error=False)
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


@pytest.mark.parametrize(("age_seconds", "passed"), [(30, True), (600, False)])
def test_ingestion_freshness_measures_the_newest_sample(instance, tmp_path, age_seconds, passed):
    write_sample(tmp_path, datetime.now(UTC) - timedelta(seconds=age_seconds))
    evaluation = run_checks(instance, tmp_path, raymetrics_is_fresh)["raymetrics_is_fresh"]
    assert evaluation.passed is passed
    assert evaluation.metadata["lag_seconds"].value == pytest.approx(age_seconds, abs=20)


def shown(instance, check: dg.AssetChecksDefinition):
    """The evaluation the UI shows for ``check``: the latest one, if it is about the latest materialization
    (otherwise the UI says "Not evaluated"); None when there is none to show."""
    record = instance.get_latest_asset_check_evaluation_record(check.check_key)
    if record and asyncio.run(record.targets_latest_materialization(LoadingContextForTest(instance))):
        return record
    return None


def scrape_into_local_store(instance, tmp_path, text: str) -> dg.ExecuteInProcessResult:
    with Exporter(text) as ray:
        return scrape_and_ship.execute_in_process(
            resources={"ray_metrics": RayMetricsSource(targets=ray.target), "backend": local_backend(tmp_path)},
            instance=instance,
            raise_on_error=False,
        )


def test_every_scrape_run_evaluates_freshness_and_a_stop_shows_as_failed(instance, tmp_path):
    """A scrape run's own verdict is what the UI shows after each materialization; once data stops (no run
    materializes any more), the scheduled check's failure is what it shows."""
    assert shown(instance, raymetrics_is_fresh) is None
    result = scrape_into_local_store(instance, tmp_path, TEXT)
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    record = shown(instance, raymetrics_is_fresh)
    assert record is not None and record.status.value == "SUCCEEDED"
    assert record.run_id == result.run_id and evaluation.passed
    metadata = {key: value.value for key, value in record.evaluation.metadata.items()}
    assert metadata["judged_by"].startswith("the Ray samples a scrape cycle delivered") and metadata["data_points"] == 1
    assert 0 <= metadata["lag_seconds"] < 5 and metadata["threshold_minutes"] == 2.0
    newest = datetime.fromisoformat(metadata["newest_sample"])
    assert abs((datetime.now(UTC) - newest).total_seconds()) < 5

    # Scraping stops; the reports schedule runs the check once the newest sample is past the threshold.
    time.sleep(1.2)
    stale = RollupSettings(reports_dir=str(tmp_path / "comparison"), ingestion_freshness_minutes=0.01)
    scheduled = run_checks(instance, tmp_path, raymetrics_is_fresh, rollup_settings=stale)["raymetrics_is_fresh"]
    assert not scheduled.passed and scheduled.severity == dg.AssetCheckSeverity.ERROR
    record = shown(instance, raymetrics_is_fresh)
    assert record is not None and record.status.value == "FAILED"
    assert record.run_id != result.run_id and record.evaluation.metadata["lag_seconds"].value >= 1


def test_a_run_that_keeps_scraping_records_its_verdict_once_and_again_when_it_turns(instance, tmp_path, monkeypatch):
    """Dagster keeps one evaluation a run and shows it on the run's latest materialization, so a run records the
    first cycle's verdict and then only a change."""
    monkeypatch.setattr(jobs, "SCRAPE_INTERVAL_SECONDS", 0.1)
    old = int((datetime.now(UTC) - timedelta(minutes=10)).timestamp() * 1000)
    stale = f'ray_node_cpu_utilization{{ip="10.0.0.1"}} 50 {old}\n'
    with Exporter(body_for_hit=lambda hit: TEXT if hit < 4 else stale) as ray:
        result = scrape_and_ship.execute_in_process(
            resources={"ray_metrics": RayMetricsSource(targets=ray.target), "backend": local_backend(tmp_path)},
            instance=instance,
            run_config={"ops": {"scrape_and_ship_metrics": {"config": {"cycles": 6}}}},
        )
    assert len(result.asset_materializations_for_node("scrape_and_ship_metrics")) == 6
    assert [evaluation.passed for evaluation in result.get_asset_check_evaluations()] == [True, False]
    record = shown(instance, raymetrics_is_fresh)
    assert record is not None and record.run_id == result.run_id and record.status.value == "FAILED"
    assert record.evaluation.metadata["lag_seconds"].value == pytest.approx(600, abs=10)


def test_a_scrape_run_that_delivers_old_samples_fails_freshness(instance, tmp_path):
    """Samples that carry their own timestamp, ten minutes old: delivered, but not fresh."""
    old = int((datetime.now(UTC) - timedelta(minutes=10)).timestamp() * 1000)
    result = scrape_into_local_store(instance, tmp_path, f'ray_node_cpu_utilization{{ip="10.0.0.1"}} 50 {old}\n')
    assert result.success
    record = shown(instance, raymetrics_is_fresh)
    assert record is not None and record.status.value == "FAILED"
    assert record.evaluation.metadata["lag_seconds"].value == pytest.approx(600, abs=10)


def test_a_scrape_run_whose_endpoints_all_fail_names_them_and_what_to_check(instance, tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{closed.getsockname()[1]}"
        result = scrape_and_ship.execute_in_process(
            resources={"ray_metrics": RayMetricsSource(targets=target), "backend": local_backend(tmp_path)},
            instance=instance,
            raise_on_error=False,
        )
    failure = next(e for e in result.all_node_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert f"Every Ray metrics endpoint failed (1 target from RAY_METRICS_TARGETS: {target} ConnectError" in message
    assert "Is Ray running on those hosts" in message
    for evaluation in result.get_asset_check_evaluations():  # if the run delivered anything, its verdict is a fail
        assert not evaluation.passed and evaluation.metadata["newest_sample"].value.startswith("none")


def test_with_no_data_ever_delivered_freshness_warns_instead_of_erroring(instance, tmp_path):
    evaluation = run_checks(instance, tmp_path, raymetrics_is_fresh)["raymetrics_is_fresh"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["newest_sample"].value == "no data yet: no scrape run has delivered anything"
    assert "holds no data yet" in evaluation.metadata["error"].value


def test_a_dataset_that_cannot_be_read_after_deliveries_fails_freshness(instance, tmp_path):
    instance.report_runless_asset_event(dg.AssetMaterialization(RAYMETRICS_ASSET_KEY))
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        down = ParseableResource(
            url=f"http://127.0.0.1:{closed.getsockname()[1]}", username="u", password="p", data_dir=str(tmp_path)
        )
        evaluation = run_checks(instance, tmp_path, raymetrics_is_fresh, backend=down)["raymetrics_is_fresh"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "did not answer" in evaluation.metadata["error"].value


def test_the_pipelines_own_figures_do_not_count_as_fresh_ray_data(instance, tmp_path):
    write_sample(tmp_path, datetime.now(UTC) - timedelta(minutes=30))
    write_sample(tmp_path, datetime.now(UTC), "raymetrics_pipeline_up 0\n")
    evaluation = run_checks(instance, tmp_path, raymetrics_is_fresh)["raymetrics_is_fresh"]
    assert not evaluation.passed
    assert evaluation.metadata["lag_seconds"].value == pytest.approx(1800, abs=30)


def fill_node_minutes(tmp_path, minutes: list[datetime], pressure: float = 0.5) -> None:
    with duckdb.connect(str(tmp_path / "rollups.duckdb")) as connection:
        ensure_schema(connection)
        for minute in minutes:
            connection.execute(
                "INSERT INTO node_minute (minute, cluster_id, session_name, node, mem_pressure_max) "
                "VALUES (?, ?, ?, ?, ?)",
                [minute.replace(tzinfo=None), "prod-a", "s1", "10.0.0.1", pressure],
            )


def test_rollup_gaps_warn_and_name_the_missing_minutes(instance, tmp_path):
    fill_node_minutes(tmp_path, [NOW - timedelta(minutes=m) for m in (1, 2, 5, 6)])
    evaluation = run_checks(instance, tmp_path, node_minute_is_fresh_and_complete)["node_minute_is_fresh_and_complete"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    (gap,) = evaluation.metadata["missing_minutes"].value
    assert gap.startswith("prod-a / s1 / 10.0.0.1:") and gap.endswith("(2 min)")


def test_stale_rollups_fail(instance, tmp_path):
    fill_node_minutes(tmp_path, [NOW - timedelta(hours=2)])
    evaluation = run_checks(instance, tmp_path, node_minute_is_fresh_and_complete)["node_minute_is_fresh_and_complete"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR


def test_pressure_warns_naming_cluster_session_node_and_minute(instance, tmp_path):
    fill_node_minutes(tmp_path, [NOW - timedelta(minutes=3)], pressure=0.95)
    with duckdb.connect(str(tmp_path / "rollups.duckdb")) as connection:
        connection.execute(
            "INSERT INTO object_store_minute (minute, cluster_id, session_name, node, object_state, location, "
            "node_pressure) VALUES (?, 'prod-a', 's1', '10.0.0.1', '', 'IN_MEMORY', 0.85)",
            [(NOW - timedelta(minutes=4)).replace(tzinfo=None)],
        )
    evaluations = run_checks(instance, tmp_path, node_memory_pressure, object_store_pressure)
    memory, store = evaluations["node_memory_pressure"], evaluations["object_store_pressure"]
    assert not memory.passed and memory.metadata["where"].value == [
        f"prod-a / s1 / 10.0.0.1 at {NOW - timedelta(minutes=3):%Y-%m-%d %H:%M}: 95%"
    ]
    assert not store.passed and store.severity == dg.AssetCheckSeverity.WARN
    assert "85%" in store.metadata["where"].value[0]


def test_missing_columns_fail_the_schema_check_before_anything_is_written(instance, tmp_path):
    sampled = NOW - timedelta(minutes=5)
    LocalStore(tmp_path / "store").write(
        [{"metric_name": "ray_tasks", "p_timestamp": int(sampled.timestamp() * 1000)}], sampled
    )
    result = dg.materialize(
        [minute_rollups], partition_key=HOURLY.get_partition_key_for_timestamp(sampled.timestamp()),
        resources=resources(tmp_path), instance=instance, raise_on_error=False,
    )  # fmt: skip
    (evaluation,) = result.get_asset_check_evaluations()
    assert not result.success and not evaluation.passed
    assert evaluation.metadata["missing_columns"].value == ["data_point_value", "time_unix_nano"]
    assert not (tmp_path / "rollups.duckdb").exists(), "nothing was written"


HOLD_LOCK = """
import duckdb, pathlib, sys, time
connection = duckdb.connect(sys.argv[1])
print("holding", flush=True)
release, deadline = pathlib.Path(sys.argv[2]), time.time() + 120
while not release.exists() and time.time() < deadline:
    time.sleep(0.05)
"""


def lock_warnings(instance) -> list[str]:
    return [
        record.user_message
        for run in instance.get_runs()
        for record in instance.all_logs(run.run_id)
        if "is locked by" in record.user_message
    ]


def test_a_run_that_meets_a_lock_waits_and_says_who_holds_it(instance, tmp_path):
    """Another process holds the file until the run has said it waits for it; then the run goes on."""
    sampled = NOW - timedelta(minutes=2)
    write_sample(tmp_path, sampled)
    release = tmp_path / "release"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "rollups.duckdb"), str(release)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "holding"

    def release_once_the_run_waits() -> None:
        while not lock_warnings(instance) and holder.poll() is None:
            time.sleep(0.1)
        release.touch()

    watcher = threading.Thread(target=release_once_the_run_waits)
    watcher.start()
    result = dg.materialize(
        [minute_rollups], partition_key=HOURLY.get_partition_key_for_timestamp(sampled.timestamp()),
        resources=resources(tmp_path), instance=instance,
    )  # fmt: skip
    watcher.join()
    warnings = lock_warnings(instance)
    holder.wait()
    assert result.success and warnings and holder.returncode == 0
    assert f"(PID {holder.pid})" in warnings[0]


def test_a_backfill_of_several_hours_runs_as_one_run(instance, tmp_path):
    hours = [NOW.replace(minute=30) - timedelta(hours=h) for h in (3, 2)]
    for sampled in hours:
        write_sample(tmp_path, sampled)
    keys = [HOURLY.get_partition_key_for_timestamp(moment.timestamp()) for moment in hours]
    result = dg.materialize(
        [minute_rollups], resources=resources(tmp_path), instance=instance,
        tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[1]},
    )  # fmt: skip
    node_minute = [
        m for m in result.asset_materializations_for_node("minute_rollups") if m.asset_key.path == ["node_minute"]
    ]
    assert sorted(m.partition for m in node_minute) == keys, "one materialization per hour of the range"
    assert all(m.metadata["hours"].value == 2 for m in node_minute)
    with duckdb.connect(str(tmp_path / "rollups.duckdb"), read_only=True) as connection:
        minutes = connection.execute("SELECT minute FROM node_minute ORDER BY minute").fetchall()
    assert [minute for (minute,) in minutes] == [moment.replace(second=0, tzinfo=None) for moment in hours]


def test_on_a_fresh_rollups_file_the_checks_report_instead_of_erroring(instance, tmp_path):
    evaluations = run_checks(
        instance, tmp_path, node_minute_is_fresh_and_complete, node_memory_pressure, object_store_pressure
    )
    assert set(evaluations) == {"node_minute_is_fresh_and_complete", "node_memory_pressure", "object_store_pressure"}
    fresh = evaluations["node_minute_is_fresh_and_complete"]
    assert not fresh.passed and fresh.metadata["newest_minute"].value == "no rollups yet"
    assert fresh.severity == dg.AssetCheckSeverity.WARN, "nothing yet is a warning, not an error"
    assert "refresh_rollups" in fresh.metadata["what_to_do"].value
    assert evaluations["node_memory_pressure"].passed and evaluations["object_store_pressure"].passed
