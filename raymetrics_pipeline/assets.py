"""Assets: Ray's endpoints and the ``raymetrics`` dataset (external), the rollups, and the reports.

Lineage reads Ray → ``raymetrics`` → minute tables → summaries → ``ray_run_comparison``. The
scrape job reports a materialization of ``raymetrics`` for every delivery. Every asset that
touches ``rollups.duckdb`` runs in the ``duckdb`` pool (limit 1 in the repo's ``dagster.yaml``)
and holds its connection only while it writes.
"""

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from raymetrics_pipeline.metadata import materialized, metadata_from
from raymetrics_pipeline.rayapi.client import DashboardNotFound, RayApiError, RayDashboard
from raymetrics_pipeline.resources import (
    INGESTION_FRESHNESS_MINUTES,
    MetricsBackendResource,
    RayMetricsSource,
    RollupsDatabase,
    RollupSettings,
    rollup_start,
)
from raymetrics_pipeline.rollups.comparison import compare
from raymetrics_pipeline.rollups.database import (
    WindowWritten,
    jobs_awaiting_tasks,
    record_ray_jobs,
    refresh_summaries,
    replace_window,
)
from raymetrics_pipeline.rollups.pull import missing_columns, pull
from raymetrics_pipeline.rollups.tables import (
    MINUTE_TABLES,
    NODE_MINUTE,
    RAY_API_TABLES,
    SUMMARY_TABLES,
    Table,
    Window,
)

RAYMETRICS_ASSET_KEY = dg.AssetKey("raymetrics")
OWNERS = ["team:raymetrics"]
# From RAYMETRICS_ROLLUP_START_DAYS (default 7) days before today, midnight UTC, to the current hour.
HOURLY = dg.HourlyPartitionsDefinition(start_date=rollup_start(), end_offset=1)
DUCKDB_POOL = "duckdb"
SCHEMA_CHECK = "rollup_columns_present"

ray_metrics_endpoints = dg.AssetSpec(
    "ray_metrics_endpoints",
    description="Ray's Prometheus /metrics endpoints (metrics agent, dashboard, autoscaler) on every node.",
    group_name="ingest",
    kinds={"ray", "prometheus"},
    owners=OWNERS,
)


def raymetrics_in(backend: MetricsBackendResource) -> dg.AssetSpec:
    """The ``raymetrics`` dataset, showing where its rows are: a Parseable URL or a local folder."""
    return dg.AssetSpec(
        RAYMETRICS_ASSET_KEY,
        deps=[ray_metrics_endpoints],
        description=(
            "Ray metrics as OpenTelemetry data points in the Parseable dataset (PARSEABLE_STREAM, default "
            "raymetrics) or, without PARSEABLE_URL, the same rows in the embedded local store: one row per "
            "data point, columns named after Ray's label keys."
        ),
        group_name="ingest",
        kinds=backend.kinds,
        owners=OWNERS,
        metadata={"location": backend.location},
        # Asset health turns stale when no scrape run has delivered for this long (the freshness daemon,
        # every 30 s); each delivery also evaluates raymetrics_is_fresh, and the scheduled check reads the data.
        freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(minutes=INGESTION_FRESHNESS_MINUTES)),
    )


def table_spec(table: Table, deps: list, group: str) -> dg.AssetSpec:
    """A rollup table as the UI shows it: its description, key and columns, all from its declaration."""
    return dg.AssetSpec(
        table.name,
        deps=deps,
        description=f"{table.description} Key: {', '.join(table.keys)}. Columns: docs/rollup-tables.md.",
        group_name=group,
        kinds={"duckdb"},
        owners=OWNERS,
        metadata={
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(c.name, c.type, description=c.description) for c in table.columns]
            )
        },
    )


MINUTE_SPECS = [table_spec(table, [RAYMETRICS_ASSET_KEY], "rollups") for table in MINUTE_TABLES]
NODE_MINUTE_KEY = dg.AssetKey(NODE_MINUTE.name)
SUMMARY_SPECS = [table_spec(table, MINUTE_SPECS, "reports") for table in SUMMARY_TABLES]

ray_dashboard = dg.AssetSpec(
    "ray_dashboard",
    description="Ray's Jobs API and State API on the head's dashboard (RAY_DASHBOARD_URL, or found on the head "
    "node from the discovery file's session): Ray's own exact job and task figures.",
    group_name="ingest",
    kinds={"ray"},
    owners=OWNERS,
)
RAY_API_SPECS = [table_spec(table, [ray_dashboard], "reports") for table in RAY_API_TABLES]


def _hours(window: dg.TimeWindow) -> Iterator[Window]:
    start = window.start.astimezone(UTC)
    while start < window.end:
        yield Window(start, start + timedelta(hours=1))
        start += timedelta(hours=1)


