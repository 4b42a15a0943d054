"""Backends and rollup resources as the tests build them, and a way to ship metrics into the double."""

import time
from collections.abc import Sequence
from pathlib import Path

from raymetrics_pipeline.ingest.otlp import ResourceMetrics
from raymetrics_pipeline.parseable.client import IngestClient
from raymetrics_pipeline.parseable.connection import ParseableSettings
from raymetrics_pipeline.parseable.encode import DEFAULT_MAX_REQUEST_BYTES, JSON, encode
from raymetrics_pipeline.parseable.status import Verdict
from raymetrics_pipeline.resources import LocalStoreResource, ParseableResource, RollupsDatabase, RollupSettings
from raymetrics_pipeline_tests.parseable_double import ParseableDouble

BACKENDS = ("parseable", "local store")


def local_backend(data_dir: Path, stream: str = "raymetrics") -> LocalStoreResource:
    return LocalStoreResource(data_dir=str(data_dir), stream=stream)


def parseable_backend(
    double: ParseableDouble, data_dir: Path, stream: str = "raymetrics", username="admin", password="admin"
) -> ParseableResource:
    return ParseableResource(
        url=double.url, username=username, password=password, data_dir=str(data_dir), stream=stream
    )


def rollup_resources(data_dir: Path, database: str = "rollups.duckdb") -> dict:
    return {
        "rollups_db": RollupsDatabase(database=str(data_dir / database)),
        "rollup_settings": RollupSettings(reports_dir=str(data_dir / "comparison")),
    }


def ship(double: ParseableDouble, scrapes: Sequence[ResourceMetrics], stream: str = "raymetrics") -> None:
    """POST ``scrapes`` into the double as the pipeline does, and insist every body is stored."""
    settings = ParseableSettings(double.url, "admin", "admin", stream)
    with settings.connect(10.0) as connection:
        client = IngestClient(connection)
        for body in encode(scrapes, JSON, DEFAULT_MAX_REQUEST_BYTES):
            outcome = client.post(body, time.monotonic() + 10)
            assert outcome.verdict is Verdict.SENT, outcome.error
