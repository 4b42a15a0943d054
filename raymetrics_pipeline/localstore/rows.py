"""The rows Parseable keeps for our OTLP metrics (docs/parseable.md#rows), built straight from them.

The embedded local store writes exactly these, so the same SQL gives the same answers on a
Parseable server and on disk: one row per data point, data-point attributes under their raw
keys (``NodeAddress``, case kept), then the point's own fields, then the metric's, then the
resource attributes (later writes win on a name clash, as in Parseable), numbers as Float64,
times as millisecond timestamps, and the ``p_*`` columns of the request.

Plain Python (rows as dicts, times as integer milliseconds): the scrape process writes them
without PyArrow, whose import alone is about 50 MB; ``localstore/arrow.py`` types them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from datetime import datetime

from raymetrics_pipeline.common import USER_AGENT
from raymetrics_pipeline.dataset.names import LOG_SOURCE, RECEIVED_AT, SERIES_HASH
from raymetrics_pipeline.ingest.otlp import CUMULATIVE, HistogramPoint, Metric, ResourceMetrics, SummaryPoint

# The type of every column that is not an attribute (attributes are strings): "timestamp" is milliseconds.
COLUMN_TYPES: dict[str, str] = {
    "metric_name": "string",
    "metric_description": "string",
    "metric_unit": "string",
    "metric_type": "string",
    "start_time_unix_nano": "timestamp",
    "time_unix_nano": "timestamp",
    "data_point_value": "float64",
    "data_point_flags": "float64",
    "data_point_flags_description": "string",
    "data_point_count": "float64",
    "data_point_sum": "float64",
    "data_point_bucket_counts": "list<int64>",
    "data_point_explicit_bounds": "list<float64>",
    "data_point_quantile_values_quantile": "list<float64>",
    "data_point_quantile_values_value": "list<float64>",
    "aggregation_temporality": "float64",
    "aggregation_temporality_description": "string",
    "is_monotonic": "bool",
    "resource_dropped_attributes_count": "float64",
    "resource_schema_url": "string",
    "scope_schema_url": "string",
    SERIES_HASH: "uint64",
    RECEIVED_AT: "timestamp",
    "p_user_agent": "string",
    "p_src_ip": "string",
    "p_format": "string",
}
_NO_FLAGS = {"data_point_flags": 0.0, "data_point_flags_description": "DO_NOT_USE"}
_CUMULATIVE = {"aggregation_temporality": float(CUMULATIVE), "aggregation_temporality_description": "CUMULATIVE"}


def _point_fields(metric: Metric, point) -> dict:
    fields: dict = {"start_time_unix_nano": 0, "time_unix_nano": point.time_unix_nano // 1_000_000}
    if isinstance(point, HistogramPoint):
        fields["data_point_count"] = float(point.count)
        if point.sum is not None:
            fields["data_point_sum"] = point.sum
        fields["data_point_bucket_counts"] = point.bucket_counts
        fields["data_point_explicit_bounds"] = point.explicit_bounds
        fields.update(_NO_FLAGS)
        fields.update(_CUMULATIVE)
    elif isinstance(point, SummaryPoint):
        fields["data_point_count"] = float(point.count)
        fields["data_point_sum"] = point.sum
        if point.quantiles:
            fields["data_point_quantile_values_quantile"] = [quantile for quantile, _ in point.quantiles]
            fields["data_point_quantile_values_value"] = [value for _, value in point.quantiles]
    else:
        fields.update(_NO_FLAGS)
        # Parseable stores a NaN or infinite value as null (serde_json has no such numbers).
        fields["data_point_value"] = point.value if math.isfinite(point.value) else None
        if metric.kind == "sum":
            fields.update(_CUMULATIVE)
            fields["is_monotonic"] = True
    return fields


def _series_hash(row: dict, attribute_keys: set[str]) -> int:
    """A stable u64 per series. Parseable's is FxHash; like its own docs say, treat it as opaque."""
    text = "\x00".join([row["metric_name"], *sorted(f"{key}={row[key]}" for key in attribute_keys)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def stored_rows(
    scrapes: Sequence[ResourceMetrics],
    received: datetime,
    source_ip: str = "127.0.0.1",
) -> list[dict]:
    """Every data point of ``scrapes`` as one row, as Parseable would store the request received at ``received``."""
    received_ms = int(received.timestamp() * 1000)
    system = {RECEIVED_AT: received_ms, "p_user_agent": USER_AGENT, "p_src_ip": source_ip, "p_format": LOG_SOURCE}
    rows: list[dict] = []
    for resource_attributes, metrics in scrapes:
        envelope = dict(zip(resource_attributes.keys, resource_attributes.values, strict=True))
        if resource_attributes:
            envelope["resource_dropped_attributes_count"] = 0.0
        envelope["resource_schema_url"] = ""
        envelope["scope_schema_url"] = ""
        for metric in metrics:
            metric_fields = {
                "metric_name": metric.name,
                "metric_description": metric.description,
                "metric_unit": "",
                "metric_type": metric.kind,
            }
            for point in metric.points:
                row = dict(zip(point.attributes.keys, point.attributes.values, strict=True))
                row.update(_point_fields(metric, point))
                row.update(metric_fields)
                row.update(envelope)
                row[SERIES_HASH] = _series_hash(row, {key for key in row if key not in COLUMN_TYPES})
                row.update(system)
                rows.append(row)
    return rows
