"""Rollups on both backends, loaded by real scrape runs, against numbers read from the scraped text.

The project's fixtures (two Ray sessions) are served with their sample times moved to three
hours ago, keeping their spacing. The Parseable double receives each round 40 minutes after
its sample time, as after an outage when the spool replays; the local store receives it now.
Each backend's rollups go to their own DuckDB file, and both must match the text.
"""

import io
from collections import defaultdict
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import matplotlib.image
import pytest

from raymetrics_pipeline.assets import HOURLY, minute_rollups, ray_run_comparison, summaries
from raymetrics_pipeline.schedules import rollups_schedule
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
    read from the text: every series at every scrape of its endpoint, 0 where that scrape lacks it."""
    scrapes = defaultdict(dict)  # port -> {scrape time: {series: value}}
    for fixture in fixtures:
        scrapes[fixture.port][fixture.scrape_time_unix_nano] = {}
    for fixture, _, labels, value in lines_of(fixtures, "ray_tasks"):
        scrapes[fixture.port][fixture.scrape_time_unix_nano][tuple(sorted(labels.items()))] = value
    tasks, entered = defaultdict(float), defaultdict(float)
    for by_time in scrapes.values():
        for series in {series for values in by_time.values() for series in values}:
            labels = dict(series)
            group = (labels["SessionName"], labels["JobId"], labels["Name"], labels["State"])
            previous, at_minute_end = None, {}
            for time in sorted(by_time):
                level = by_time[time].get(series, 0.0)
                minute = minute_key(time, shift)
                if previous is None or level >= previous:
                    entered[(minute, *group)] += level - (previous or 0)
                elif labels["State"] in ("FINISHED", "FAILED"):
                    entered[(minute, *group)] += level
                else:
                    entered[(minute, *group)] += 0
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


def test_the_schedule_refreshes_the_current_and_previous_hour():
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 28, 9, 5, tzinfo=UTC))
    requests = list(rollups_schedule(context))
    assert [r.partition_key for r in requests] == ["2026-11-28-08:00", "2026-11-28-09:00"]
