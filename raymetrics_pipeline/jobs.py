"""Jobs: ``scrape_and_ship`` (one scrape of every Ray endpoint, to Parseable or the local store)
and the housekeeping that keeps Dagster's run storage and the local store bounded."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import dagster as dg

from raymetrics_pipeline.assets import RAYMETRICS_ASSET_KEY
from raymetrics_pipeline.cycle import CycleReport, LocalStoreSink, ParseableSink, Sink, run_cycle
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


def cycle_metadata(report: CycleReport, discovery_source: str, sink: str, destination: str) -> dict:
    return {
        "sink": sink,
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
        "rows_stored": report.rows_stored,
        "bytes_stored": report.bytes_stored,
        "duration_seconds": round(report.duration_seconds, 3),
        "per_target": dg.MetadataValue.md(_target_table(report)),
    }


@contextmanager
def open_sink(parseable: ParseableResource, local_data: LocalDataResource) -> Iterator[tuple[str, Sink]]:
    """Parseable when ``PARSEABLE_URL`` is set, else the embedded local store; with the sink's name."""
    if not parseable.configured:
        yield "local store", LocalStoreSink(local_data.store(parseable.stream))
        return
    with parseable.client() as client:
        yield "parseable", ParseableSink(client, local_data.spool())


@dg.op(
    description=(
        "Scrape every Ray metrics endpoint and POST the samples to Parseable as OTLP metrics, or, without "
        "PARSEABLE_URL, write the rows Parseable would keep to the embedded local store."
    )
)
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
    with open_sink(parseable, local_data) as (sink_name, sink):
        destination = sink.where()
        try:
            report = run_cycle(
                list(discovery.targets),
                sink,
                scrape_timeout_seconds=ray_metrics.scrape_timeout_seconds,
                resource_attributes=resource_attributes,
                budget_seconds=CYCLE_BUDGET_SECONDS,
            )
        except OSError as error:
            raise dg.Failure(
                description=(
                    f"Could not write to the {destination}: {error}. Free disk space there or point "
                    "RAYMETRICS_DATA_DIR at a writable folder."
                )
            ) from error
    metadata = cycle_metadata(report, discovery.source, sink_name, destination)
    for target in report.targets:
        if target.error:
            context.log.warning(f"scrape of {target.target} failed: {target.error}")
        for parse_error in target.first_parse_errors:
            context.log.warning(f"{target.target}: skipped {parse_error}")
    if report.bodies_sent or report.spooled_bodies_delivered or report.rows_stored:
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


@dg.op(
    description=(
        "Fold the local store's per-cycle files into one Parquet file per hour and delete hours older than "
        "RAYMETRICS_LOCAL_RETENTION_DAYS; safe while scrape runs write."
    )
)
def compact_and_expire_local_store(parseable: ParseableResource, local_data: LocalDataResource) -> dg.Output[None]:
    store = local_data.store(parseable.stream)
    now = datetime.now(UTC)
    retention = store.delete_before(now - timedelta(days=local_data.retention_days))
    compaction = store.compact(now)
    return dg.Output(
        None,
        metadata={
            "location": store.location,
            "hours_compacted": compaction.hours_compacted,
            "files_before": compaction.files_before,
            "files_after": compaction.files_after,
            "rows_compacted": compaction.rows,
            "bytes_before": compaction.bytes_before,
            "bytes_after": compaction.bytes_after,
            "retention_days": local_data.retention_days,
            "hours_deleted": retention.hours_deleted,
            "files_deleted": retention.files_deleted,
            "bytes_deleted": retention.bytes_deleted,
            "store_bytes": store.size_bytes(),
        },
    )


@dg.job(description="Compact the embedded local store and apply its retention (every 10 minutes).")
def maintain_local_store():
    compact_and_expire_local_store()
