"""External assets: Ray's metrics endpoints and the dataset they feed (Parseable or the local store).

Neither is computed by Dagster; declaring them gives the lineage Ray → ``raymetrics`` →
rollups, and the scrape job reports a materialization of ``raymetrics`` for every delivery.
"""

import dagster as dg

RAYMETRICS_ASSET_KEY = dg.AssetKey("raymetrics")
OWNERS = ["team:raymetrics"]

ray_metrics_endpoints = dg.AssetSpec(
    "ray_metrics_endpoints",
    description="Ray's Prometheus /metrics endpoints (metrics agent, dashboard, autoscaler) on every node.",
    group_name="ingest",
    kinds={"ray", "prometheus"},
    owners=OWNERS,
)


def raymetrics_at(location: str) -> dg.AssetSpec:
    """The ``raymetrics`` dataset, showing where its rows are: a Parseable URL or a local folder."""
    return dg.AssetSpec(
        RAYMETRICS_ASSET_KEY,
        deps=[ray_metrics_endpoints],
        description=(
            "Ray metrics as OpenTelemetry data points in the Parseable dataset (PARSEABLE_STREAM, default "
            "raymetrics) or, without PARSEABLE_URL, the same rows in the embedded local store: one row per "
            "data point, columns named after Ray's label keys."
        ),
        group_name="ingest",
        kinds={"parseable", "opentelemetry"},
        owners=OWNERS,
        metadata={"location": location},
    )
