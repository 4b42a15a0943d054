"""Jobs: ``scrape_and_ship`` (one scrape of every Ray endpoint into the backend), and the housekeeping
that keeps Dagster's run storage, the backend's files and the rollups bounded."""

import os
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field

from raymetrics_pipeline.assets import DUCKDB_POOL, RAYMETRICS_ASSET_KEY
from raymetrics_pipeline.checks import delivery_freshness
from raymetrics_pipeline.common import markdown
from raymetrics_pipeline.ingest.cycle import CycleResult, run_cycle
from raymetrics_pipeline.ingest.targets import TargetError
from raymetrics_pipeline.metadata import metadata_from
from raymetrics_pipeline.resources import MetricsBackendResource, RayMetricsSource, RollupsDatabase, RollupSettings
from raymetrics_pipeline.rollups.database import delete_minutes_before

SCRAPE_INTERVAL_SECONDS = 15
# Each cycle's sends and retries must end well inside the 15 s interval so the next cycle starts on time.
CYCLE_BUDGET_SECONDS = 12.0
_TARGET_COLUMNS = ("target", "HTTP", "samples", "data points", "bytes", "seconds", "parse errors", "error")


def _per_target(cycle: CycleResult) -> str:
    rows = [
        [t.target, t.status, t.samples, t.data_points, t.scraped_bytes, t.seconds, t.parse_errors]
        + [t.error or "; ".join(t.first_parse_errors)]
        for t in cycle.targets
    ]
    return markdown.table(_TARGET_COLUMNS, rows)


def cycle_metadata(cycle: CycleResult, discovered_from: str, destination: str) -> dict:
    return {
        "destination": destination,
        "discovered_from": discovered_from,
        "targets": len(cycle.targets),
        "targets_up": cycle.targets_up,
        **cycle.totals(),
        **metadata_from(cycle.delivery),
        "duration_seconds": round(cycle.seconds, 3),
        "per_target": dg.MetadataValue.md(_per_target(cycle)),
    }


class ScrapeConfig(dg.Config):
    """How long one run scrapes: one cycle by hand; the sensor's runs scrape every 15 s for an hour."""

    cycles: int = Field(
        default=1,
        ge=0,
        description="Cycles to run, 15 s apart; 0: keep scraping until run_minutes have passed or a cycle fails "
        "(ray_metrics_sensor's runs: one Dagster run an hour instead of 240 costs a fraction of the CPU and storage).",
    )
    run_minutes: float = Field(
        default=60.0, gt=0, description="With cycles 0, end the run after this long; the sensor starts the next."
    )


@dg.op(
    description=(
        "Scrape every Ray metrics endpoint and hand the samples to the backend: POSTed to Parseable as OTLP "
        "metrics or, without PARSEABLE_URL, written to the embedded local store as the rows Parseable would keep. "
        "Every cycle is recorded as a materialization of raymetrics; a failed cycle fails the run."
    )
)
def scrape_and_ship_metrics(
    context: dg.OpExecutionContext, config: ScrapeConfig, ray_metrics: RayMetricsSource, backend: MetricsBackendResource
) -> dg.Output[None]:
    started, launched_by = time.monotonic(), os.getppid()
    cycles = 0
    while True:
        cycle_started = time.monotonic()
        metadata = _scrape_once(context, ray_metrics, backend)
        cycles += 1
        if config.cycles and cycles >= config.cycles:
            break
        if time.monotonic() - started >= config.run_minutes * 60 or not _still_wanted(context, launched_by):
            break
        time.sleep(max(0.0, cycle_started + SCRAPE_INTERVAL_SECONDS - time.monotonic()))
    return dg.Output(None, metadata={**metadata, "cycles": cycles})


def _still_wanted(context: dg.OpExecutionContext, launched_by: int) -> bool:
    """Whether to go on scraping: not when the process that launched the run is gone (``dagster dev`` stopped;
    the run would scrape on unseen) or the run is no longer STARTED on record (marked failed or canceled)."""
    if os.getppid() != launched_by:
        context.log.warning("The process that launched this scrape run is gone; the run ends.")
        return False
    run = context.instance.get_run_by_id(context.run_id)
    return run is not None and run.status == dg.DagsterRunStatus.STARTED


