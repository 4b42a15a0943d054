"""Rollups on both backends, loaded by real scrape runs, against numbers read from the scraped text.

The project's fixtures (two Ray sessions) are served with their sample times moved to three
hours ago, keeping their spacing. The Parseable double receives each round 40 minutes after
its sample time, as after an outage when the spool replays; the local store receives it now.
Each backend's rollups go to their own DuckDB file, and both must match the text.
"""

import io
import os
import subprocess
import sys
import uuid
from collections import defaultdict
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import matplotlib.image
import pytest

from raymetrics_pipeline.assets import HOURLY, minute_rollups, ray_jobs, ray_run_comparison, raymetrics_in, summaries
from raymetrics_pipeline.checks import (
    node_memory_pressure,
    node_minute_is_fresh_and_complete,
    object_store_pressure,
    raymetrics_is_fresh,
)
from raymetrics_pipeline.resources import RayMetricsSource, rollup_start
from raymetrics_pipeline.schedules import REPORT_CHECKS, refresh_reports, refresh_reports_schedule, rollups_schedule
from raymetrics_pipeline_tests.backends import BACKENDS, local_backend, parseable_backend, rollup_resources
from raymetrics_pipeline_tests.parseable_double import ParseableDouble
from raymetrics_pipeline_tests.scrape_fixtures import scrape_fixtures
from raymetrics_pipeline_tests.scraped_text import lines_of, load_by_scrape_runs

FIXTURES = scrape_fixtures(include_shared=False)
FIRST = min(f.scrape_time_unix_nano for f in FIXTURES)


def minute_key(fixture_or_time, shift: timedelta) -> datetime:
    """The minute a fixture's (or a scrape time's) samples land in, once moved by ``shift``."""
    time = getattr(fixture_or_time, "scrape_time_unix_nano", fixture_or_time)
    moment = datetime.fromtimestamp(time / 1e9, UTC) + shift
    return moment.replace(second=0, microsecond=0, tzinfo=None)


@pytest.fixture(scope="module")
def rolled_up(tmp_path_factory):
    """Both backends loaded, and one hourly partition rolled up from each into its own DuckDB file."""
    data_dir = tmp_path_factory.mktemp("data")
    first = datetime.fromtimestamp(FIRST / 1e9, UTC).replace(second=0, microsecond=0)
    hour = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    shift = hour + timedelta(minutes=10) - first
    with ExitStack() as stack:
        parseable = stack.enter_context(ParseableDouble())
        load_by_scrape_runs(stack, FIXTURES, parseable, data_dir, shift=shift, parseable_lag=timedelta(minutes=40))
        instance = stack.enter_context(dg.instance_for_test())
        backends = {"parseable": parseable_backend(parseable, data_dir), "local store": local_backend(data_dir)}
        results, databases = {}, {}
        for name, backend in backends.items():
            database = f"{name.replace(' ', '_')}.duckdb"
            databases[name] = str(data_dir / database)
            resources = {"backend": backend, **rollup_resources(data_dir, database)}
            partition = HOURLY.get_partition_key_for_timestamp(hour.timestamp())
            for _ in range(2):  # a second run of the same partition must change nothing
                results[name] = dg.materialize(
                    [minute_rollups], partition_key=partition, resources=resources, instance=instance
                )
            results[name + " reports"] = dg.materialize(
                [summaries, ray_run_comparison], resources=resources, instance=instance
            )
    yield results, databases, shift


def table(database: str, sql: str) -> list[tuple]:
    with duckdb.connect(database, read_only=True) as connection:
        return connection.execute(sql).fetchall()


@pytest.fixture(params=BACKENDS)
def backend(request, rolled_up):
    results, databases, shift = rolled_up
    assert results[request.param].success and results[request.param + " reports"].success
    return databases[request.param], shift


