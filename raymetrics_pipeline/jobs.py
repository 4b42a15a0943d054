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
from raymetrics_pipeline.resources import (
    CELERY_BROKER_URL,
    MetricsBackendResource,
    RayMetricsSource,
    RollupsDatabase,
    RollupSettings,
    ScaleOut,
)
from raymetrics_pipeline.rollups.database import delete_minutes_before

SCRAPE_INTERVAL_SECONDS = 15
# Each cycle's sends and retries must end well inside the 15 s interval so the next cycle starts on time.
CYCLE_BUDGET_SECONDS = 12.0
_TARGET_COLUMNS = ("target", "HTTP", "samples", "data points", "bytes", "seconds", "parse errors", "error")
# Rows of the per-target table in each cycle's metadata: every cycle is stored, so 1,000 targets listed in
# full would cost about 80 KB a cycle (450 MB a day); the cycle's totals count them all.
LISTED_TARGETS = 20


def _per_target(cycle: CycleResult) -> str:
    """The targets in trouble first (down, or skipped lines), then the others, up to ``LISTED_TARGETS`` rows."""
    targets = sorted(cycle.targets, key=lambda t: not (t.error or t.parse_errors))
    rows = [
        [t.target, t.status, t.samples, t.data_points, t.scraped_bytes, t.seconds, t.parse_errors]
        + [t.error or "; ".join(t.first_parse_errors)]
        for t in targets[:LISTED_TARGETS]
    ]
    table = markdown.table(_TARGET_COLUMNS, rows)
    if len(targets) > LISTED_TARGETS:
        table += f"\n\n… and {len(targets) - LISTED_TARGETS} more targets (the run's log names every one that failed)."
    return table


