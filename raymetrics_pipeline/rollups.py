"""Minute rollups of Ray's metrics: aggregated by the query layer, stored in DuckDB.

The aggregation runs where the rows are (Parseable, or DataFusion over the local store);
DuckDB only keeps the results. Everything is bucketed by sample time (``time_unix_nano``),
so a point replayed after an outage lands in the minute it was measured, not the minute it
arrived. One window (an hour) is replaced in one transaction, so re-running it is idempotent.

Table names and key columns are the public interface for reporting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa

from raymetrics_pipeline.query import MetricsQuery

# How long after its sample time a point may still arrive (replayed from the spool after an
# outage); every window is pulled with an ingest-time window this much wider.
LATE_ARRIVAL = timedelta(hours=6)
# Ray node clocks and Parseable's may disagree a little: sample times a bit after ingest.
CLOCK_SKEW = timedelta(minutes=5)
# The level before a window's first minute, for ``entered``: looked for this far back.
LEVEL_LOOKBACK = timedelta(minutes=10)
# Task states a task never leaves: a drop in their level is a counter reset, not tasks leaving.
TERMINAL_TASK_STATES = ("FINISHED", "FAILED")
MINUTE_TABLES = ("node_minute", "task_state_minute", "object_store_minute", "job_minute")

# Columns the rollups read, beyond the identity ones ``ray_points`` derives.
REQUIRED_COLUMNS = ("metric_name", "data_point_value", "time_unix_nano", "p_timestamp")
_OPTIONAL_TASK_SERIES_COLUMNS = ("IsRetry", "Source", "Component")

SCHEMA = """
CREATE TABLE IF NOT EXISTS node_minute (
    minute TIMESTAMP NOT NULL, cluster_id VARCHAR NOT NULL, session_name VARCHAR NOT NULL, node VARCHAR NOT NULL,
    cpu_percent_avg DOUBLE, cpu_percent_max DOUBLE, cpu_count DOUBLE,
    mem_used_avg DOUBLE, mem_used_max DOUBLE, mem_total DOUBLE, mem_pressure_avg DOUBLE, mem_pressure_max DOUBLE,
    samples BIGINT,
    PRIMARY KEY (minute, cluster_id, session_name, node));
CREATE TABLE IF NOT EXISTS task_state_minute (
    minute TIMESTAMP NOT NULL, cluster_id VARCHAR NOT NULL, session_name VARCHAR NOT NULL, job_id VARCHAR NOT NULL,
    task_name VARCHAR NOT NULL, state VARCHAR NOT NULL, tasks DOUBLE, entered DOUBLE,
    PRIMARY KEY (minute, cluster_id, session_name, job_id, task_name, state));
CREATE TABLE IF NOT EXISTS object_store_minute (
    minute TIMESTAMP NOT NULL, cluster_id VARCHAR NOT NULL, session_name VARCHAR NOT NULL, node VARCHAR NOT NULL,
    object_state VARCHAR NOT NULL, location VARCHAR NOT NULL, bytes_avg DOUBLE, bytes_max DOUBLE,
    node_used_bytes DOUBLE, node_available_bytes DOUBLE, node_pressure DOUBLE, node_spilled_bytes DOUBLE,
    PRIMARY KEY (minute, cluster_id, session_name, node, object_state, location));
CREATE TABLE IF NOT EXISTS job_minute (
    minute TIMESTAMP NOT NULL, cluster_id VARCHAR NOT NULL, session_name VARCHAR NOT NULL, job_id VARCHAR NOT NULL,
    job_duration_s DOUBLE, actors_alive DOUBLE, tasks_running DOUBLE,
    PRIMARY KEY (minute, cluster_id, session_name, job_id));