def test_node_minute_matches_the_text(backend):
    database, shift = backend
    values = defaultdict(lambda: defaultdict(list))
    at_scrape = defaultdict(dict)
    for fixture, name, labels, value in lines_of(
        FIXTURES, "ray_node_cpu_utilization", "ray_node_mem_used", "ray_node_mem_total", "ray_node_cpu_count"
    ):
        key = (minute_key(fixture, shift), labels["SessionName"], labels["ip"])
        values[key][name].append(value)
        at_scrape[(key, fixture.path)][name] = value
    peak_pressure = defaultdict(float)  # the highest ratio at one scrape, not a ratio of the minute's figures
    for (key, _), scrape in at_scrape.items():
        ratio = scrape["ray_node_mem_used"] / scrape["ray_node_mem_total"]
        peak_pressure[key] = max(peak_pressure[key], ratio)
    expected = {
        key: (
            sum(v["ray_node_cpu_utilization"]) / len(v["ray_node_cpu_utilization"]),
            max(v["ray_node_cpu_utilization"]),
            max(v["ray_node_cpu_count"]),
            sum(v["ray_node_mem_used"]) / len(v["ray_node_mem_used"]),
            max(v["ray_node_mem_total"]),
            peak_pressure[key],
        )
        for key, v in values.items()
    }
    rows = table(
        database,
        """SELECT minute, session_name, node, cpu_percent_avg, cpu_percent_max, cpu_count, mem_used_avg, mem_total,
                  mem_pressure_max FROM node_minute""",
    )
    assert {row[:3]: pytest.approx(row[3:]) for row in rows} == expected
    assert len({row[1] for row in rows}) == 2, "two sessions"


def task_figures(fixtures, shift: timedelta) -> tuple[dict, dict]:
    """(minute, session, job, task, state) → (tasks at the minute's last scrape, tasks that entered the state),
    read from the text: every series at every scrape of its endpoint, 0 where that scrape lacks it; the
    entered tasks are the rises (a fall is a job's part leaving Ray's sum)."""
    scrapes = defaultdict(dict)  # port -> {scrape time: {series: value}}
    for fixture in fixtures:
        scrapes[fixture.port][fixture.scrape_time_unix_nano] = {}
    for fixture, _, labels, value in lines_of(fixtures, "ray_tasks"):
        scrapes[fixture.port][fixture.scrape_time_unix_nano][tuple(sorted(labels.items()))] = value
    tasks, entered = defaultdict(float), defaultdict(float)
    for by_time in scrapes.values():
        for series in {series for values in by_time.values() for series in values}:
            labels = dict(series)
            if "JobSupervisor." in labels["Name"]:
                continue  # Ray's job manager's own tasks
            group = (labels["SessionName"], labels["JobId"], labels["Name"], labels["State"])
            previous, at_minute_end = None, {}
            for time in sorted(by_time):
                level = by_time[time].get(series, 0.0)
                minute = minute_key(time, shift)
                entered[(minute, *group)] += max(level - (previous or 0), 0)  # a fall is a job leaving Ray's sum
                at_minute_end[minute] = level
                previous = level
            for minute, level in at_minute_end.items():
                tasks[(minute, *group)] += level
    return tasks, entered


def test_task_state_minute_counts_per_scrape(backend):
    database, shift = backend
    tasks, entered = task_figures(FIXTURES, shift)
    rows = table(
        database, "SELECT minute, session_name, job_id, task_name, state, tasks, entered FROM task_state_minute"
    )
    assert {row[:5]: row[5] for row in rows} == pytest.approx(dict(tasks))
    assert {row[:5]: row[6] for row in rows} == pytest.approx(dict(entered))
    failed = [row for row in rows if row[4] == "FAILED" and row[6] > 0]
    assert failed and all(row[2] == "" for row in failed), "Ray 2.60 files failed tasks under JobId ''"