def cycle_metadata(cycle: CycleResult, discovered_from: str, destination: str) -> dict:
    return {
        "destination": destination,
        "discovered_from": discovered_from,
        "targets": len(cycle.targets),
        "targets_up": cycle.targets_up,
        **cycle.totals(),
        **metadata_from(cycle.delivery),
        "duration_seconds": round(cycle.seconds, 3),
        **{f"{stage}_seconds": round(seconds, 3) for stage, seconds in cycle.stage_seconds.items()},
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
    return _scrape_cycles(context, config, ray_metrics, backend, started=time.time())


def _scrape_cycles(
    context: dg.OpExecutionContext,
    config: ScrapeConfig,
    ray_metrics: RayMetricsSource,
    backend: MetricsBackendResource,
    started: float,
    shard: tuple[int, int] | None = None,
) -> dg.Output[None]:
    """An op's cycles, as many as ``config`` says, run_minutes counted from ``started`` (``time.time()``); over
    every target, or only those of ``shard`` (index, count)."""
    launched_by = os.getppid()
    cycles = 0
    verdict: bool | None = None  # the freshness verdict this op last recorded: passed or not
    while True:
        cycle_started = time.monotonic()
        verdict = _scrape_once(context, ray_metrics, backend, shard, verdict)
        cycles += 1
        if config.cycles and cycles >= config.cycles:
            break
        if time.time() - started >= config.run_minutes * 60 or not _still_wanted(context, launched_by):
            break
        time.sleep(max(0.0, cycle_started + SCRAPE_INTERVAL_SECONDS - time.monotonic()))
    # The figures are on each cycle's materialization; repeated here they would be stored twice.
    return dg.Output(None, metadata={"cycles": cycles})


def _still_wanted(context: dg.OpExecutionContext, launched_by: int) -> bool:
    """Whether to go on scraping: not when the process that launched the run is gone (``dagster dev`` stopped;
    the run would scrape on unseen) or the run is no longer STARTED on record (marked failed or canceled)."""
    if os.getppid() != launched_by:
        context.log.warning("The process that launched this scrape run is gone; the run ends.")
        return False
    run = context.instance.get_run_by_id(context.run_id)
    return run is not None and run.status == dg.DagsterRunStatus.STARTED


def _scrape_once(
    context: dg.OpExecutionContext,
    ray_metrics: RayMetricsSource,
    backend: MetricsBackendResource,
    shard: tuple[int, int] | None = None,
    verdict: bool | None = None,
) -> bool | None:
    """One cycle, recorded as a materialization with its figures, and its freshness verdict unless the op last
    recorded the same ``verdict``; returns the verdict now on record. Raises ``Failure`` when the cycle fails (data
    kept in the spool or set aside, or every endpoint down)."""
    try:
        discovery = ray_metrics.discover()
        resource_attributes = ray_metrics.attributes()
    except (TargetError, ValueError) as error:
        raise dg.Failure(description=str(error)) from error
    if shard and discovery.targets:
        discovery = discovery.sharded(*shard)
        if not discovery.targets:  # fewer targets than shards: not a cycle that delivered nothing
            context.log.info(f"No target falls in shard {discovery.shard} this cycle.")
            return verdict
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
    if discovery.shard:
        metadata["shard"] = discovery.shard
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
        newest = cycle.newest_sample_unix_nano
        newest_sample = None if newest is None else datetime.fromtimestamp(newest / 1e9, UTC)
        evaluation = delivery_freshness(newest_sample, metadata["data_points"], metadata["destination"])
        # Dagster keeps one evaluation of a check per run (a later one overwrites it) and shows it on every
        # materialization of that run, while no other run's is newer (the reports schedule leaves the check out
        # while a scrape run is in flight): recording each cycle's verdict would only add a 2 KB event every 15 s.
        if evaluation.passed != verdict:
            context.log_event(evaluation)
            verdict = evaluation.passed
    for warning in delivery.warnings:
        context.log.warning(warning)
    if delivery.failure:
        raise dg.Failure(description=delivery.failure, metadata=metadata)
    if discovery.targets and not cycle.targets_up:
        raise dg.Failure(
            description=discovery.unreachable_reason(failed, "Every Ray metrics endpoint failed"), metadata=metadata
        )
    return verdict


@dg.job(
    description="Scrape Ray's metrics endpoints and ship them to the backend: once by hand; ray_metrics_sensor's "
    "runs every 15 s for an hour each.",
    executor_def=dg.in_process_executor,
    tags={"raymetrics/lane": "scrape"},
)
def scrape_and_ship():
    scrape_and_ship_metrics()


def _shard_op(shard: int, shards: int) -> dg.OpDefinition:
    @dg.op(
        name=f"scrape_shard_{shard}",
        description=(
            f"scrape_and_ship_metrics over shard {shard} of {shards} of the targets (RAYMETRICS_SCRAPE_SHARDS). A "
            "failed cycle fails this shard only; in a run that keeps scraping it is retried 15 s later, until the "
            "run's time is up."
        ),
    )
    def scrape_shard(
        context: dg.OpExecutionContext,
        config: ScrapeConfig,
        ray_metrics: RayMetricsSource,
        backend: MetricsBackendResource,
    ) -> dg.Output[None]:
        # The run's time, not this attempt's: a retried shard ends with the others.
        run_started = context.instance.get_run_record_by_id(context.run_id).start_time
        try:
            return _scrape_cycles(context, config, ray_metrics, backend, run_started, (shard, shards))
        except dg.Failure as failure:
            if config.cycles or time.time() + SCRAPE_INTERVAL_SECONDS >= run_started + config.run_minutes * 60:
                raise
            raise dg.RetryRequested(
                max_retries=int(config.run_minutes * 60 / SCRAPE_INTERVAL_SECONDS) + 1,
                seconds_to_wait=SCRAPE_INTERVAL_SECONDS,
            ) from failure

    return scrape_shard


def sharded_scrape_job(shards: int, executor_def: dg.ExecutorDefinition) -> dg.JobDefinition:
    """``scrape_and_ship`` with its targets sharded over ``shards`` ops that depend on none other, so a shard that
    fails stops no other. Same job name, and one graph named like the single op taking the same run config, so the
    sensor, the run pruning and the one-scrape-run-at-a-time limit apply unchanged."""
    shard_ops = [_shard_op(shard, shards) for shard in range(shards)]

    def every_shard(config: dict) -> dict:
        return {op.name: {"config": config} for op in shard_ops}

    @dg.graph(
        name=scrape_and_ship_metrics.name,
        description=f"scrape_and_ship_metrics with the targets sharded over {shards} ops by a stable hash.",
        config=dg.ConfigMapping(config_fn=every_shard, config_schema=ScrapeConfig.to_config_schema()),
    )
    def sharded_scrape():
        for op in shard_ops:
            op()

    @dg.job(
        name=scrape_and_ship.name,
        description=f"{scrape_and_ship.description} Targets sharded over {shards} ops (RAYMETRICS_SCRAPE_SHARDS).",
        executor_def=executor_def,
        tags={**scrape_and_ship.tags, "raymetrics/shards": str(shards)},
    )
    def sharded_scrape_and_ship():
        sharded_scrape()

    return sharded_scrape_and_ship


def _shard_executor(scale_out: ScaleOut) -> dg.ExecutorDefinition:
    """Multiprocess: every shard at once in a process of its own (a shard scrapes for the whole run). Celery:
    tasks for dagster-celery workers on the broker in CELERY_BROKER_URL, read from the environment when used,
    never stored; dagster_celery is imported only then, so other scrape processes stay light."""
    if scale_out.executor != "celery":
        return dg.multiprocess_executor.configured({"max_concurrent": scale_out.shards})
    try:
        from dagster_celery import celery_executor
    except ImportError as error:
        raise ValueError(
            "RAYMETRICS_SCRAPE_EXECUTOR=celery needs dagster-celery: pip install 'raymetrics_pipeline[celery]'"
        ) from error
    return celery_executor.configured({"broker": {"env": CELERY_BROKER_URL}})


def scrape_job(scale_out: ScaleOut) -> dg.JobDefinition:
    """The scrape job as RAYMETRICS_SCRAPE_SHARDS and RAYMETRICS_SCRAPE_EXECUTOR say: one op in the run's own
    process, or the targets sharded over several ops on a distributed executor."""
    if scale_out.shards == 1:
        return scrape_and_ship
    return sharded_scrape_job(scale_out.shards, _shard_executor(scale_out))


class PruneRunsConfig(dg.Config):
    older_than_days: float = 3.0


FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
# Every job's runs but refresh_rollups': its runs' events are what the UI shows as the hourly partitions
# materialized, and those hours stay for RAYMETRICS_ROLLUP_RETENTION_DAYS (24 runs a day per hour refreshed).
PRUNED_JOBS = ("scrape_and_ship", "refresh_reports", "maintain_storage", "expire_rollups", "prune_old_runs")


@dg.op(
    description=(
        "Delete finished runs older than `older_than_days`, their event logs and captured stdout/stderr: "
        "open-source Dagster keeps every run forever, and this pipeline starts about 750 a day. refresh_rollups' "
        "runs stay (they record which hours are materialized)."
    )
)
def delete_old_runs(context: dg.OpExecutionContext, config: PruneRunsConfig) -> dg.Output[None]:
    cutoff = datetime.fromtimestamp(time.time() - config.older_than_days * 86_400, UTC)
    deleted: dict[str, int] = {}
    for job_name in PRUNED_JOBS:
        filters = dg.RunsFilter(job_name=job_name, statuses=FINISHED, created_before=cutoff)
        while records := context.instance.get_run_records(filters=filters, limit=500):
            for record in records:
                context.instance.delete_run(record.dagster_run.run_id)
                context.instance.compute_log_manager.delete_logs(prefix=[record.dagster_run.run_id])
            deleted[job_name] = deleted.get(job_name, 0) + len(records)
    return dg.Output(
        None,
        metadata={
            "deleted_runs": sum(deleted.values()),
            "deleted_by_job": dg.MetadataValue.json(deleted),
            "older_than_days": config.older_than_days,
        },
    )


@dg.job(description="Delete old runs (but refresh_rollups') so Dagster's storage stays bounded (hourly schedule).")
def prune_old_runs():
    delete_old_runs()


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
