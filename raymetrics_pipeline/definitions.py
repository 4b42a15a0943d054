"""The code location: assembles what the other modules define."""

import dagster as dg

from raymetrics_pipeline.assets import ray_metrics_endpoints, raymetrics
from raymetrics_pipeline.jobs import prune_scrape_runs, scrape_and_ship
from raymetrics_pipeline.resources import resources_from_env
from raymetrics_pipeline.schedules import prune_scrape_runs_schedule
from raymetrics_pipeline.sensors import ray_metrics_sensor

defs = dg.Definitions(
    assets=[ray_metrics_endpoints, raymetrics],
    jobs=[scrape_and_ship, prune_scrape_runs],
    sensors=[ray_metrics_sensor],
    schedules=[prune_scrape_runs_schedule],
    resources=resources_from_env(),
)