def test_object_store_minute_sums_each_scrape_over_series(backend):
    database, shift = backend
    per_scrape = defaultdict(float)  # summed by hand over the node's series (one WORKER_HEAP per worker)
    for fixture, _, labels, value in lines_of(FIXTURES, "ray_object_store_memory"):
        where = (labels["SessionName"], labels["NodeAddress"], labels["ObjectState"], labels["Location"])
        per_scrape[(minute_key(fixture, shift), *where, fixture.scrape_time_unix_nano)] += value
    values = defaultdict(list)
    for (*key, _), total in per_scrape.items():
        values[tuple(key)].append(total)
    used, available = {}, {}
    for fixture, name, labels, value in lines_of(
        FIXTURES, "ray_object_store_used_memory", "ray_object_store_available_memory"
    ):
        scrape = (minute_key(fixture, shift), labels["SessionName"], labels["NodeAddress"], fixture.path)
        (used if name == "ray_object_store_used_memory" else available)[scrape] = value
    pressure = defaultdict(float)
    for scrape, value in used.items():
        pressure[scrape[:3]] = max(pressure[scrape[:3]], value / (value + available[scrape]))
    rows = table(
        database,
        """SELECT minute, session_name, node, object_state, location, bytes_avg, bytes_max, node_pressure
           FROM object_store_minute""",
    )
    assert {row[:5]: pytest.approx(row[5:7]) for row in rows} == {
        key: (sum(v) / len(v), max(v)) for key, v in values.items()
    }
    assert {row[:3]: row[7] for row in rows} == pytest.approx(dict(pressure))
    heap = [row for row in rows if row[4] == "WORKER_HEAP"]
    assert heap and max(row[6] for row in heap) > 0


def test_session_summary_counts_finished_and_failed_tasks(backend):
    database, shift = backend
    sessions = {session for (_, session, _, _, _) in task_figures(FIXTURES, shift)[0]}
    rows = table(
        database, "SELECT session_name, nodes, tasks_finished, tasks_failed, failure_rate FROM session_summary"
    )
    per_minute = table(database, "SELECT session_name, state, SUM(entered) FROM task_state_minute GROUP BY 1, 2")
    sums = {(session, state): value for session, state, value in per_minute}
    assert {row[0] for row in rows} == sessions
    for session, nodes, finished, failed, rate in rows:
        assert nodes == 1 and finished == sums[(session, "FINISHED")] and failed == sums[(session, "FAILED")]
        assert failed > 0 and rate == pytest.approx(failed / (finished + failed))
    jobs = table(database, "SELECT DISTINCT job_id FROM job_summary ORDER BY 1")
    assert [job for (job,) in jobs] == ["01000000", "02000000", "03000000"]


def test_both_backends_give_the_same_rollups(rolled_up):
    _, databases, _ = rolled_up
    for name in ("node_minute", "task_state_minute", "object_store_minute", "job_minute", "session_summary"):
        columns = "* EXCLUDE (updated_at)" if name == "session_summary" else "*"
        parseable, local = (sorted(table(databases[b], f"SELECT {columns} FROM {name}")) for b in BACKENDS)
        assert len(parseable) == len(local) > 0, name
        for left, right in zip(parseable, local, strict=True):
            assert _close(left, right), (name, left, right)


def _close(left: tuple, right: tuple) -> bool:
    return all(
        a == pytest.approx(b) if isinstance(a, float) and isinstance(b, float) else a == b
        for a, b in zip(left, right, strict=True)
    )


def test_re_running_a_partition_replaces_it(rolled_up):
    results, databases, _ = rolled_up
    (materialization,) = [
        m
        for m in results["local store"].asset_materializations_for_node("minute_rollups")
        if m.asset_key.path == ["node_minute"]
    ]
    ((count, distinct, first, last),) = table(
        databases["local store"],
        "SELECT COUNT(*), COUNT(DISTINCT (minute, session_name, node)), MIN(minute), MAX(minute) FROM node_minute",
    )
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert count == distinct == metadata["dagster/row_count"]
    assert (metadata["first_minute"], metadata["last_minute"]) == (str(first), str(last))
    assert len(metadata["sessions"]) == 2


