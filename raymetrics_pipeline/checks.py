"""Asset checks: are metrics still arriving, are the rollups fresh and whole, is anything under pressure."""

from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster_duckdb import DuckDBResource

from raymetrics_pipeline.assets import RAYMETRICS_ASSET_KEY
from raymetrics_pipeline.resources import LocalDataResource, ParseableResource, RollupSettings, metrics_query
from raymetrics_pipeline.rollup_assets import DUCKDB_POOL, rollups_connection

OBJECT_STORE_PRESSURE_LIMIT = 0.8
MEMORY_PRESSURE_LIMIT = 0.9
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
def raymetrics_is_fresh(
    parseable: ParseableResource, local_data: LocalDataResource, rollup_settings: RollupSettings
) -> dg.AssetCheckResult:
    query = metrics_query(parseable, local_data)
    now = datetime.now(UTC)
    (row,) = query.query("SELECT MAX(time_unix_nano) AS newest FROM raymetrics", now - timedelta(hours=1))
    threshold = timedelta(minutes=rollup_settings.ingestion_freshness_minutes)
    metadata = {"dataset": query.where(), "threshold_minutes": rollup_settings.ingestion_freshness_minutes}
    if row["newest"] is None:
        return dg.AssetCheckResult(passed=False, metadata={**metadata, "newest_sample": "none in the last hour"})
    lag = now - _utc(row["newest"])
    return dg.AssetCheckResult(
        passed=lag <= threshold,
        metadata={**metadata, "newest_sample": row["newest"], "lag_seconds": round(lag.total_seconds(), 1)},
    )


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


@dg.asset_check(
    asset="node_minute",
    description="The newest rolled-up minute is recent (RollupSettings.rollup_freshness_minutes, default 15), and "
    "no node misses a minute between its first and last minute of the last 24 h (WARN, with the gaps).",
    pool=DUCKDB_POOL,
)
def node_minute_is_fresh_and_complete(
    context: dg.AssetCheckExecutionContext, rollups_db: DuckDBResource, rollup_settings: RollupSettings
) -> dg.AssetCheckResult:
    now = datetime.now(UTC).replace(tzinfo=None)
    with rollups_connection(rollups_db, context.log) as connection:
        ((newest,),) = connection.execute("SELECT MAX(minute) FROM node_minute").fetchall()
        gaps = connection.execute(_GAPS, {"since": now - LOOK_BACK}).fetchall()
    if newest is None:
        return dg.AssetCheckResult(passed=False, metadata={"newest_minute": "no rollups yet"})
    lag_minutes = (now - newest).total_seconds() / 60
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


def _minutes_under_pressure(
    context: dg.AssetCheckExecutionContext, rollups_db: DuckDBResource, sql: str, limit: float
) -> dg.AssetCheckResult:
    """WARN listing the ``(cluster, session, node, minute, pressure)`` rows ``sql`` finds above ``limit``."""
    since = datetime.now(UTC).replace(tzinfo=None) - LOOK_BACK
    with rollups_connection(rollups_db, context.log) as connection:
        rows = connection.execute(sql, [since, limit]).fetchall()
    listed = [
        f"{cluster or '(no cluster)'} / {session} / {node} at {minute:%Y-%m-%d %H:%M}: {pressure:.0%}"
        for cluster, session, node, minute, pressure in rows[:LISTED]
    ]
    return dg.AssetCheckResult(
        passed=not rows,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"limit": limit, "minutes_above_limit": len(rows), "where": dg.MetadataValue.json(listed)},
    )


@dg.asset_check(
    asset="object_store_minute",
    description="WARN when a node's object store was more than 80 % used in a minute of the last 24 h.",
    pool=DUCKDB_POOL,
)
def object_store_pressure(context: dg.AssetCheckExecutionContext, rollups_db: DuckDBResource) -> dg.AssetCheckResult:
    return _minutes_under_pressure(
        context,
        rollups_db,
        """SELECT DISTINCT cluster_id, session_name, node, minute, node_pressure FROM object_store_minute
           WHERE minute >= ? AND node_pressure > ? ORDER BY node_pressure DESC, minute""",
        OBJECT_STORE_PRESSURE_LIMIT,
    )


@dg.asset_check(
    asset="node_minute",
    description="WARN when a node's memory was more than 90 % used in a minute of the last 24 h.",
    pool=DUCKDB_POOL,
)
def node_memory_pressure(context: dg.AssetCheckExecutionContext, rollups_db: DuckDBResource) -> dg.AssetCheckResult:
    return _minutes_under_pressure(
        context,
        rollups_db,
        """SELECT cluster_id, session_name, node, minute, mem_pressure_max FROM node_minute
           WHERE minute >= ? AND mem_pressure_max > ? ORDER BY mem_pressure_max DESC, minute""",
        MEMORY_PRESSURE_LIMIT,
    )