"""


@dataclass(frozen=True)
class Window:
    """Sample times ``[start, end)``: one hourly partition."""

    start: datetime
    end: datetime

    def ingest_window(self, now: datetime) -> tuple[datetime, datetime]:
        """The ``p_timestamp`` window that holds every point sampled in this one, late ones included;
        it ends a minute in the future so the current minute is read too."""
        return self.start - CLOCK_SKEW, min(self.end + LATE_ARRIVAL, now + timedelta(minutes=2))


def _at(moment: datetime) -> str:
    return f"TIMESTAMP '{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}'"


def _sample_filter(start: datetime, end: datetime) -> str:
    return f"time_unix_nano >= {_at(start)} AND time_unix_nano < {_at(end)}"


def _label(name: str, columns: set[str]) -> str:
    """A Ray label as a SQL value; ``''`` when no row in the dataset has carried it yet (no task run so far)."""
    return f"COALESCE(\"{name}\", '')" if name in columns else "''"


def _value_of(metric: str, aggregate: str, name: str) -> str:
    return f"{aggregate}(CASE WHEN metric_name = '{metric}' THEN data_point_value END) AS {name}"


def node_minute_sql(window: Window) -> str:
    return f"""
        SELECT DATE_TRUNC('minute', time_unix_nano) AS minute, ray_cluster AS cluster_id,
               ray_session AS session_name, ray_node AS node,
               {_value_of("ray_node_cpu_utilization", "AVG", "cpu_percent_avg")},
               {_value_of("ray_node_cpu_utilization", "MAX", "cpu_percent_max")},
               {_value_of("ray_node_cpu_count", "MAX", "cpu_count")},
               {_value_of("ray_node_mem_used", "AVG", "mem_used_avg")},
               {_value_of("ray_node_mem_used", "MAX", "mem_used_max")},
               {_value_of("ray_node_mem_total", "MAX", "mem_total")},
               {_value_of("ray_node_cpu_utilization", "COUNT", "samples")}
        FROM ray_points
        WHERE metric_name IN ('ray_node_cpu_utilization', 'ray_node_cpu_count', 'ray_node_mem_used',
                              'ray_node_mem_total')
          AND {_sample_filter(window.start, window.end)}
        GROUP BY 1, 2, 3, 4"""


def task_level_sql(window: Window, columns: set[str]) -> str:
    """Each ``ray_tasks`` group's level at the end of every minute: the last value of each series
    in the minute, summed over series. ``ray_tasks`` is a level, so summing scrapes would count a
    task once per scrape. Starts ``LEVEL_LOOKBACK`` early so the first minute has a level before it."""
    series = [f'"{name}"' for name in _OPTIONAL_TASK_SERIES_COLUMNS if name in columns] + ["ray_node"]
    return f"""
        WITH series_level AS (
            SELECT DATE_TRUNC('minute', time_unix_nano) AS minute, ray_cluster AS cluster_id,
                   ray_session AS session_name, ray_job AS job_id, {_label("Name", columns)} AS task_name,
                   {_label("State", columns)} AS state,
                   {", ".join(series)}, LAST_VALUE(data_point_value ORDER BY time_unix_nano) AS level
            FROM ray_points
            WHERE metric_name = 'ray_tasks' AND {_sample_filter(window.start - LEVEL_LOOKBACK, window.end)}
            GROUP BY {", ".join(str(i) for i in range(1, 7 + len(series)))})
        SELECT minute, cluster_id, session_name, job_id, task_name, state, SUM(level) AS tasks
        FROM series_level GROUP BY 1, 2, 3, 4, 5, 6"""


def object_store_sql(window: Window, columns: set[str]) -> str:
    return f"""
        SELECT DATE_TRUNC('minute', time_unix_nano) AS minute, ray_cluster AS cluster_id,
               ray_session AS session_name, ray_node AS node, {_label("ObjectState", columns)} AS object_state,
               {_label("Location", columns)} AS location, AVG(data_point_value) AS bytes_avg,
               MAX(data_point_value) AS bytes_max
        FROM ray_points
        WHERE metric_name = 'ray_object_store_memory' AND {_sample_filter(window.start, window.end)}
        GROUP BY 1, 2, 3, 4, 5, 6"""


def object_store_node_sql(window: Window, columns: set[str]) -> str:
    return f"""
        SELECT DATE_TRUNC('minute', time_unix_nano) AS minute, ray_cluster AS cluster_id,
               ray_session AS session_name, ray_node AS node,
               {_value_of("ray_object_store_used_memory", "AVG", "node_used_bytes")},
               {_value_of("ray_object_store_available_memory", "AVG", "node_available_bytes")},
               MAX(CASE WHEN metric_name = 'ray_spill_manager_objects_bytes' AND {_label("State", columns)} = 'Spilled'
                   THEN data_point_value END) AS node_spilled_bytes
        FROM ray_points
        WHERE metric_name IN ('ray_object_store_used_memory', 'ray_object_store_available_memory',
                              'ray_spill_manager_objects_bytes')
          AND {_sample_filter(window.start, window.end)}
        GROUP BY 1, 2, 3, 4"""


def job_minute_sql(window: Window, columns: set[str]) -> str:
    """What Ray labels with a job: its duration, its live actors, its running tasks (last values)."""
    return f"""
        WITH series_level AS (
            SELECT DATE_TRUNC('minute', time_unix_nano) AS minute, ray_cluster AS cluster_id,
                   ray_session AS session_name, ray_job AS job_id, metric_name, {_label("State", columns)} AS state,
                   {_label("Name", columns)} AS name,
                   ray_node, LAST_VALUE(data_point_value ORDER BY time_unix_nano) AS level
            FROM ray_points
            WHERE metric_name IN ('ray_job_duration_s', 'ray_actors', 'ray_tasks') AND ray_job <> ''
              AND {_sample_filter(window.start, window.end)}
            GROUP BY 1, 2, 3, 4, 5, 6, 7, 8)
        SELECT minute, cluster_id, session_name, job_id,
               MAX(CASE WHEN metric_name = 'ray_job_duration_s' THEN level END) AS job_duration_s,
               SUM(CASE WHEN metric_name = 'ray_actors' AND state LIKE 'ALIVE%' THEN level END) AS actors_alive,
               SUM(CASE WHEN metric_name = 'ray_tasks' AND state LIKE 'RUNNING%' THEN level END) AS tasks_running
        FROM series_level GROUP BY 1, 2, 3, 4"""


def _sql(connection: duckdb.DuckDBPyConnection, sql: str, parameters=None) -> list[tuple]:
    """Run one statement to the end: DuckDB 2 refuses new work while a result is left unread."""
    return connection.execute(sql, parameters).fetchall()


def _arrow(rows: list[dict], columns: Sequence[str]) -> pa.Table:
    return pa.table({name: [row.get(name) for row in rows] for name in columns})


@dataclass
class RollupReport:
    rows: dict[str, int]
    sessions: list[str]
    first_minute: datetime | None
    last_minute: datetime | None


def pull(query: MetricsQuery, window: Window, now: datetime) -> dict[str, list[dict]]:
    """The window's minute aggregates from the query layer, by table (task levels before ``entered``)."""
    ingest_start, ingest_end = window.ingest_window(now)
    columns = query.columns(ingest_start, ingest_end)

    def run(sql: str) -> list[dict]:
        return query.query(sql, ingest_start, ingest_end)

    return {
        "node_minute": run(node_minute_sql(window)),
        "task_levels": run(task_level_sql(window, columns)),
        "object_store_minute": run(object_store_sql(window, columns)),
        "object_store_node": run(object_store_node_sql(window, columns)),
        "job_minute": run(job_minute_sql(window, columns)),
    }


