"""Asset checks: are metrics still arriving, are the rollups fresh and whole, is anything under pressure.

``raymetrics_is_fresh`` is evaluated two ways, so the UI always shows a verdict on the latest
materialization of ``raymetrics``. A scrape run records one judged from what a cycle delivered
(``delivery_freshness``): Dagster keeps one evaluation of a check per run, shows the newest run's,
and counts it for every materialization of that run, so the run records it on its first cycle and
again only when it changes. While no scrape run is in flight, the reports schedule runs the check
itself, which reads the newest Ray sample in the dataset and so fails once data stops arriving (no
scrape cycle then materializes the asset, and the scheduled evaluation is the one shown); it leaves
the check out while one is, as its newer evaluation would hide the run's.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from raymetrics_pipeline.assets import DUCKDB_POOL, RAYMETRICS_ASSET_KEY
from raymetrics_pipeline.dataset.query import QueryError
from raymetrics_pipeline.ingest import health
from raymetrics_pipeline.resources import (
    INGESTION_FRESHNESS_MINUTES,
    MetricsBackendResource,
    RollupsDatabase,
    RollupSettings,
)
from raymetrics_pipeline.rollups.database import (
    MEMORY_PRESSURE,
    OBJECT_STORE_PRESSURE,
    PressureCheck,
    minutes_over,
    newest_minute,
    node_gaps,
)

LOOK_BACK = timedelta(hours=24)  # how far back the rollup checks look
LISTED = 20  # offenders named in a check's metadata


def _utc(text: str) -> datetime:
    """A timestamp as the query layer renders it (naive UTC) → aware."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


FRESHNESS_CHECK = "raymetrics_is_fresh"
RUN_ROLLUPS = (
    "refresh_rollups fills them every 10 minutes (rollups_schedule) once scrape runs have delivered metrics; to "
    "fill them now, launch refresh_rollups for the current hour (UI: Jobs → refresh_rollups → Materialize, pick "
    "the hour), then refresh_reports."
)


@dg.asset_check(
    asset=RAYMETRICS_ASSET_KEY,
    name=FRESHNESS_CHECK,
    description="The newest Ray sample in the dataset is at most RollupSettings.ingestion_freshness_minutes old "
    "(default 2), read with a window that ends in the future so the current minute counts. Scrape runs also record "
    "this check, judged from the samples a cycle delivered: on their first cycle and when the verdict changes.",
)
def raymetrics_is_fresh(
    context: dg.AssetCheckExecutionContext, backend: MetricsBackendResource, rollup_settings: RollupSettings
) -> dg.AssetCheckResult:
    now = datetime.now(UTC)
    metadata = {
        "dataset": backend.location,
        "threshold_minutes": rollup_settings.ingestion_freshness_minutes,
        "judged_by": "the newest Ray sample time in the dataset (the pipeline's own raymetrics_pipeline_* "
        "figures left out), read by this check",
    }
    try:
        with backend.query() as query:
            (row,) = query.query(
                f'SELECT MAX(time_unix_nano) AS newest FROM "{query.stream}" '
                f"WHERE metric_name NOT LIKE '{health.PREFIX}%'",  # the pipeline's own figures are not Ray data
                now - timedelta(hours=1),
            )
    except QueryError as error:
        if context.instance.get_latest_materialization_event(RAYMETRICS_ASSET_KEY) is None:
            # Nothing has ever been delivered: a new installation, not data that stopped.
            return dg.AssetCheckResult(
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    **metadata,
                    "newest_sample": "no data yet: no scrape run has delivered anything",
                    "what_to_do": "Start Ray with metrics; ray_metrics_sensor launches scrape runs once an "
                    "endpoint answers (its ticks say why not).",
                    "error": str(error),
                },
            )
        return dg.AssetCheckResult(
            passed=False,
            metadata={**metadata, "newest_sample": "unknown: the dataset could not be read", "error": str(error)},
        )
    threshold = timedelta(minutes=rollup_settings.ingestion_freshness_minutes)
    if row["newest"] is None:
        return dg.AssetCheckResult(passed=False, metadata={**metadata, "newest_sample": "none in the last hour"})
    lag = now - _utc(row["newest"])
    return dg.AssetCheckResult(
        passed=lag <= threshold,
        metadata={**metadata, "newest_sample": row["newest"], "lag_seconds": round(lag.total_seconds(), 1)},
    )


