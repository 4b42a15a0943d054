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
    cron_schedule="5 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every hour, compact the local store's finished hours and delete data past its retention.",
)
