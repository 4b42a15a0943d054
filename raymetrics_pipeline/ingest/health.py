"""The pipeline's own metrics, shipped beside Ray's into the same dataset and on the same clock.

Every scrape of a target adds ``raymetrics_pipeline_up`` and its scrape figures to that target's
rows, and every delivery adds the sink's figures (HTTP status, retries, spool depth and age, or
rows stored). So Parseable shows transport health next to Ray's metrics, as Fluent Bit's log
did, and the rollups know which targets answered at each scrape: a Ray series missing from a
scrape whose target was up has left (its level is 0), not merely gone unseen.

The rows a target produced carry the target (``host:port``) as the resource attribute
``service.instance.id``, the name the OpenTelemetry Collector's Prometheus receiver gives it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from raymetrics_pipeline.ingest.otlp import Metric, NumberPoint, ResourceMetrics
from raymetrics_pipeline.ingest.prometheus import NO_LABELS, LabelSet

TARGET_ATTRIBUTE = "service.instance.id"
PREFIX = "raymetrics_pipeline_"
UP = PREFIX + "up"

# Every figure the pipeline reports about itself, by name without the prefix: what it means.
DESCRIPTIONS = {
    "up": "1 if the target answered the scrape with HTTP 200, else 0.",
    "scrape_duration_seconds": "Seconds the scrape of the target took.",
    "scrape_bytes": "Bytes the target served.",
    "scrape_samples": "Samples in the target's answer.",
    "scrape_data_points": "OTLP data points made from the target's answer.",
    "scrape_series": "Distinct series in the target's answer.",
    "scrape_parse_errors": "Lines of the target's answer that could not be read (skipped).",
    "delivery_requests": "HTTP requests made to Parseable in the cycle.",
    "delivery_retries": "Requests retried in the cycle (timeouts, 429, 5xx).",
    "delivery_http_status": "The last HTTP status Parseable answered in the cycle (0: no answer).",
    "delivery_bodies_spooled": "Request bodies kept in the spool for a later cycle.",
    "delivery_bodies_rejected": "Request bodies Parseable refused for good (set aside in spool/rejected).",
    "spool_bodies": "Request bodies waiting in the spool after the cycle.",
    "spool_bytes": "Bytes waiting in the spool after the cycle.",
    "spool_oldest_age_seconds": "Age of the oldest body waiting in the spool (0 when empty).",
    "spool_dropped": "Waiting bodies dropped, oldest first, to keep the spool under RAYMETRICS_SPOOL_MAX_BYTES.",
    "spool_expired": "Waiting bodies dropped for being older than RAYMETRICS_SPOOL_MAX_AGE_HOURS.",
    "rejected_dropped": "Refused bodies dropped, oldest first, to keep spool/rejected under its bound.",
    "delivery_ambiguous_requests": "Requests sent whose answer never came (Parseable may have stored them); "
    "kept and sent again.",
    "spool_interrupted_resends": "Spooled bodies a killed run was resending (Parseable may have stored them); "
    "sent again.",
    "delivery_rows_stored": "Rows the cycle wrote to the embedded local store.",
}

# Builds the rows of the pipeline's own figures for a delivery: names without the prefix → values.
Reporter = Callable[[Mapping[str, float]], ResourceMetrics]


def target_resource(resource: LabelSet, target: str) -> LabelSet:
    """The resource of a target's rows: the configured attributes and the target itself."""
    return LabelSet((*resource.keys, TARGET_ATTRIBUTE), (*resource.values, target))


def gauges(values: Mapping[str, float], time_unix_nano: int) -> list[Metric]:
    """One gauge point per figure, named ``raymetrics_pipeline_<name>``."""
    return [
        Metric(PREFIX + name, DESCRIPTIONS[name], "gauge", [NumberPoint(NO_LABELS, time_unix_nano, float(value))])
        for name, value in values.items()
    ]


def reporter(resource: LabelSet, time_unix_nano: int) -> Reporter:
    """A sink's way to add its delivery figures to the dataset, on the cycle's clock."""
    return lambda values: ResourceMetrics(resource, gauges(values, time_unix_nano))