def missing_columns(query: MetricsQuery, window: Window, now: datetime) -> list[str]:
    """Columns the rollups need that the dataset lacks over this window's ingest time."""
    columns = query.columns(*window.ingest_window(now))
    return [name for name in REQUIRED_COLUMNS if name not in columns]


def replace_window(
    connection: duckdb.DuckDBPyConnection, window: Window, pulled: dict[str, list[dict]]
) -> RollupReport:
    """Delete the window's minutes from every table and insert the pulled ones, in one transaction."""
    _sql(connection, SCHEMA)
    incoming = {
        "node_minute": _arrow(pulled["node_minute"], NODE_COLUMNS),
        "task_levels": _arrow(pulled["task_levels"], TASK_LEVEL_COLUMNS),
        "object_store_minute": _arrow(pulled["object_store_minute"], OBJECT_STORE_COLUMNS),
        "object_store_node": _arrow(pulled["object_store_node"], OBJECT_STORE_NODE_COLUMNS),
        "job_minute": _arrow(pulled["job_minute"], JOB_COLUMNS),
    }
    for name, table in incoming.items():
        connection.register(f"incoming_{name}", table)
    bounds = [window.start.astimezone(UTC).replace(tzinfo=None), window.end.astimezone(UTC).replace(tzinfo=None)]
    _sql(connection, "BEGIN TRANSACTION")
    try:
        for table in MINUTE_TABLES:
            _sql(connection, f"DELETE FROM {table} WHERE minute >= ? AND minute < ?", bounds)
        _sql(connection, INSERT_NODE_MINUTE)
        _sql(connection, INSERT_TASK_STATE_MINUTE, bounds)
        _sql(connection, INSERT_OBJECT_STORE_MINUTE)
        _sql(connection, INSERT_JOB_MINUTE)
        _sql(connection, "COMMIT")
    except BaseException:
        _sql(connection, "ROLLBACK")
        raise
    finally:
        for name in incoming:
            connection.unregister(f"incoming_{name}")
    in_window = "WHERE minute >= ? AND minute < ?"
    counts = {t: _sql(connection, f"SELECT COUNT(*) FROM {t} {in_window}", bounds)[0][0] for t in MINUTE_TABLES}
    ((sessions, first, last),) = _sql(
        connection,
        f"SELECT LIST(DISTINCT session_name ORDER BY session_name), MIN(minute), MAX(minute) "
        f"FROM node_minute {in_window}",
        bounds,
    )
    return RollupReport(counts, sessions or [], first, last)


