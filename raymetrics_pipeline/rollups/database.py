"""The rollups in DuckDB: schema, writes, retention, and the reads the checks make.

DuckDB lets one process write a file at a time, so callers hold a connection only while they
write (``wait_until_unlocked`` waits, saying who holds the lock). One window (an hour) is replaced
in one transaction, so re-running it is idempotent.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from raymetrics_pipeline.rayapi.models import RayJob, TaskSummary
from raymetrics_pipeline.rollups.tables import (
    ALL_TABLES,
    MINUTE_TABLES,
    NODE_MINUTE,
    SUMMARY_TABLES,
    MinuteTable,
    Table,
    Window,
)

if TYPE_CHECKING:  # DuckDB loads when a rollup is written or read: scrape runs load this module and never do
    import duckdb

# Sessions still reporting this recently are summarised again on every refresh; older ones keep
# their summary even after rollup retention has deleted their minutes.
ACTIVE_WITHIN = timedelta(days=2)
_LOCK_HOLDER_RE = re.compile(r"Conflicting lock is held in (.*?)(?: \(PID (\d+)\))?(?: by user .*)?\. ")


class RollupsLocked(Exception):
    """Another process kept the rollups file locked for longer than we could wait."""


def connect(path: str) -> duckdb.DuckDBPyConnection:
    import duckdb

    return duckdb.connect(path)


def wait_until_unlocked(path: str, wait_seconds: float, on_wait: Callable[[str], None]) -> None:
    """Return once ``path`` can be opened for writing; while another process holds it, wait and say who."""
    import duckdb

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    deadline, delay = time.monotonic() + wait_seconds, 1.0
    while True:
        try:
            connect(path).close()
            return
        except duckdb.IOException as error:
            match = _LOCK_HOLDER_RE.search(str(error))
            holder = f"{match.group(1)} (PID {match.group(2)})" if match and match.group(2) else "another process"
            if time.monotonic() + delay > deadline:
                raise RollupsLocked(
                    f"{path} stayed locked by {holder} for {wait_seconds:.0f} s. DuckDB lets one process write at "
                    "a time: close notebooks or tools holding the file, then re-run."
                ) from error
            on_wait(f"{path} is locked by {holder}; waiting {delay:.0f} s and trying again")
            time.sleep(delay)
            delay = min(delay * 2, 15.0)


def _sql(connection: duckdb.DuckDBPyConnection, sql: str, parameters=None) -> list[tuple]:
    """Run one statement to the end: DuckDB 2 refuses new work while a result is left unread."""
    return connection.execute(sql, parameters).fetchall()


def _count(connection: duckdb.DuckDBPyConnection, relation: str, parameters=None) -> int:
    return _sql(connection, f"SELECT COUNT(*) FROM {relation}", parameters)[0][0]


def _naive(moment: datetime) -> datetime:
    """DuckDB's TIMESTAMP columns hold UTC without a zone."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def create_sql(table: Table) -> str:
    columns = [f"{c.name} {c.type}{' NOT NULL' if c.key else ''}" for c in table.columns]
    return f"CREATE TABLE IF NOT EXISTS {table.name} ({', '.join(columns)}, PRIMARY KEY ({', '.join(table.keys)}))"


def ensure_schema(connection: duckdb.DuckDBPyConnection) -> None:
    """Every table, with every declared column (a column declared since the file was made is added, empty).

    Run once per connection, before the functions below, which assume the tables are there.
    """
    for table in ALL_TABLES:
        _sql(connection, create_sql(table))
        present = {name for (name,) in _sql(connection, f"SELECT name FROM pragma_table_info('{table.name}')")}
        for column in table.columns:
            if column.name not in present:
                _sql(connection, f"ALTER TABLE {table.name} ADD COLUMN {column.name} {column.type}")


def write_sql(table: MinuteTable) -> str:
    """Insert the staged pull (``staged_<name>``) for the minutes in ``[$start, $end)``, casting each pulled
    column to its type and computing the derived ones."""
    casts = ", ".join(f"CAST({c.name} AS {c.type}) AS {c.name}" for c in table.pulled)
    derived = "".join(f", {c.derived} AS {c.name}" for c in table.columns if c.derived is not None)
    return (
        f"INSERT INTO {table.name} BY NAME SELECT *{derived} FROM (SELECT {casts} FROM staged_{table.name}) "
        "WHERE minute >= $start AND minute < $end"
    )


@dataclass(frozen=True)
class WindowWritten:
    rows: dict[str, int]  # rows per table now in the window
    sessions: list[str]
    first_minute: datetime | None
    last_minute: datetime | None