def test_the_comparison_chart_is_a_real_picture_of_both_sessions(rolled_up, tmp_path):
    results, _, _ = rolled_up
    (materialization,) = results["local store reports"].asset_materializations_for_node("ray_run_comparison")
    markdown = materialization.metadata["comparison"].value
    sessions = {f.session for f in FIXTURES}
    assert "![" in markdown and "data:image/png;base64," in markdown
    chart = materialization.metadata["chart"].value
    pixels = matplotlib.image.imread(io.BytesIO(open(chart, "rb").read()), format="png")
    assert pixels.shape[0] > 200 and pixels.shape[1] > 600
    not_white = (pixels[:, :, :3] < 0.9).any(axis=2).mean()
    assert 0.02 < not_white < 0.9, f"{not_white:.1%} of the picture is drawn"
    assert len(materialization.metadata["sessions"].value) == len(sessions) == 2


def test_the_schedule_refreshes_the_current_and_previous_hour_in_one_run():
    yesterday = datetime.now(UTC) - timedelta(days=1)
    context = dg.build_schedule_context(scheduled_execution_time=yesterday.replace(hour=9, minute=5))
    request = rollups_schedule(context)
    expected = [f"{yesterday:%Y-%m-%d}-08:00", f"{yesterday:%Y-%m-%d}-09:00"]
    range_tags = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")
    assert [request.tags[tag] for tag in range_tags] == expected
    assert set(expected) <= set(HOURLY.get_partition_keys()), "inside the partitions the UI offers"


def test_the_reports_schedule_redraws_the_comparison_every_third_run_and_checks_every_run(tmp_path):
    backend = local_backend(tmp_path)
    no_ray = RayMetricsSource(discovery_file=str(tmp_path / "no-ray" / "prom_metrics_service_discovery.json"))
    defs = dg.Definitions(
        assets=[raymetrics_in(backend), minute_rollups, summaries, ray_jobs, ray_run_comparison],
        asset_checks=list(REPORT_CHECKS),
        jobs=[refresh_reports],
        resources={"backend": backend, "ray_metrics": no_ray, **rollup_resources(tmp_path)},
    )
    materialized = {}
    with dg.instance_for_test() as instance:
        for minute in range(2, 60, 10):
            when = datetime(2026, 11, 30, 9, minute, tzinfo=UTC)
            with dg.build_schedule_context(instance, scheduled_execution_time=when) as context:
                request = refresh_reports_schedule(context)
            job = defs.resolve_job_def("refresh_reports").get_subset(
                asset_selection=set(request.asset_selection), asset_check_selection=set(request.asset_check_keys)
            )
            result = job.execute_in_process(instance=instance)
            assert {e.check_name for e in result.get_asset_check_evaluations()} == {
                key.name for c in REPORT_CHECKS for key in c.check_keys
            }
            materialized[minute] = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    with_comparison = [minute for minute, names in materialized.items() if "ray_run_comparison" in names]
    assert with_comparison == [2, 32]
    assert all({"session_summary", "job_summary", "ray_jobs"} <= names for names in materialized.values())


def test_the_reports_schedule_leaves_freshness_to_a_scrape_run_in_flight():
    """The UI shows the newest run's evaluation of a check: the schedule's would hide the scrape run's verdict on
    every materialization after it, for the rest of that run's hour."""
    when = datetime(2026, 11, 30, 9, 12, tzinfo=UTC)
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(instance, scheduled_execution_time=when) as context,
    ):
        assert raymetrics_is_fresh.check_key in refresh_reports_schedule(context).asset_check_keys
        instance.add_run(
            dg.DagsterRun(job_name="scrape_and_ship", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED)
        )
        request = refresh_reports_schedule(context)
    assert raymetrics_is_fresh.check_key not in request.asset_check_keys
    assert set(request.asset_check_keys) == {key for c in REPORT_CHECKS for key in c.check_keys} - {
        raymetrics_is_fresh.check_key
    }