def delivery_freshness(newest_sample: datetime | None, data_points: int, location: str) -> dg.AssetCheckEvaluation:
    """``raymetrics_is_fresh`` as a scrape cycle judges it from what it just delivered: the time of its newest Ray
    sample (``None`` when it delivered none, e.g. every endpoint failed)."""
    now = datetime.now(UTC)
    metadata = {
        "dataset": location,
        "threshold_minutes": INGESTION_FRESHNESS_MINUTES,
        "judged_by": "the Ray samples a scrape cycle delivered; stands for the run's later cycles until it changes",
        "data_points": data_points,
    }
    if newest_sample is None or not data_points:
        metadata["newest_sample"] = "none: this run delivered no Ray sample"
        return dg.AssetCheckEvaluation(
            asset_key=RAYMETRICS_ASSET_KEY, check_name=FRESHNESS_CHECK, passed=False, metadata=metadata
        )
    lag = now - newest_sample
    metadata["newest_sample"] = newest_sample.isoformat(timespec="milliseconds")
    metadata["lag_seconds"] = round(lag.total_seconds(), 1)
    return dg.AssetCheckEvaluation(
        asset_key=RAYMETRICS_ASSET_KEY,
        check_name=FRESHNESS_CHECK,
        passed=lag <= timedelta(minutes=INGESTION_FRESHNESS_MINUTES),
        metadata=metadata,
    )


@dg.asset_check(
    asset="node_minute",
    description="The newest rolled-up minute is recent (RollupSettings.rollup_freshness_minutes, default 15), and "
    "no node misses a minute between its first and last minute of the last 24 h (WARN, with the gaps).",
    pool=DUCKDB_POOL,
)
def node_minute_is_fresh_and_complete(
    context: dg.AssetCheckExecutionContext, rollups_db: RollupsDatabase, rollup_settings: RollupSettings
) -> dg.AssetCheckResult:
    now = datetime.now(UTC)
    with rollups_db.writer(context.log) as connection:
        newest = newest_minute(connection)
        gaps = node_gaps(connection, now - LOOK_BACK)
    if newest is None:  # a new installation: a warning that says what fills them, not an error
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"newest_minute": "no rollups yet", "what_to_do": RUN_ROLLUPS},
        )
    lag_minutes = (now.replace(tzinfo=None) - newest).total_seconds() / 60
    listed = [
        f"{cluster or '(no cluster)'} / {session} / {node}: {start:%Y-%m-%d %H:%M}–{end:%H:%M} ({minutes} min)"
        for cluster, session, node, start, end, minutes in gaps[:LISTED]
    ]
    metadata = {
        "newest_minute": newest.isoformat(),
        "lag_minutes": round(lag_minutes, 1),
        "threshold_minutes": rollup_settings.rollup_freshness_minutes,
        "gaps": len(gaps),
        "missing_minutes": dg.MetadataValue.json(listed),
    }
    if lag_minutes > rollup_settings.rollup_freshness_minutes:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata)
    return dg.AssetCheckResult(passed=not gaps, severity=dg.AssetCheckSeverity.WARN, metadata=metadata)


def _pressure_check(check: PressureCheck, name: str) -> dg.AssetChecksDefinition:
    """WARN, naming cluster, session, node and minute, when a node's ``check.what`` went over ``check.limit``."""

    @dg.asset_check(
        name=name,
        asset=check.table,
        description=f"WARN when a node's {check.what} was more than {check.limit:.0%} used in a minute of the "
        "last 24 h.",
        pool=DUCKDB_POOL,
    )
    def pressure(context: dg.AssetCheckExecutionContext, rollups_db: RollupsDatabase) -> dg.AssetCheckResult:
        with rollups_db.writer(context.log) as connection:
            rows = minutes_over(connection, check, datetime.now(UTC) - LOOK_BACK)
        listed = [
            f"{cluster or '(no cluster)'} / {session} / {node} at {minute:%Y-%m-%d %H:%M}: {value:.0%}"
            for cluster, session, node, minute, value in rows[:LISTED]
        ]
        return dg.AssetCheckResult(
            passed=not rows,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"limit": check.limit, "minutes_above_limit": len(rows), "where": dg.MetadataValue.json(listed)},
        )

    return pressure


object_store_pressure = _pressure_check(OBJECT_STORE_PRESSURE, "object_store_pressure")
node_memory_pressure = _pressure_check(MEMORY_PRESSURE, "node_memory_pressure")