def replace_window(
    connection: duckdb.DuckDBPyConnection, window: Window, pulled: dict[str, list[dict]]
) -> WindowWritten:
    """Delete the window's minutes from every minute table and insert the pulled ones, in one transaction."""
    import pyarrow as pa

    staged = {
        table.name: pa.table({c.name: [row.get(c.name) for row in pulled[table.name]] for c in table.pulled})
        for table in MINUTE_TABLES
    }
    for name, rows in staged.items():
        connection.register(f"staged_{name}", rows)
    bounds = {"start": _naive(window.start), "end": _naive(window.end)}
    _sql(connection, "BEGIN TRANSACTION")
    try:
        for table in MINUTE_TABLES:
            _sql(connection, f"DELETE FROM {table.name} WHERE minute >= $start AND minute < $end", bounds)
            _sql(connection, write_sql(table), bounds)
        _sql(connection, "COMMIT")
    except BaseException:
        _sql(connection, "ROLLBACK")
        raise
    finally:
        for name in staged:
            connection.unregister(f"staged_{name}")
    in_window = "WHERE minute >= $start AND minute < $end"
    counts = {t.name: _count(connection, f"{t.name} {in_window}", bounds) for t in MINUTE_TABLES}
    ((sessions, first, last),) = _sql(
        connection,
        f"SELECT LIST(DISTINCT session_name ORDER BY session_name), MIN(minute), MAX(minute) "
        f"FROM {NODE_MINUTE.name} {in_window}",
        bounds,
    )
    return WindowWritten(counts, sessions or [], first, last)


_REFRESHED_SESSIONS = """
    CREATE OR REPLACE TEMP TABLE refreshed AS
    SELECT cluster_id, session_name FROM node_minute GROUP BY 1, 2
    HAVING MAX(minute) >= $active_since
        OR (cluster_id, session_name) NOT IN (SELECT (cluster_id, session_name) FROM session_summary)"""


@dataclass(frozen=True)
class SummariesWritten:
    rows: dict[str, int]  # rows per summary table
    sessions: list[str]
    first_seen: datetime | None
    last_seen: datetime | None


def refresh_summaries(connection: duckdb.DuckDBPyConnection, now: datetime) -> SummariesWritten:
    """Summarise again every session still active (or not summarised yet), in one transaction."""
    naive_now = _naive(now)
    _sql(connection, "BEGIN TRANSACTION")
    try:
        _sql(connection, _REFRESHED_SESSIONS, {"active_since": naive_now - ACTIVE_WITHIN})
        for table in SUMMARY_TABLES:
            _sql(connection, f"DELETE FROM {table.name} WHERE (cluster_id, session_name) IN (SELECT * FROM refreshed)")
            _sql(connection, table.refresh, {"now": naive_now})
        _sql(connection, "COMMIT")
    except BaseException:
        _sql(connection, "ROLLBACK")
        raise
    rows = {table.name: _count(connection, table.name) for table in SUMMARY_TABLES}
    ((sessions, first, last),) = _sql(
        connection,
        "SELECT LIST(session_name ORDER BY session_name), MIN(first_seen), MAX(last_seen) FROM session_summary",
    )
    return SummariesWritten(rows, sessions or [], first, last)


# --- Ray's own figures ---------------------------------------------------------------------

_JOB_FIELDS = ("submission_id", "job_type", "entrypoint", "status", "start_time", "end_time", "duration_s",
               "driver_exit_code", "message")  # fmt: skip
_UPSERT_JOB = f"""
    INSERT INTO ray_jobs (cluster_id, session_name, job_id, {", ".join(_JOB_FIELDS)}, updated_at)
    VALUES (?, ?, ?, {", ".join("?" for _ in _JOB_FIELDS)}, ?)
    ON CONFLICT (cluster_id, session_name, job_id) DO UPDATE SET
    {", ".join(f"{name} = excluded.{name}" for name in (*_JOB_FIELDS, "updated_at"))}"""
_RECORD_TASKS = """
    UPDATE ray_jobs SET tasks_finished = ?, tasks_failed = ?, tasks_complete = ?, tasks_warning = ?,
                        tasks_recorded_at = ?
    WHERE cluster_id = ? AND session_name = ? AND job_id = ?"""


def jobs_awaiting_tasks(
    connection: duckdb.DuckDBPyConnection, cluster_id: str, session_name: str, jobs: list[RayJob]
) -> list[str]:
    """Ids of the jobs that have ended and whose tasks are not recorded yet: their State API summary is taken
    once, soon after the end, before Ray evicts their task events."""
    recorded = {
        job_id
        for (job_id,) in _sql(
            connection,
            "SELECT job_id FROM ray_jobs WHERE cluster_id = ? AND session_name = ? AND tasks_recorded_at IS NOT NULL",
            [cluster_id, session_name],
        )
    }
    return [job.job_id for job in jobs if job.job_id and job.is_terminal and job.job_id not in recorded]


@dataclass(frozen=True)
class JobsRecorded:
    jobs: int  # jobs of the session now in ray_jobs
    jobs_listed: int  # jobs Ray listed with a job id this time
    tasks_recorded_for: list[str]  # jobs whose tasks were taken this time
    partial_task_figures: list[str]  # of those, jobs Ray said it holds only part of


