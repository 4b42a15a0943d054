"""Schedules for housekeeping."""

import dagster as dg

from raymetrics_pipeline.jobs import maintain_local_store, prune_scrape_runs

prune_scrape_runs_schedule = dg.ScheduleDefinition(
    job=prune_scrape_runs,
    cron_schedule="17 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every hour, delete scrape runs older than three days (change older_than_days in the run config).",
)

maintain_local_store_schedule = dg.ScheduleDefinition(
    job=maintain_local_store,
    cron_schedule="*/10 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 10 minutes, fold the local store's cycle files into hourly files and apply its retention.",
)