def test_rollup_partitions_start_a_week_back_at_midnight_utc():
    now = datetime(2026, 11, 30, 7, 40, tzinfo=UTC)
    assert rollup_start({}, now) == datetime(2026, 11, 23, tzinfo=UTC)
    assert rollup_start({"RAYMETRICS_ROLLUP_START_DAYS": "0"}, now) == datetime(2026, 11, 30, tzinfo=UTC)
    assert rollup_start({"RAYMETRICS_ROLLUP_START_DAYS": "30"}, now) == datetime(2026, 10, 31, tzinfo=UTC)
    assert HOURLY.start == rollup_start(), "the partitions the UI shows start there"
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    keys = HOURLY.get_partition_keys()
    assert keys[0] == f"{today - timedelta(days=7):%Y-%m-%d}-00:00"
    assert 7 * 24 < len(keys) <= 8 * 24 + 1, "a week of hours, up to the current one: not a year of empty ones"


@pytest.mark.parametrize("bad", ["a week", "-1", "1.5", "100000", "nan", "inf"])
def test_a_bad_rollup_start_names_the_setting(bad):
    with pytest.raises(ValueError, match=r"RAYMETRICS_ROLLUP_START_DAYS=.*give a whole number of days"):
        rollup_start({"RAYMETRICS_ROLLUP_START_DAYS": bad})


def assets_loaded_with(start_days: str) -> subprocess.CompletedProcess:
    code = "from raymetrics_pipeline.assets import HOURLY; print(HOURLY.start.isoformat())"
    env = {**os.environ, "RAYMETRICS_ROLLUP_START_DAYS": start_days}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_the_setting_moves_the_partitions_and_a_bad_one_stops_the_code_location_loading():
    loaded = assets_loaded_with("2")
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == (today - timedelta(days=2)).isoformat()
    broken = assets_loaded_with("yesterday")
    assert broken.returncode != 0 and "RAYMETRICS_ROLLUP_START_DAYS='yesterday'" in broken.stderr


def test_the_first_reports_run_on_a_fresh_installation_succeeds_and_says_nothing_is_rolled_up_yet(tmp_path):
    """Nothing scraped, nothing rolled up, no Ray: the reports job still succeeds, and nothing is an ERROR."""
    backend = local_backend(tmp_path)
    no_ray = RayMetricsSource(discovery_file=str(tmp_path / "no-ray" / "prom_metrics_service_discovery.json"))
    defs = dg.Definitions(
        assets=[raymetrics_in(backend), minute_rollups, summaries, ray_jobs, ray_run_comparison],
        asset_checks=[
            raymetrics_is_fresh,
            node_minute_is_fresh_and_complete,
            object_store_pressure,
            node_memory_pressure,
        ],
        jobs=[refresh_reports],
        resources={"backend": backend, "ray_metrics": no_ray, **rollup_resources(tmp_path)},
    )
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("refresh_reports").execute_in_process(instance=instance, raise_on_error=False)
    assert result.success, [event.message for event in result.all_events if event.is_failure]
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == {
        "raymetrics_is_fresh", "node_minute_is_fresh_and_complete", "object_store_pressure", "node_memory_pressure"
    }  # fmt: skip
    for evaluation in evaluations.values():
        assert evaluation.passed or evaluation.severity == dg.AssetCheckSeverity.WARN, evaluation.check_name
    assert evaluations["node_minute_is_fresh_and_complete"].metadata["newest_minute"].value == "no rollups yet"
    (comparison,) = result.asset_materializations_for_node("ray_run_comparison")
    markdown = comparison.metadata["comparison"].value
    assert markdown.startswith("Nothing rolled up yet") and "refresh_rollups" in markdown
    assert comparison.metadata["sessions"].value == [] and (tmp_path / "comparison" / "ray_run_comparison.png").exists()
    (jobs, _) = result.asset_materializations_for_node("ray_jobs")
    assert jobs.metadata["dashboard"].value == "not found" and "RAY_DASHBOARD_URL" in jobs.metadata["why"].value