def record_ray_jobs(
    connection: duckdb.DuckDBPyConnection,
    cluster_id: str,
    session_name: str,
    jobs: list[RayJob],
    summaries: list[TaskSummary],
    now: datetime,
) -> JobsRecorded:
    """Write what Ray says of its jobs, and the task summaries taken, in one transaction. A job Ray has not given
    an id yet (still pending) waits for the next time; one that ended without ever getting one (its entrypoint
    failed before the driver started) is kept under its submission id, so a failed submission is never missing."""
    listed = [job for job in jobs if job.job_id or (job.is_terminal and job.submission_id)]
    _sql(connection, "BEGIN TRANSACTION")
    try:
        for job in listed:
            duration = (job.end_time - job.start_time).total_seconds() if job.start_time and job.end_time else None
            values = [job.submission_id or "", job.job_type, job.entrypoint, job.status]
            values += [_naive(t) if t else None for t in (job.start_time, job.end_time)]
            values += [duration, job.driver_exit_code, job.message]
            key = job.job_id or job.submission_id
            _sql(connection, _UPSERT_JOB, [cluster_id, session_name, key, *values, _naive(now)])
        for summary in summaries:
            where = [cluster_id, session_name, summary.job_id]
            _sql(
                connection, "DELETE FROM ray_job_tasks WHERE cluster_id = ? AND session_name = ? AND job_id = ?", where
            )
            for count in summary.counts:
                _sql(connection, "INSERT INTO ray_job_tasks VALUES (?, ?, ?, ?, ?, ?)",
                     [*where, count.task_name, count.state, count.count])  # fmt: skip
            finished, failed = (sum(c.count for c in summary.counts if c.state == s) for s in ("FINISHED", "FAILED"))
            _sql(connection, _RECORD_TASKS,
                 [finished, failed, summary.complete, summary.warning, _naive(now), *where])  # fmt: skip
        _sql(connection, "COMMIT")
    except BaseException:
        _sql(connection, "ROLLBACK")
        raise
    return JobsRecorded(
        jobs=_count(connection, "ray_jobs WHERE cluster_id = ? AND session_name = ?", [cluster_id, session_name]),
        jobs_listed=len(listed),
        tasks_recorded_for=[summary.job_id for summary in summaries],
        partial_task_figures=[summary.job_id for summary in summaries if not summary.complete],
    )


def delete_minutes_before(connection: duckdb.DuckDBPyConnection, cutoff: datetime) -> int:
    """Rollup retention: drop minute rows older than ``cutoff``; summaries stay."""
    return sum(
        _sql(connection, f"DELETE FROM {table.name} WHERE minute < ?", [_naive(cutoff)])[0][0]
        for table in MINUTE_TABLES
    )


# --- Reads for the checks ----------------------------------------------------------------


def newest_minute(connection: duckdb.DuckDBPyConnection) -> datetime | None:
    return _sql(connection, f"SELECT MAX(minute) FROM {NODE_MINUTE.name}")[0][0]


_GAPS = """
    WITH reporting AS (
        SELECT cluster_id, session_name, node, minute FROM node_minute WHERE minute >= $since),
    spans AS (
        SELECT cluster_id, session_name, node, MIN(minute) AS first, MAX(minute) AS last
        FROM reporting GROUP BY 1, 2, 3),
    expected AS (
        SELECT cluster_id, session_name, node, UNNEST(GENERATE_SERIES(first, last, INTERVAL 1 MINUTE)) AS minute
        FROM spans),
    missing AS (SELECT * FROM expected EXCEPT SELECT * FROM reporting),
    numbered AS (
        SELECT *, minute - INTERVAL 1 MINUTE * ROW_NUMBER() OVER (PARTITION BY cluster_id, session_name, node
                                                                   ORDER BY minute) AS run
        FROM missing)
    SELECT cluster_id, session_name, node, MIN(minute) AS gap_start, MAX(minute) AS gap_end, COUNT(*) AS minutes
    FROM numbered GROUP BY cluster_id, session_name, node, run ORDER BY gap_start"""


def node_gaps(connection: duckdb.DuckDBPyConnection, since: datetime) -> list[tuple]:
    """``(cluster, session, node, first missing minute, last, minutes)`` for every run of minutes a node
    missed between its first and last minute since ``since``."""
    return _sql(connection, _GAPS, {"since": _naive(since)})


@dataclass(frozen=True)
class PressureCheck:
    """Minutes in which a node used more than ``limit`` of something, with the columns that say so."""

    table: str
    column: str
    limit: float
    what: str


MEMORY_PRESSURE = PressureCheck("node_minute", "mem_pressure_max", 0.9, "memory")
OBJECT_STORE_PRESSURE = PressureCheck("object_store_minute", "node_pressure", 0.8, "object store")


def minutes_over(connection: duckdb.DuckDBPyConnection, check: PressureCheck, since: datetime) -> list[tuple]:
    """``(cluster, session, node, minute, pressure)`` above the check's limit since ``since``, worst first."""
    return _sql(
        connection,
        f"""SELECT DISTINCT cluster_id, session_name, node, minute, {check.column} FROM {check.table}
            WHERE minute >= ? AND {check.column} > ? ORDER BY {check.column} DESC, minute""",
        [_naive(since), check.limit],
    )
