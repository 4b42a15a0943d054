"""``ray_metrics_sensor``: keeps one ``scrape_and_ship`` run scraping every 15 seconds.

Each run it starts scrapes for an hour (``ScrapeConfig``), recording every cycle; when a run ends,
fails or dies, the next tick (15 s) starts another, once a Ray endpoint answers.
"""

import time

import dagster as dg

from raymetrics_pipeline.ingest.scrape import probe_all
from raymetrics_pipeline.ingest.targets import TargetError
from raymetrics_pipeline.jobs import SCRAPE_INTERVAL_SECONDS, scrape_and_ship
from raymetrics_pipeline.resources import MetricsBackendResource, RayMetricsSource

# Each target gets a TCP connect this long, all at once: a tick costs well under a second even when every
# target is gone, and a run is launched only if one of them answers.
PROBE_TIMEOUT_SECONDS = 0.5
# A scrape run records events every cycle; a cycle lasts 15 s, or about two minutes when a large scrape is still
# being sent or Parseable is slow to answer (parseable/sink.py, client.py). A run "in flight" that has recorded
# nothing for longer has died (e.g. `kill -9`) without Dagster noticing, and must not block scraping forever.
STALE_RUN_SECONDS = 300
# The sensor's runs keep scraping (jobs.ScrapeConfig) until an hour has passed or a cycle fails. Their console
# (the run's captured stderr) leaves out Dagster's DEBUG line for each event, about 4 MB a day of text that
# repeats the event log; warnings and the pipeline's own messages stay.
KEEP_SCRAPING = {
    "ops": {"scrape_and_ship_metrics": {"config": {"cycles": 0}}},
    "loggers": {"console": {"config": {"log_level": "INFO"}}},
}
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
        latest = instance.get_records_for_run(record.dagster_run.run_id, limit=1, ascending=False).records
        last_heard = latest[0].timestamp if latest else record.create_timestamp.timestamp()
        if now - last_heard < STALE_RUN_SECONDS:
            return record.dagster_run.run_id
        instance.report_run_failed(
            record.dagster_run,
            message=(
                f"Marked failed by ray_metrics_sensor: still {record.dagster_run.status.value} but silent for "
                f"{now - last_heard:.0f} s, where a scrape cycle records events every 15 s; its process is "
                "presumed dead."
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
    description="Keeps a scrape_and_ship run scraping every 15 s: each run scrapes for an hour; when none is in "
    "flight, launch one unless no Ray metrics endpoint accepts a connection (the tick then says which, from where, "
    "and what to check).",
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
        return dg.SkipReason(f"Scrape run {running} is scraping.")
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
    return dg.RunRequest(run_key=f"scrape-{window}", run_config=KEEP_SCRAPING, tags=tags)