NODE_COLUMNS = (
    "minute", "cluster_id", "session_name", "node", "cpu_percent_avg", "cpu_percent_max", "cpu_count",
    "mem_used_avg", "mem_used_max", "mem_total", "samples",
)  # fmt: skip
TASK_LEVEL_COLUMNS = ("minute", "cluster_id", "session_name", "job_id", "task_name", "state", "tasks")
OBJECT_STORE_COLUMNS = (
    "minute", "cluster_id", "session_name", "node", "object_state", "location", "bytes_avg", "bytes_max",
)  # fmt: skip
OBJECT_STORE_NODE_COLUMNS = (
    "minute", "cluster_id", "session_name", "node", "node_used_bytes", "node_available_bytes", "node_spilled_bytes",
)  # fmt: skip
JOB_COLUMNS = ("minute", "cluster_id", "session_name", "job_id", "job_duration_s", "actors_alive", "tasks_running")

INSERT_NODE_MINUTE = """
    INSERT INTO node_minute
    SELECT CAST(minute AS TIMESTAMP), cluster_id, session_name, node, cpu_percent_avg, cpu_percent_max, cpu_count,
           mem_used_avg, mem_used_max, mem_total, mem_used_avg / NULLIF(mem_total, 0),
           mem_used_max / NULLIF(mem_total, 0), samples
    FROM incoming_node_minute"""
# ``entered``: the rise of the level since the group's previous minute (found up to LEVEL_LOOKBACK
# back); for terminal states a fall is a counter reset (a restarted raylet), so the whole level is
# new; a group seen for the first time entered with its whole level.
INSERT_TASK_STATE_MINUTE = f"""
    INSERT INTO task_state_minute
    SELECT minute, cluster_id, session_name, job_id, task_name, state, tasks,
           CASE WHEN previous IS NULL THEN tasks
                WHEN tasks >= previous THEN tasks - previous
                WHEN state IN {TERMINAL_TASK_STATES} THEN tasks
                ELSE 0 END
    FROM (SELECT CAST(minute AS TIMESTAMP) AS minute, cluster_id, session_name, job_id, task_name, state, tasks,
                 LAG(tasks) OVER (PARTITION BY cluster_id, session_name, job_id, task_name, state
                                  ORDER BY CAST(minute AS TIMESTAMP)) AS previous
          FROM incoming_task_levels)
    WHERE minute >= ? AND minute < ?"""
INSERT_OBJECT_STORE_MINUTE = """
    INSERT INTO object_store_minute
    SELECT CAST(o.minute AS TIMESTAMP), o.cluster_id, o.session_name, o.node, o.object_state, o.location,
           o.bytes_avg, o.bytes_max, n.node_used_bytes, n.node_available_bytes,
           n.node_used_bytes / NULLIF(n.node_used_bytes + n.node_available_bytes, 0), n.node_spilled_bytes
    FROM incoming_object_store_minute o LEFT JOIN incoming_object_store_node n
      ON o.minute = n.minute AND o.cluster_id = n.cluster_id AND o.session_name = n.session_name AND o.node = n.node"""
