"""The code location: assembles what the other modules define."""

import dagster as dg

from raymetrics_pipeline.assets import ray_metrics_endpoints, raymetrics_at
from raymetrics_pipeline.checks import (
    node_memory_pressure,
    node_minute_is_fresh_and_complete,
    object_store_pressure,
    raymetrics_is_fresh,
)
from raymetrics_pipeline.jobs import maintain_local_store, prune_scrape_runs, scrape_and_ship
from raymetrics_pipeline.resources import resources_from_env, storage_location
from raymetrics_pipeline.rollup_assets import minute_rollups, ray_run_comparison, summaries
from raymetrics_pipeline.schedules import (
    maintain_local_store_schedule,
    prune_scrape_runs_schedule,
    refresh_reports,
    refresh_rollups,
    reports_schedule,
    rollups_schedule,
)
from raymetrics_pipeline.sensors import ray_metrics_sensor

resources = resources_from_env()

defs = dg.Definitions(
    assets=[
        ray_metrics_endpoints,
        raymetrics_at(storage_location(resources["parseable"], resources["local_data"])),
        minute_rollups,
        summaries,
        ray_run_comparison,
    ],
    asset_checks=[raymetrics_is_fresh, node_minute_is_fresh_and_complete, object_store_pressure, node_memory_pressure],
    jobs=[scrape_and_ship, prune_scrape_runs, maintain_local_store, refresh_rollups, refresh_reports],
    sensors=[ray_metrics_sensor],
    schedules=[prune_scrape_runs_schedule, maintain_local_store_schedule, rollups_schedule, reports_schedule],
    resources=resources,
)
