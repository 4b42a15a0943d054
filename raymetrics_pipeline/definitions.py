"""The code location: assembles what the other modules define."""

import dagster as dg

from raymetrics_pipeline.assets import ray_metrics_endpoints, raymetrics_at
from raymetrics_pipeline.jobs import maintain_local_store, prune_scrape_runs, scrape_and_ship
from raymetrics_pipeline.resources import resources_from_env, storage_location
from raymetrics_pipeline.schedules import maintain_local_store_schedule, prune_scrape_runs_schedule
from raymetrics_pipeline.sensors import ray_metrics_sensor

resources = resources_from_env()

defs = dg.Definitions(
    assets=[ray_metrics_endpoints, raymetrics_at(storage_location(resources["parseable"], resources["local_data"]))],
    jobs=[scrape_and_ship, prune_scrape_runs, maintain_local_store],
    sensors=[ray_metrics_sensor],
    schedules=[prune_scrape_runs_schedule, maintain_local_store_schedule],
    resources=resources,
)
