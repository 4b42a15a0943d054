"""The rollups in DuckDB: retention keeps what it must, summaries outlive their minutes, writes replace a window,
Ray's own job figures are recorded as Ray gave them."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from raymetrics_pipeline.rayapi.models import parse_jobs, parse_task_summary
from raymetrics_pipeline.rollups.database import (
    delete_minutes_before,
    ensure_schema,
    jobs_awaiting_tasks,
    record_ray_jobs,
    refresh_summaries,
    replace_window,
)
from raymetrics_pipeline.rollups.tables import MINUTE_TABLES, Window

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def node_minute(minute: datetime, cpu: float = 50.0) -> dict:
    return {"minute": minute.strftime("%Y-%m-%dT%H:%M:%S"), "cluster_id": "", "session_name": "s1", "node": "n1",
            "cpu_percent_avg": cpu, "mem_used_avg": 2.0, "mem_used_max": 3.0, "mem_total": 4.0,
            "mem_pressure_max": 0.75}  # fmt: skip


def test_old_rollups_expire_and_summaries_stay(tmp_path):
    old, recent = NOW - timedelta(days=500), NOW - timedelta(minutes=2)
    with duckdb.connect(str(tmp_path / "r.duckdb")) as connection:
        ensure_schema(connection)
        for minute in (old, recent):
            connection.execute(
                "INSERT INTO node_minute (minute, cluster_id, session_name, node) VALUES (?, '', 's1', 'n1')",
                [minute.replace(tzinfo=None)],
            )
        refresh_summaries(connection, NOW)
        assert delete_minutes_before(connection, NOW - timedelta(days=400)) == 1
        remaining = connection.execute("SELECT COUNT(*) FROM node_minute").fetchall()
        summary = connection.execute("SELECT first_seen FROM session_summary").fetchall()
    assert remaining == [(1,)] and summary == [(old.replace(tzinfo=None),)]


def test_a_window_is_replaced_whole_and_derived_columns_computed_on_write(tmp_path):
    window = Window(NOW, NOW + timedelta(hours=1))
    pulled = {table.name: [] for table in MINUTE_TABLES}
    pulled["node_minute"] = [
        node_minute(NOW),
        node_minute(NOW + timedelta(minutes=1)),
        node_minute(NOW - timedelta(minutes=1)),
    ]
    with duckdb.connect(str(tmp_path / "r.duckdb")) as connection:
        ensure_schema(connection)
        first = replace_window(connection, window, pulled)
        pulled["node_minute"] = [node_minute(NOW, cpu=70.0)]
        again = replace_window(connection, window, pulled)
        rows = connection.execute(
            "SELECT minute, cpu_percent_avg, mem_pressure_avg, mem_pressure_max FROM node_minute"
        ).fetchall()
    assert first.rows["node_minute"] == 2, "the minute before the window is not written"
    assert again.rows["node_minute"] == 1 and again.sessions == ["s1"]
    assert rows == [(NOW.replace(tzinfo=None), 70.0, 0.5, 0.75)]


def test_ray_jobs_are_recorded_and_their_tasks_taken_once_after_they_end(tmp_path):
    fixtures = Path(__file__).parents[1] / "fixtures" / "rayapi"
    jobs = parse_jobs(json.loads((fixtures / "jobs.json").read_text()))
    summary = parse_task_summary("02000000", json.loads((fixtures / "summary_workload.json").read_text()))
    with duckdb.connect(str(tmp_path / "r.duckdb")) as connection:
        ensure_schema(connection)
        awaiting = jobs_awaiting_tasks(connection, "", "s1", jobs)
        assert awaiting == ["02000000", "03000000"], "ended jobs with an id; the pending one has none yet"
        recorded = record_ray_jobs(connection, "", "s1", jobs, [summary], NOW)
        assert jobs_awaiting_tasks(connection, "", "s1", jobs) == ["03000000"]
        again = record_ray_jobs(connection, "", "s1", jobs, [], NOW + timedelta(minutes=5))
        rows = connection.execute(
            "SELECT job_id, job_type, status, duration_s > 0, driver_exit_code, tasks_finished, tasks_failed, "
            "tasks_complete, tasks_recorded_at FROM ray_jobs ORDER BY job_id"
        ).fetchall()
        tasks = dict(
            ((name, state), n)
            for name, state, n in connection.execute("SELECT task_name, state, tasks FROM ray_job_tasks").fetchall()
        )
    assert recorded.jobs == again.jobs == 3 and recorded.tasks_recorded_for == ["02000000"]
    assert rows == [
        ("02000000", "SUBMISSION", "SUCCEEDED", True, 0, 36, 4, True, NOW.replace(tzinfo=None)),
        ("03000000", "DRIVER", "SUCCEEDED", True, None, None, None, None, None),
        # Its entrypoint failed before a driver started, so Ray never gave it a job id; the pending one waits.
        ("rx_fail", "SUBMISSION", "FAILED", True, 3, None, None, None, None),
    ]
    assert tasks == summary.by_name_and_state() and tasks[("fail", "FAILED")] == 4