def _scrape_once(
    context: dg.OpExecutionContext, ray_metrics: RayMetricsSource, backend: MetricsBackendResource
) -> dict:
    """One cycle, recorded as a materialization with its figures and a freshness verdict; raises ``Failure``
    when it fails (data kept in the spool or set aside, or every endpoint down)."""
    try:
        discovery = ray_metrics.discover()
        resource_attributes = ray_metrics.attributes()
    except (TargetError, ValueError) as error:
        raise dg.Failure(description=str(error)) from error
    if not discovery.targets:
        context.log.warning(discovery.skip_reason())
    metrics_backend = backend.checked_backend()
    try:
        with metrics_backend.sink() as sink:
            cycle = run_cycle(
                discovery.targets,
                sink,
                scrape_timeout_seconds=ray_metrics.scrape_timeout_seconds,
                resource_attributes=resource_attributes,
                budget_seconds=CYCLE_BUDGET_SECONDS,
            )
    except OSError as error:
        raise dg.Failure(
            description=(
                f"Could not write to {metrics_backend.location}: {error}. Free disk space there or point "
                "RAYMETRICS_DATA_DIR at a writable folder."
            )
        ) from error
    metadata = cycle_metadata(cycle, discovery.source, metrics_backend.location)
    failed = {target.target: target.error for target in cycle.targets if target.error}
    for target in cycle.targets:
        if target.error:
            context.log.warning(f"scrape of {target.target} failed: {target.error}")
        for parse_error in target.first_parse_errors:
            context.log.warning(f"{target.target}: skipped {parse_error}")
    if failed and cycle.targets_up:
        context.log.warning(discovery.partly_unreachable(failed))
    delivery = cycle.delivery
    if delivery.delivered:
        context.log_event(
            dg.AssetMaterialization(
                asset_key=RAYMETRICS_ASSET_KEY,
                description=f"{metadata['data_points']} data points from {cycle.targets_up} targets",
                metadata=metadata,
            )
        )
        # Judged on this materialization, so the UI shows a verdict on the latest one instead of "Not evaluated".
        newest = cycle.newest_sample_unix_nano
        newest_sample = None if newest is None else datetime.fromtimestamp(newest / 1e9, UTC)
        context.log_event(delivery_freshness(newest_sample, metadata["data_points"], metadata["destination"]))
    for warning in delivery.warnings:
        context.log.warning(warning)
    if delivery.failure:
        raise dg.Failure(description=delivery.failure, metadata=metadata)
    if discovery.targets and not cycle.targets_up:
        raise dg.Failure(
            description=discovery.unreachable_reason(failed, "Every Ray metrics endpoint failed"), metadata=metadata
        )
    return metadata


@dg.job(
    description="Scrape Ray's metrics endpoints and ship them to the backend: once by hand; ray_metrics_sensor's "
    "runs every 15 s for an hour each.",
    executor_def=dg.in_process_executor,
    tags={"raymetrics/lane": "scrape"},
)
def scrape_and_ship():
    scrape_and_ship_metrics()


class PruneRunsConfig(dg.Config):
    older_than_days: float = 3.0


FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


@dg.op(
    description=(
        "Delete finished scrape_and_ship runs and their event logs older than `older_than_days`: open-source "
        "Dagster keeps every run forever, and the sensor starts one an hour, and one after every failed cycle."
    )
)
def delete_old_scrape_runs(context: dg.OpExecutionContext, config: PruneRunsConfig) -> dg.Output[None]:
    cutoff = time.time() - config.older_than_days * 86_400
    filters = dg.RunsFilter(
        job_name=scrape_and_ship.name, statuses=FINISHED, created_before=datetime.fromtimestamp(cutoff, UTC)
    )
    deleted = 0
    while records := context.instance.get_run_records(filters=filters, limit=500):
        for record in records:
            context.instance.delete_run(record.dagster_run.run_id)
        deleted += len(records)
    return dg.Output(None, metadata={"deleted_runs": deleted, "older_than_days": config.older_than_days})


@dg.job(description="Delete old scrape_and_ship runs so Dagster's storage stays bounded (hourly schedule).")
def prune_scrape_runs():
    delete_old_scrape_runs()


@dg.op(
    description=(
        "The backend's upkeep, safe while scrape runs write: the local store folds each hour's cycle files into "
        "one Parquet file and deletes hours older than RAYMETRICS_LOCAL_RETENTION_DAYS; with Parseable, the spool "
        "drops what killed runs left half-written."
    )
)
def maintain_backend_files(backend: MetricsBackendResource) -> dg.Output[None]:
    metrics_backend = backend.checked_backend()
    upkeep = metrics_backend.maintain(datetime.now(UTC))
    return dg.Output(None, metadata={"location": metrics_backend.location, **metadata_from(upkeep)})


@dg.job(
    description="The backend's upkeep: compaction and retention of the local store, spool leftovers (every 10 minutes)."
)
def maintain_storage():
    maintain_backend_files()


@dg.op(
    description="Delete rollup minutes older than RAYMETRICS_ROLLUP_RETENTION_DAYS; summaries are kept for good.",
    pool=DUCKDB_POOL,
)
def delete_expired_rollups(
    context: dg.OpExecutionContext, rollups_db: RollupsDatabase, rollup_settings: RollupSettings
) -> dg.Output[None]:
    cutoff = datetime.now(UTC) - timedelta(days=rollup_settings.retention_days)
    with rollups_db.writer(context.log) as connection:
        deleted = delete_minutes_before(connection, cutoff)
    return dg.Output(
        None,
        metadata={
            "deleted_rows": deleted,
            "cutoff": cutoff.isoformat(),
            "retention_days": rollup_settings.retention_days,
        },
    )


@dg.job(description="Rollup retention (daily): delete minute rows past RAYMETRICS_ROLLUP_RETENTION_DAYS.")
def expire_rollups():
    delete_expired_rollups()
