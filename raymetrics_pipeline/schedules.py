"""Schedules: rollups and reports every 10 minutes, and housekeeping."""

import time
from datetime import timedelta

import dagster as dg

from raymetrics_pipeline.assets import (
    HOURLY,
    NODE_MINUTE_KEY,
    SCHEMA_CHECK,
    minute_rollups,
    ray_jobs,
    ray_run_comparison,
    summaries,
)
from raymetrics_pipeline.checks import (
    node_memory_pressure,
    node_minute_is_fresh_and_complete,
    object_store_pressure,
    raymetrics_is_fresh,
)
from raymetrics_pipeline.jobs import expire_rollups, maintain_storage, prune_old_runs
from raymetrics_pipeline.sensors import live_scrape_run

prune_old_runs_schedule = dg.ScheduleDefinition(
    job=prune_old_runs,
    cron_schedule="17 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every hour, delete runs older than three days, but refresh_rollups' (older_than_days in run config).",
)

maintain_storage_schedule = dg.ScheduleDefinition(
    job=maintain_storage,
    cron_schedule="*/10 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 10 minutes, the backend's upkeep: the local store's compaction and retention, spool leftovers.",
)

expire_rollups_schedule = dg.ScheduleDefinition(
    job=expire_rollups,
    cron_schedule="41 3 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily, delete rollup minutes older than RAYMETRICS_ROLLUP_RETENTION_DAYS.",
)

REPORT_CHECKS = (raymetrics_is_fresh, node_minute_is_fresh_and_complete, object_store_pressure, node_memory_pressure)

refresh_rollups = dg.define_asset_job(
    "refresh_rollups",
    # The assets with only their in-asset column check: the other checks run with the reports.
    selection=dg.AssetSelection.assets(minute_rollups).without_checks()
    | dg.AssetSelection.checks(dg.AssetCheckKey(NODE_MINUTE_KEY, SCHEMA_CHECK)),
    description="Pull an hour's minute aggregates into DuckDB (run per partition; backfills run as one run).",
    # One process for all steps: a process per step cost about as much CPU as the work, every 10 minutes.
    executor_def=dg.in_process_executor,
)
refresh_reports = dg.define_asset_job(
    "refresh_reports",
    selection=dg.AssetSelection.assets(summaries, ray_jobs, ray_run_comparison)
    | dg.AssetSelection.checks(*REPORT_CHECKS),
    description="Session and job summaries, Ray's own job figures, the run comparison, and the freshness and "
    "pressure checks.",
    executor_def=dg.in_process_executor,
)


@dg.schedule(
    # Every 10 minutes: a rollup run stores about 60 KB of events, so every 5 minutes cost 18 MB a day.
    cron_schedule="*/10 * * * *",
    job=refresh_rollups,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 10 minutes: refresh the current and previous hour's rollups (late points included), in one run.",
)
def rollups_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    now = context.scheduled_execution_time
    first, last = (HOURLY.get_partition_key_for_timestamp(hour.timestamp()) for hour in (now - timedelta(hours=1), now))
    # A range of partitions in one run, as Dagster's single-run backfills tag it (minute_rollups backfills as one
    # run): half the runs of one per hour.
    return dg.RunRequest(
        run_key=f"{first}..{last}@{now:%Y%m%d%H%M}",
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
    )


# Every third reports run (every 30 minutes) also redraws the comparison: its tables and chart are about
# 35 KB of metadata, the most of any asset; the summaries, Ray's jobs and the checks run every time.
# Materialize ray_run_comparison to see it at once.
COMPARISON_EVERY_MINUTES = 30


@dg.schedule(
    cron_schedule="2-59/10 * * * *",
    job=refresh_reports,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 10 minutes, just after the rollups: summaries, Ray's jobs and the checks (raymetrics_is_fresh "
    "only while no scrape run is in flight); the run comparison every 30 minutes.",
)
def refresh_reports_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    assets = [*summaries.keys, *ray_jobs.keys]
    if context.scheduled_execution_time.minute % COMPARISON_EVERY_MINUTES < 10:
        assets += ray_run_comparison.keys
    checks = [key for check in REPORT_CHECKS for key in check.check_keys]
    if live_scrape_run(context.instance, time.time()):
        # The scrape run records this check's verdict itself, and the UI shows the newest run's evaluation:
        # one from this run would hide the scrape run's on every materialization after it (checks.py).
        checks.remove(raymetrics_is_fresh.check_key)
    return dg.RunRequest(asset_selection=assets, asset_check_keys=checks)
