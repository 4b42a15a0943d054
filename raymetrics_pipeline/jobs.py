"""The ``scrape_and_ship`` job: one scrape of every Ray endpoint, shipped to Parseable."""

import time
from datetime import UTC, datetime

import dagster as dg

from raymetrics_pipeline.assets import RAYMETRICS_ASSET_KEY
from raymetrics_pipeline.cycle import CycleReport, run_cycle
from raymetrics_pipeline.resources import LocalDataResource, ParseableResource, RayMetricsSource
from raymetrics_pipeline.targets import TargetError

# The op must end well inside the sensor's 15 s interval so no tick is skipped for it.
CYCLE_BUDGET_SECONDS = 12.0


def _target_table(report: CycleReport) -> str:
    rows = [
        "| target | HTTP | samples | data points | bytes | seconds | parse errors | error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in report.targets:
        error = (t.error or "; ".join(t.first_parse_errors)).replace("|", "\\|")
        rows.append(
            f"| {t.target} | {t.status or '-'} | {t.samples} | {t.data_points} | {t.bytes} | "
            f"{t.duration_seconds:.3f} | {t.parse_errors} | {error} |"
        )
    return "\n".join(rows)


def cycle_metadata(report: CycleReport, discovery_source: str, destination: str) -> dict:
    return {
        "destination": destination,
        "discovered_from": discovery_source,
        "targets": len(report.targets),
        "targets_up": report.targets_up,
        "samples": report.samples,
        "data_points": report.data_points,
        "series": report.series,
        "parse_errors": report.parse_errors,
        "non_finite_values": report.non_finite_values,
        "requests": report.requests,
        "retries": report.retries,
        "http_statuses": dg.MetadataValue.json(sorted(set(report.http_statuses))),
        "bytes_raw": report.bytes_raw,
        "bytes_compressed": report.bytes_compressed,
        "bodies_spooled": report.bodies_spooled,
        "bodies_rejected": report.bodies_rejected,
        "spooled_bodies_delivered": report.spooled_bodies_delivered,
        "spool_pending": report.spool_pending,
        "spool_dropped": report.spool_dropped,
        "duration_seconds": round(report.duration_seconds, 3),
        "per_target": dg.MetadataValue.md(_target_table(report)),
    }


@dg.op(description="Scrape every Ray metrics endpoint and POST the samples to Parseable as OTLP metrics.")
def scrape_and_ship_metrics(
    context: dg.OpExecutionContext,
    ray_metrics: RayMetricsSource,
    parseable: ParseableResource,
    local_data: LocalDataResource,
) -> dg.Output[None]:
    try:
        discovery = ray_metrics.discover()
        resource_attributes = ray_metrics.attributes()
    except (TargetError, ValueError) as error:
        raise dg.Failure(description=str(error)) from error
    if not discovery.targets:
        context.log.warning(discovery.skip_reason())
    with parseable.client() as client:
        report = run_cycle(
            list(discovery.targets),
            client,
            local_data.spool(),
            scrape_timeout_seconds=ray_metrics.scrape_timeout_seconds,
            resource_attributes=resource_attributes,
            budget_seconds=CYCLE_BUDGET_SECONDS,
        )
        destination = f"{client.url} (dataset {client.stream})"
    metadata = cycle_metadata(report, discovery.source, destination)
    for target in report.targets:
        if target.error:
            context.log.warning(f"scrape of {target.target} failed: {target.error}")
        for parse_error in target.first_parse_errors:
            context.log.warning(f"{target.target}: skipped {parse_error}")
    if report.bodies_sent or report.spooled_bodies_delivered:
        context.log_event(
            dg.AssetMaterialization(
                asset_key=RAYMETRICS_ASSET_KEY,
                description=f"{report.data_points} data points from {report.targets_up} targets",
                metadata=metadata,
            )
        )
    for error in report.delivery_errors:
        context.log.warning(error)
    if report.bodies_spooled or report.bodies_rejected:
        raise dg.Failure(
            description=(
                f"Delivery to Parseable failed: {report.bodies_spooled} request(s) kept in the spool for the next "
                f"run ({report.spool_pending} pending), {report.bodies_rejected} refused for good and set aside in "
                f"spool/rejected. First error: {report.delivery_errors[0]}"
            ),
            metadata=metadata,
        )
    if discovery.targets and not report.targets_up:
        raise dg.Failure(description="Every Ray metrics endpoint failed to answer.", metadata=metadata)
    return dg.Output(None, metadata=metadata)


@dg.job(
    description="Scrape Ray's metrics endpoints once and ship them to Parseable (ray_metrics_sensor: every 15 s).",
    executor_def=dg.in_process_executor,
    tags={"raymetrics/lane": "scrape"},
)
def scrape_and_ship():
    scrape_and_ship_metrics()


class PruneRunsConfig(dg.Config):
    older_than_days: float = 3.0


FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


@dg.op(
    description=(
        "Delete finished scrape_and_ship runs and their event logs older than `older_than_days`: open-source "
        "Dagster keeps every run forever, and the 15 s sensor makes about 5,760 a day."
    )
)
def delete_old_scrape_runs(context: dg.OpExecutionContext, config: PruneRunsConfig) -> dg.Output[None]:
    cutoff = time.time() - config.older_than_days * 86_400
    filters = dg.RunsFilter(
        job_name=scrape_and_ship.name, statuses=FINISHED, created_before=datetime.fromtimestamp(cutoff, UTC)
    )
    deleted = 0
    while records := context.instance.get_run_records(filters=filters, limit=500):
        for record in records:
            context.instance.delete_run(record.dagster_run.run_id)
        deleted += len(records)
    return dg.Output(None, metadata={"deleted_runs": deleted, "older_than_days": config.older_than_days})


@dg.job(description="Delete old scrape_and_ship runs so Dagster's storage stays bounded (hourly schedule).")
def prune_scrape_runs():
    delete_old_scrape_runs()