@dg.multi_asset(
    specs=MINUTE_SPECS,
    check_specs=[
        dg.AssetCheckSpec(
            SCHEMA_CHECK,
            asset=NODE_MINUTE_KEY,
            blocking=True,
            description="The dataset has the columns the rollups read; checked before anything is written.",
        )
    ],
    partitions_def=HOURLY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=DUCKDB_POOL,
    can_subset=False,
)
def minute_rollups(context: dg.AssetExecutionContext, backend: MetricsBackendResource, rollups_db: RollupsDatabase):
    """Pull each hour's minute aggregates through the query layer and replace that hour in DuckDB."""
    now = datetime.now(UTC)
    windows = list(_hours(context.partition_time_window))
    written: list[WindowWritten] = []
    pull_seconds = 0.0
    with backend.query() as query:
        missing = sorted({name for window in windows for name in missing_columns(query, window, now)})
        yield dg.AssetCheckResult(
            check_name=SCHEMA_CHECK,
            asset_key=NODE_MINUTE_KEY,
            passed=not missing,
            metadata={"missing_columns": dg.MetadataValue.json(missing), "dataset": query.location},
        )
        if missing:
            raise dg.Failure(
                description=(
                    f"{query.location} lacks the columns {', '.join(missing)} that the rollups read over "
                    f"{windows[0].start:%Y-%m-%d %H:%M}–{windows[-1].end:%H:%M} UTC: has scraping run there?"
                )
            )
        for window in windows:  # an hour at a time, so a week's backfill never holds more than an hour of rows
            started = time.monotonic()
            pulled = pull(query, window, now)
            pull_seconds += time.monotonic() - started
            with rollups_db.writer(context.log) as connection:
                written.append(replace_window(connection, window, pulled))
    minutes = [minute for w in written for minute in (w.first_minute, w.last_minute) if minute]
    for table in MINUTE_TABLES:
        yield materialized(
            context,
            {
                "dagster/row_count": sum(w.rows[table.name] for w in written),
                "hours": len(windows),
                "sample_time_from": windows[0].start.isoformat(),
                "sample_time_to": windows[-1].end.isoformat(),
                "sessions": dg.MetadataValue.json(sorted({s for w in written for s in w.sessions})),
                "first_minute": str(min(minutes)) if minutes else "none",
                "last_minute": str(max(minutes)) if minutes else "none",
                "source": query.location,
                "query_seconds": round(pull_seconds, 3),
                "database": rollups_db.database,
            },
            table.name,
        )


@dg.multi_asset(specs=SUMMARY_SPECS, pool=DUCKDB_POOL, can_subset=False)
def summaries(context: dg.AssetExecutionContext, rollups_db: RollupsDatabase):
    """Summarise again every session still reporting (and any not summarised yet)."""
    with rollups_db.writer(context.log) as connection:
        written = refresh_summaries(connection, datetime.now(UTC))
    for table in SUMMARY_TABLES:
        yield materialized(
            context, {"dagster/row_count": written.rows[table.name], **metadata_from(written)}, table.name
        )


@dg.multi_asset(specs=RAY_API_SPECS, pool=DUCKDB_POOL, can_subset=False)
def ray_jobs(context: dg.AssetExecutionContext, ray_metrics: RayMetricsSource, rollups_db: RollupsDatabase):
    """Record every job Ray lists, and the tasks of each job that has ended since, from Ray itself. Without a
    dashboard to ask (none set, none found on this machine) nothing is recorded, and the metadata says why."""
    try:
        url = ray_metrics.ray_dashboard_url()
    except DashboardNotFound as error:
        context.log.warning(str(error))
        for table in RAY_API_TABLES:
            yield materialized(context, {"dashboard": "not found", "why": str(error)}, table.name)
        return
    cluster_id, now = ray_metrics.cluster_id(), datetime.now(UTC)
    try:
        with RayDashboard(url) as dashboard:
            session = dashboard.version()["session_name"]
            jobs = dashboard.jobs()
            with rollups_db.writer(context.log) as connection:
                awaiting = jobs_awaiting_tasks(connection, cluster_id, session, jobs)
            summaries = [dashboard.task_summary(job_id) for job_id in awaiting]  # without holding the file
    except RayApiError as error:
        raise dg.Failure(description=str(error)) from error
    with rollups_db.writer(context.log) as connection:
        recorded = record_ray_jobs(connection, cluster_id, session, jobs, summaries, now)
    for summary in summaries:
        if not summary.complete:
            context.log.warning(f"Ray holds only part of job {summary.job_id}'s tasks: {summary.warning}")
    for table in RAY_API_TABLES:
        yield materialized(context, {"dashboard": url, "session_name": session, **metadata_from(recorded)}, table.name)


@dg.asset(
    deps=[*SUMMARY_SPECS, *RAY_API_SPECS, "node_minute", "task_state_minute"],
    description="Ray sessions and jobs side by side: tables, and a chart of CPU and memory since each session's "
    "start and failed tasks by task name (also saved as comparison/ray_run_comparison.png in the data folder).",
    group_name="reports",
    kinds={"duckdb", "matplotlib"},
    owners=OWNERS,
    pool=DUCKDB_POOL,
)
def ray_run_comparison(
    context: dg.AssetExecutionContext, rollups_db: RollupsDatabase, rollup_settings: RollupSettings
) -> dg.MaterializeResult:
    with rollups_db.writer(context.log) as connection:
        result = compare(connection)
    chart = Path(rollup_settings.reports_dir) / "ray_run_comparison.png"
    chart.parent.mkdir(parents=True, exist_ok=True)
    chart.write_bytes(result.png)
    if not result.sessions:
        context.log.warning(result.markdown)
    return materialized(
        context,
        {
            "comparison": dg.MetadataValue.md(result.markdown),
            "chart": dg.MetadataValue.path(str(chart)),
            "sessions": dg.MetadataValue.json([row["session_name"] for row in result.sessions]),
            "jobs": len(result.jobs),
        },
    )
