"""The code location: assembles what the other modules define."""

import dagster as dg

from raymetrics_pipeline.assets import (
    minute_rollups,
    ray_dashboard,
    ray_jobs,
    ray_metrics_endpoints,
    ray_run_comparison,
    raymetrics_in,
    summaries,
)
from raymetrics_pipeline.checks import (
    node_memory_pressure,
    node_minute_is_fresh_and_complete,
    object_store_pressure,
    raymetrics_is_fresh,
)
from raymetrics_pipeline.jobs import expire_rollups, maintain_storage, prune_old_runs, scrape_job
from raymetrics_pipeline.resources import resources_from_env, scale_out_from_env
from raymetrics_pipeline.schedules import (
    expire_rollups_schedule,
    maintain_storage_schedule,
    prune_old_runs_schedule,
    refresh_reports,
    refresh_reports_schedule,
    refresh_rollups,
    rollups_schedule,
)
from raymetrics_pipeline.sensors import ray_metrics_sensor

resources = resources_from_env()

defs = dg.Definitions(
    assets=[
        ray_metrics_endpoints,
        raymetrics_in(resources["backend"]),
        ray_dashboard,
        minute_rollups,
        summaries,
        ray_jobs,
        ray_run_comparison,
    ],
    asset_checks=[raymetrics_is_fresh, node_minute_is_fresh_and_complete, object_store_pressure, node_memory_pressure],
    jobs=[
        scrape_job(scale_out_from_env()),
        prune_old_runs,
        maintain_storage,
        expire_rollups,
        refresh_rollups,
        refresh_reports,
    ],
    sensors=[ray_metrics_sensor],
    schedules=[
        prune_old_runs_schedule,
        maintain_storage_schedule,
        expire_rollups_schedule,
        rollups_schedule,
        refresh_reports_schedule,
    ],
    resources=resources,
)
