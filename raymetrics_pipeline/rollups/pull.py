"""Pull one window's minute aggregates through the query layer, wherever the rows are."""

from __future__ import annotations

from datetime import datetime

from raymetrics_pipeline.dataset.query import MetricsQuery
from raymetrics_pipeline.rollups.tables import MINUTE_TABLES, REQUIRED_COLUMNS, Window


def pull(query: MetricsQuery, window: Window, now: datetime) -> dict[str, list[dict]]:
    """Every minute table's rows for ``window``, by table name."""
    ingest_start, ingest_end = window.ingest_window(now)
    columns = query.columns(ingest_start, ingest_end)
    return {
        table.name: query.query(table.pull_sql(window, columns), ingest_start, ingest_end) for table in MINUTE_TABLES
    }


def missing_columns(query: MetricsQuery, window: Window, now: datetime) -> list[str]:
    """Columns the rollups need that the dataset lacks over this window's ingest time."""
    columns = query.columns(*window.ingest_window(now))
    return [name for name in REQUIRED_COLUMNS if name not in columns]