INSERT_JOB_MINUTE = """
    INSERT INTO job_minute
    SELECT CAST(minute AS TIMESTAMP), cluster_id, session_name, job_id, job_duration_s, actors_alive, tasks_running
    FROM incoming_job_minute"""


SUMMARY_SCHEMA = """
CREATE TABLE IF NOT EXISTS session_summary (
    cluster_id VARCHAR NOT NULL, session_name VARCHAR NOT NULL, first_seen TIMESTAMP, last_seen TIMESTAMP,
    duration_minutes DOUBLE, nodes BIGINT, cpu_percent_avg DOUBLE, cpu_percent_p95 DOUBLE, cpu_percent_max DOUBLE,
    peak_mem_pressure DOUBLE, tasks_finished DOUBLE, tasks_failed DOUBLE, failure_rate DOUBLE,
    peak_object_store_pressure DOUBLE, spilled_bytes DOUBLE, updated_at TIMESTAMP,
    PRIMARY KEY (cluster_id, session_name));
CREATE TABLE IF NOT EXISTS job_summary (
    cluster_id VARCHAR NOT NULL, session_name VARCHAR NOT NULL, job_id VARCHAR NOT NULL, first_seen TIMESTAMP,
    last_seen TIMESTAMP, duration_s DOUBLE, nodes BIGINT, cpu_percent_avg DOUBLE, cpu_percent_p95 DOUBLE,
    cpu_percent_max DOUBLE, peak_mem_pressure DOUBLE, peak_actors_alive DOUBLE, peak_tasks_running DOUBLE,
    tasks_finished DOUBLE, tasks_failed DOUBLE, peak_object_store_pressure DOUBLE, spilled_bytes DOUBLE,
    updated_at TIMESTAMP,
    PRIMARY KEY (cluster_id, session_name, job_id));
"""
# Sessions still reporting this recently are summarised again on every refresh; older ones keep
# their summary even after rollup retention has deleted their minutes.
ACTIVE_WITHIN = timedelta(days=2)

_REFRESHED_SESSIONS = """
    CREATE OR REPLACE TEMP TABLE refreshed AS
    SELECT cluster_id, session_name FROM node_minute GROUP BY 1, 2
    HAVING MAX(minute) >= $active_since
        OR (cluster_id, session_name) NOT IN (SELECT (cluster_id, session_name) FROM session_summary)"""
_SESSION_SUMMARY = """
    INSERT INTO session_summary
    WITH nodes AS (
        SELECT cluster_id, session_name, MIN(minute) AS first_seen, MAX(minute) AS last_seen,
               COUNT(DISTINCT node) AS nodes, AVG(cpu_percent_avg) AS cpu_percent_avg,
               QUANTILE_CONT(cpu_percent_avg, 0.95) AS cpu_percent_p95, MAX(cpu_percent_max) AS cpu_percent_max,
               MAX(mem_pressure_max) AS peak_mem_pressure
        FROM node_minute SEMI JOIN refreshed USING (cluster_id, session_name) GROUP BY 1, 2),
    tasks AS (
        SELECT cluster_id, session_name, SUM(entered) FILTER (WHERE state = 'FINISHED') AS finished,
               SUM(entered) FILTER (WHERE state = 'FAILED') AS failed
        FROM task_state_minute GROUP BY 1, 2),
    store AS (
        SELECT cluster_id, session_name, MAX(node_pressure) AS pressure, MAX(node_spilled_bytes) AS spilled
        FROM object_store_minute GROUP BY 1, 2)
    SELECT n.cluster_id, n.session_name, first_seen, last_seen,
           (EPOCH(last_seen) - EPOCH(first_seen)) / 60 + 1, nodes, cpu_percent_avg, cpu_percent_p95, cpu_percent_max,
           peak_mem_pressure, COALESCE(finished, 0), COALESCE(failed, 0),
           COALESCE(failed, 0) / NULLIF(COALESCE(finished, 0) + COALESCE(failed, 0), 0), pressure, spilled, $now
    FROM nodes n LEFT JOIN tasks USING (cluster_id, session_name) LEFT JOIN store USING (cluster_id, session_name)"""
