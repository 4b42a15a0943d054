"""``ray_metrics_sensor``: starts a ``scrape_and_ship`` run about every 15 seconds."""

import time

import dagster as dg

from raymetrics_pipeline.ingest.targets import TargetError
from raymetrics_pipeline.jobs import CYCLE_BUDGET_SECONDS, scrape_and_ship
from raymetrics_pipeline.resources import MetricsBackendResource, RayMetricsSource

SCRAPE_INTERVAL_SECONDS = 15
# A scrape run ends within its budget; one still "in flight" long after that has died
# (e.g. `kill -9`) without Dagster noticing, and must not block scraping forever.
STALE_RUN_SECONDS = 120
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def live_scrape_run(instance: dg.DagsterInstance, now: float) -> str | None:
    """The id of a scrape run genuinely in flight; runs that are only on record are marked failed."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=scrape_and_ship.name, statuses=IN_FLIGHT), limit=10
    )
    for record in records:
        started = record.start_time or record.create_timestamp.timestamp()
        if now - started < STALE_RUN_SECONDS:
            return record.dagster_run.run_id
        instance.report_run_failed(
            record.dagster_run,
            message=(
                f"Marked failed by ray_metrics_sensor: still {record.dagster_run.status.value} "
                f"{now - started:.0f} s after it began, far past the {CYCLE_BUDGET_SECONDS:.0f} s a scrape takes; "
                "its process is presumed dead."
            ),
        )
    return None


@dg.sensor(
    job=scrape_and_ship,
    minimum_interval_seconds=SCRAPE_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 15 s, launch scrape_and_ship unless the previous scrape is still running.",
)
def ray_metrics_sensor(
    context: dg.SensorEvaluationContext, ray_metrics: RayMetricsSource, backend: MetricsBackendResource
):
    problem = backend.problem()
    if problem:
        return dg.SkipReason(problem)
    now = time.time()
    running = live_scrape_run(context.instance, now)
    if running:
        return dg.SkipReason(f"The previous scrape run {running} is still in flight.")
    try:
        discovery = ray_metrics.discover()
    except TargetError as error:
        return dg.SkipReason(str(error))
    if not discovery.targets:
        return dg.SkipReason(discovery.skip_reason())
    window = int(now) // SCRAPE_INTERVAL_SECONDS * SCRAPE_INTERVAL_SECONDS
    return dg.RunRequest(
        run_key=f"scrape-{window}",
        tags={"raymetrics/targets": str(len(discovery.targets)), "raymetrics/discovered_from": discovery.source},
    )
