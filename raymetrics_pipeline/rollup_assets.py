"""Rollup assets: minute tables per hourly partition, session and job summaries, the run comparison.

Every asset that touches ``rollups.duckdb`` runs in the ``duckdb`` pool (limit 1 in the repo's
``dagster.yaml``) and holds its connection only while it writes.
"""

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from raymetrics_pipeline import rollups
from raymetrics_pipeline.assets import OWNERS, RAYMETRICS_ASSET_KEY
from raymetrics_pipeline.comparison import compare
from raymetrics_pipeline.resources import LocalDataResource, ParseableResource, RollupSettings, metrics_query

HOURLY = dg.HourlyPartitionsDefinition(start_date="2026-01-01-00:00", end_offset=1)
DUCKDB_POOL = "duckdb"
SCHEMA_CHECK = "rollup_columns_present"
_LOCK_HOLDER_RE = re.compile(r"Conflicting lock is held in (.*?)(?: \(PID (\d+)\))?(?: by user .*)?\. ")
LOCK_WAIT_SECONDS = 300.0


@contextmanager
def rollups_connection(
    database: DuckDBResource, log, wait_seconds: float = LOCK_WAIT_SECONDS
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the rollups file; while another process holds its lock, wait and say who."""
    Path(database.database).parent.mkdir(parents=True, exist_ok=True)
    deadline, delay = time.monotonic() + wait_seconds, 1.0
    while True:
        try:
            duckdb.connect(database.database).close()
            break
        except duckdb.IOException as error:
            match = _LOCK_HOLDER_RE.search(str(error))
            holder = f"{match.group(1)} (PID {match.group(2)})" if match and match.group(2) else "another process"
            if time.monotonic() + delay > deadline:
                raise dg.Failure(
                    description=(
                        f"{database.database} stayed locked by {holder} for {wait_seconds:.0f} s. DuckDB lets one "
                        "process write at a time: close notebooks or tools holding the file, then re-run."
                    )
                ) from error
            log.warning(f"{database.database} is locked by {holder}; waiting {delay:.0f} s and trying again")
            time.sleep(delay)
            delay = min(delay * 2, 15.0)
    with database.get_connection() as connection:
        yield connection


def _minute_spec(name: str, description: str) -> dg.AssetSpec:
    return dg.AssetSpec(
        name,
        deps=[RAYMETRICS_ASSET_KEY],
        description=description,
        group_name="rollups",
        kinds={"duckdb"},
        owners=OWNERS,
    )


MINUTE_SPECS = [
    _minute_spec(
        "node_minute",
        "Per node and minute (by sample time): CPU % avg and max, CPU count, memory used avg and max, total and "
        "pressure. Key: minute, cluster_id, session_name, node.",
    ),
    _minute_spec(
        "task_state_minute",
        "Per task name, state and job: `tasks` = the level at the minute's end (last value per series, summed), "
        "`entered` = tasks that entered the state in the minute. Ray 2.60 gives finished and failed tasks "
        "JobId='', so look for failures by task_name. Key: minute, cluster_id, session_name, job_id, task_name, state.",
    ),
    _minute_spec(
        "object_store_minute",
        "Object store bytes per node, object state and location (avg, max), with the node's used and available "
        "bytes, pressure = used / (used + available), and spilled bytes. "
        "Key: minute, cluster_id, session_name, node, object_state, location.",
    ),
    _minute_spec(
        "job_minute",
        "Per Ray job and minute: job duration, live actors, running tasks. "
        "Key: minute, cluster_id, session_name, job_id.",
    ),
]


def _hours(window: dg.TimeWindow) -> Iterator[rollups.Window]:
    start = window.start.astimezone(UTC)
    while start < window.end:
        yield rollups.Window(start, start + timedelta(hours=1))
        start += timedelta(hours=1)


@dg.multi_asset(
    specs=MINUTE_SPECS,
    check_specs=[
        dg.AssetCheckSpec(
            SCHEMA_CHECK,
            asset="node_minute",
            blocking=True,
            description="The raymetrics dataset has the columns the rollups read; checked before anything is written.",
        )
    ],
    partitions_def=HOURLY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=DUCKDB_POOL,
    can_subset=False,
)
def minute_rollups(
    context: dg.AssetExecutionContext,
    parseable: ParseableResource,
    local_data: LocalDataResource,
    rollups_db: DuckDBResource,
    rollup_settings: RollupSettings,
):
    """Pull each hour's minute aggregates through the query layer and replace that hour in DuckDB."""
    query = metrics_query(parseable, local_data)
    now = datetime.now(UTC)
    windows = list(_hours(context.partition_time_window))
    missing = sorted({name for window in windows for name in rollups.missing_columns(query, window, now)})
    yield dg.AssetCheckResult(
        check_name=SCHEMA_CHECK,
        asset_key="node_minute",
        passed=not missing,
        metadata={"missing_columns": dg.MetadataValue.json(missing), "dataset": query.where()},
    )
    if missing:
        raise dg.Failure(
            description=(
                f"{query.where()} lacks the columns {', '.join(missing)} that the rollups read over "
                f"{windows[0].start:%Y-%m-%d %H:%M}–{windows[-1].end:%H:%M} UTC: has scraping run there?"
            )
        )
    reports, pull_seconds = [], 0.0
    for window in windows:  # an hour at a time, so a week's backfill never holds more than an hour of rows
        started = time.monotonic()
        pulled = rollups.pull(query, window, now)
        pull_seconds += time.monotonic() - started
        with rollups_connection(rollups_db, context.log) as connection:
            reports.append(rollups.replace_window(connection, window, pulled))
    with rollups_connection(rollups_db, context.log) as connection:
        expired = rollups.delete_minutes_before(connection, now - timedelta(days=rollup_settings.retention_days))
    sessions = sorted({session for report in reports for session in report.sessions})
    minutes = [minute for report in reports for minute in (report.first_minute, report.last_minute) if minute]
    for spec in MINUTE_SPECS:
        table = spec.key.path[-1]
        yield dg.MaterializeResult(
            asset_key=spec.key,
            metadata={
                "dagster/row_count": sum(report.rows[table] for report in reports),
                "hours": len(windows),
                "sample_time_from": windows[0].start.isoformat(),
                "sample_time_to": windows[-1].end.isoformat(),
                "sessions": dg.MetadataValue.json(sessions),
                "first_minute": str(min(minutes)) if minutes else "none",
                "last_minute": str(max(minutes)) if minutes else "none",
                "source": query.where(),
                "query_seconds": round(pull_seconds, 3),
                "expired_rows": expired,
                "database": rollups_db.database,
            },
        )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "session_summary",
            deps=MINUTE_SPECS,
            description="One row per Ray session: first and last seen, duration, nodes, CPU avg / p95 / max, peak "
            "memory pressure, tasks finished and failed with failure rate, peak object store pressure, spilled bytes. "
            "Kept after the minute rows expire.",
            group_name="reports",
            kinds={"duckdb"},
            owners=OWNERS,
        ),
        dg.AssetSpec(
            "job_summary",
            deps=MINUTE_SPECS,
            description="One row per Ray job (what carries JobId): first and last seen, duration, peak actors and "
            "running tasks, and the session's CPU, memory and object store while the job ran.",
            group_name="reports",
            kinds={"duckdb"},
            owners=OWNERS,
        ),
    ],
    pool=DUCKDB_POOL,
    can_subset=False,
)
def summaries(context: dg.AssetExecutionContext, rollups_db: DuckDBResource):
    """Summarise again every session still reporting (and any not summarised yet)."""
    with rollups_connection(rollups_db, context.log) as connection:
        counts = rollups.refresh_summaries(connection, datetime.now(UTC))
        ((sessions, first_seen, last_seen),) = connection.execute(
            "SELECT LIST(session_name ORDER BY session_name), MIN(first_seen), MAX(last_seen) FROM session_summary"
        ).fetchall()
    for table, rows in counts.items():
        yield dg.MaterializeResult(
            asset_key=table,
            metadata={
                "dagster/row_count": rows,
                "sessions": dg.MetadataValue.json(sessions or []),
                "first_seen": str(first_seen),
                "last_seen": str(last_seen),
            },
        )


@dg.asset(
    deps=["session_summary", "job_summary", "node_minute", "task_state_minute"],
    description="Ray sessions and jobs side by side: tables, and a chart of CPU and memory since each session's "
    "start and failed tasks by task name (also saved as comparison/ray_run_comparison.png in the data folder).",
    group_name="reports",
    kinds={"duckdb", "matplotlib"},
    owners=OWNERS,
    pool=DUCKDB_POOL,
)
def ray_run_comparison(
    context: dg.AssetExecutionContext, rollups_db: DuckDBResource, local_data: LocalDataResource
) -> dg.MaterializeResult:
    with rollups_connection(rollups_db, context.log) as connection:
        result = compare(connection)
    chart = Path(local_data.data_dir) / "comparison" / "ray_run_comparison.png"
    chart.parent.mkdir(parents=True, exist_ok=True)
    chart.write_bytes(result.png)
    return dg.MaterializeResult(
        metadata={
            "comparison": dg.MetadataValue.md(result.markdown),
            "chart": dg.MetadataValue.path(str(chart)),
            "sessions": dg.MetadataValue.json([row["session_name"] for row in result.sessions]),
            "jobs": len(result.jobs),
        }
    )
