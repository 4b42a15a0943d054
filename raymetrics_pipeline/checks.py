"""Asset checks: are metrics still arriving, are the rollups fresh and whole, is anything under pressure."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from raymetrics_pipeline.assets import DUCKDB_POOL, RAYMETRICS_ASSET_KEY
from raymetrics_pipeline.resources import MetricsBackendResource, RollupsDatabase, RollupSettings
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


@dg.asset_check(
    asset=RAYMETRICS_ASSET_KEY,
    description="The newest Ray sample in the dataset is at most RollupSettings.ingestion_freshness_minutes old "
    "(default 2), read with a window that ends in the future so the current minute counts.",
)
def raymetrics_is_fresh(backend: MetricsBackendResource, rollup_settings: RollupSettings) -> dg.AssetCheckResult:
    now = datetime.now(UTC)
    with backend.query() as query:
        (row,) = query.query(f'SELECT MAX(time_unix_nano) AS newest FROM "{query.stream}"', now - timedelta(hours=1))
    threshold = timedelta(minutes=rollup_settings.ingestion_freshness_minutes)
    metadata = {"dataset": query.location, "threshold_minutes": rollup_settings.ingestion_freshness_minutes}
    if row["newest"] is None:
        return dg.AssetCheckResult(passed=False, metadata={**metadata, "newest_sample": "none in the last hour"})
    lag = now - _utc(row["newest"])
    return dg.AssetCheckResult(
        passed=lag <= threshold,
        metadata={**metadata, "newest_sample": row["newest"], "lag_seconds": round(lag.total_seconds(), 1)},
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
    if newest is None:
        return dg.AssetCheckResult(passed=False, metadata={"newest_minute": "no rollups yet"})
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
