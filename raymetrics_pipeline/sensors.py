"""``ray_metrics_sensor``: starts a ``scrape_and_ship`` run about every 15 seconds."""

import time

import dagster as dg

from raymetrics_pipeline.ingest.scrape import probe_all
from raymetrics_pipeline.ingest.targets import TargetError
from raymetrics_pipeline.jobs import CYCLE_BUDGET_SECONDS, scrape_and_ship
from raymetrics_pipeline.resources import MetricsBackendResource, RayMetricsSource

SCRAPE_INTERVAL_SECONDS = 15
# Each target gets a TCP connect this long, all at once: a tick costs well under a second even when every
# target is gone, and a run is launched only if one of them answers.
PROBE_TIMEOUT_SECONDS = 0.5
# A scrape run ends within its budget, or about two minutes after it when a large scrape is still being
# sent or Parseable is slow to answer (parseable/sink.py, client.py); one still "in flight" long after that
# has died (e.g. `kill -9`) without Dagster noticing, and must not block scraping forever.
STALE_RUN_SECONDS = 300
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
    # By name, not `job=scrape_and_ship`: with the job object, Definitions rebinds the sensor to the job with
    # the resources attached and passes `owners=[]` on, which made Dagster 1.13 print a BetaWarning
    # ("Parameter `owners` of initializer `SensorDefinition.__init__` is currently in beta") in the code
    # server and in every scrape run, every 15 s. The job is in the same Definitions, so the name resolves.
    job_name=scrape_and_ship.name,
    minimum_interval_seconds=SCRAPE_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 15 s, launch scrape_and_ship unless the previous scrape is still running or no Ray "
    "metrics endpoint accepts a connection (the tick then says which, from where, and what to check).",
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
    probes = probe_all(list(discovery.targets), PROBE_TIMEOUT_SECONDS)
    answering = sum(probe.answers for probe in probes)
    if not answering:
        return dg.SkipReason(discovery.unreachable_reason({probe.target: probe.error for probe in probes}))
    window = int(now) // SCRAPE_INTERVAL_SECONDS * SCRAPE_INTERVAL_SECONDS
    tags = {
        "raymetrics/targets": str(len(discovery.targets)),
        "raymetrics/targets_answering": str(answering),
        "raymetrics/discovered_from": discovery.source,
    }
    if discovery.session:
        tags["raymetrics/session"] = discovery.session
    return dg.RunRequest(run_key=f"scrape-{window}", tags=tags)