_JOB_SUMMARY = """
    INSERT INTO job_summary
    WITH jobs AS (
        SELECT cluster_id, session_name, job_id, MIN(minute) AS first_seen, MAX(minute) AS last_seen,
               MAX(job_duration_s) AS duration_s, MAX(actors_alive) AS peak_actors_alive,
               MAX(tasks_running) AS peak_tasks_running
        FROM job_minute SEMI JOIN refreshed USING (cluster_id, session_name) GROUP BY 1, 2, 3),
    during AS (
        SELECT j.cluster_id, j.session_name, j.job_id, COUNT(DISTINCT n.node) AS nodes,
               AVG(n.cpu_percent_avg) AS cpu_percent_avg, QUANTILE_CONT(n.cpu_percent_avg, 0.95) AS cpu_percent_p95,
               MAX(n.cpu_percent_max) AS cpu_percent_max, MAX(n.mem_pressure_max) AS peak_mem_pressure
        FROM jobs j JOIN node_minute n ON n.cluster_id = j.cluster_id AND n.session_name = j.session_name
             AND n.minute BETWEEN j.first_seen AND j.last_seen
        GROUP BY 1, 2, 3),
    store AS (
        SELECT j.cluster_id, j.session_name, j.job_id, MAX(o.node_pressure) AS pressure,
               MAX(o.node_spilled_bytes) AS spilled
        FROM jobs j JOIN object_store_minute o ON o.cluster_id = j.cluster_id AND o.session_name = j.session_name
             AND o.minute BETWEEN j.first_seen AND j.last_seen
        GROUP BY 1, 2, 3),
    tasks AS (
        SELECT cluster_id, session_name, job_id, SUM(entered) FILTER (WHERE state = 'FINISHED') AS finished,
               SUM(entered) FILTER (WHERE state = 'FAILED') AS failed
        FROM task_state_minute WHERE job_id <> '' GROUP BY 1, 2, 3)
    SELECT cluster_id, session_name, job_id, first_seen, last_seen, duration_s, nodes, cpu_percent_avg,
           cpu_percent_p95, cpu_percent_max, peak_mem_pressure, peak_actors_alive, peak_tasks_running,
           COALESCE(finished, 0), COALESCE(failed, 0), pressure, spilled, $now
    FROM jobs LEFT JOIN during USING (cluster_id, session_name, job_id)
         LEFT JOIN store USING (cluster_id, session_name, job_id)
         LEFT JOIN tasks USING (cluster_id, session_name, job_id)"""


def refresh_summaries(connection: duckdb.DuckDBPyConnection, now: datetime) -> dict[str, int]:
    """Summarise again every session still active (or not summarised yet), one transaction."""
    _sql(connection, SCHEMA)
    _sql(connection, SUMMARY_SCHEMA)
    naive_now = now.astimezone(UTC).replace(tzinfo=None)
    parameters = {"now": naive_now}
    _sql(connection, "BEGIN TRANSACTION")
    try:
        _sql(connection, _REFRESHED_SESSIONS, {"active_since": naive_now - ACTIVE_WITHIN})
        for table in ("session_summary", "job_summary"):
            _sql(connection, f"DELETE FROM {table} WHERE (cluster_id, session_name) IN (SELECT * FROM refreshed)")
        _sql(connection, _SESSION_SUMMARY, parameters)
        _sql(connection, _JOB_SUMMARY, parameters)
        _sql(connection, "COMMIT")
    except BaseException:
        _sql(connection, "ROLLBACK")
        raise
    return {
        table: _sql(connection, f"SELECT COUNT(*) FROM {table}")[0][0] for table in ("session_summary", "job_summary")
    }


def delete_minutes_before(connection: duckdb.DuckDBPyConnection, cutoff: datetime) -> int:
    """Rollup retention: drop minute rows older than ``cutoff``; summaries stay."""
    _sql(connection, SCHEMA)
    bound = [cutoff.astimezone(UTC).replace(tzinfo=None)]
    deleted = 0
    for table in MINUTE_TABLES:
        deleted += _sql(connection, f"DELETE FROM {table} WHERE minute < ?", bound)[0][0]
    return deleted
