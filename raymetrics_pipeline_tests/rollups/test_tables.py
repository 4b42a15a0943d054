"""The rollup declarations drive everything: the docs page, the DuckDB schema (new columns included), the pull."""

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from raymetrics_pipeline.dataset.query import MetricsQuery
from raymetrics_pipeline.ingest import otlp
from raymetrics_pipeline.ingest.otlp import ResourceMetrics
from raymetrics_pipeline.ingest.prometheus import NO_LABELS, parse
from raymetrics_pipeline.localstore.rows import rows_table
from raymetrics_pipeline.localstore.sql import LocalSql
from raymetrics_pipeline.localstore.store import LocalStore
from raymetrics_pipeline.rollups import tables
from raymetrics_pipeline.rollups.database import create_sql, ensure_schema, write_sql
from raymetrics_pipeline.rollups.pull import pull
from raymetrics_pipeline.rollups.tables import ALL_TABLES, MINUTE_TABLES, Column, Window
from raymetrics_pipeline_tests.scrape_fixtures import rounds, scrape_fixtures

ROOT = Path(__file__).resolve().parents[2]
WINDOW = Window(datetime(2026, 11, 28, 8, tzinfo=UTC), datetime(2026, 11, 28, 9, tzinfo=UTC))


def test_the_docs_page_is_written_from_the_declarations(tmp_path):
    page = ROOT / "docs" / "rollup-tables.md"
    assert page.read_text() == tables.reference(), "run: python tools/write_rollup_docs.py"
    written = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "write_rollup_docs.py"), str(tmp_path / "out.md")], check=True
    )
    assert written.returncode == 0 and (tmp_path / "out.md").read_text() == tables.reference()


@pytest.mark.parametrize("table", ALL_TABLES, ids=lambda t: t.name)
def test_every_declared_column_is_a_column_of_the_table(table, tmp_path):
    with duckdb.connect(str(tmp_path / "r.duckdb")) as connection:
        ensure_schema(connection)
        described = connection.execute(f"DESCRIBE {table.name}").fetchall()
    assert [(name, kind) for name, kind, *_ in described] == [(c.name, c.type) for c in table.columns]
    assert [name for name, _, nullable, key, *_ in described if key == "PRI"] == table.keys


@pytest.fixture(scope="module")
def one_round(tmp_path_factory):
    """A round of real Ray scrapes in a local store, received and sampled at 08:30."""
    root = tmp_path_factory.mktemp("store")
    sampled = WINDOW.start + timedelta(minutes=30)
    scrapes = [
        ResourceMetrics(NO_LABELS, otlp.to_metrics(parse(f.text()), int(sampled.timestamp() * 1e9)).metrics)
        for f in rounds(scrape_fixtures(include_shared=False))[-1]
    ]
    LocalStore(root).write(rows_table(scrapes, sampled), sampled)
    return root


@pytest.mark.parametrize("table", MINUTE_TABLES, ids=lambda t: t.name)
def test_the_pull_returns_exactly_the_pulled_columns(table, one_round):
    with MetricsQuery(LocalSql(LocalStore(one_round))) as query:
        rows = pull(query, WINDOW, WINDOW.end)[table.name]
    assert rows and all(list(row) == [c.name for c in table.pulled] for row in rows)
    assert {row["minute"] for row in rows} == {"2026-11-28T08:30:00"}


def test_a_column_declared_after_the_file_was_made_is_added_to_it(tmp_path, monkeypatch):
    database = str(tmp_path / "r.duckdb")
    node_minute = tables.NODE_MINUTE
    with duckdb.connect(database) as connection:
        connection.execute(create_sql(node_minute))
    extra = Column("cpu_percent_min", "DOUBLE", "CPU %, lowest sample.", pull="MIN(data_point_value)")
    grown = tables.MinuteTable(
        node_minute.name, node_minute.description, node_minute.source, (*node_minute.columns, extra)
    )
    monkeypatch.setattr("raymetrics_pipeline.rollups.database.ALL_TABLES", (grown, *ALL_TABLES[1:]))
    with duckdb.connect(database) as connection:
        ensure_schema(connection)
        columns = [
            name for (name,) in connection.execute("SELECT name FROM pragma_table_info('node_minute')").fetchall()
        ]
    assert columns[-1] == "cpu_percent_min" and "cpu_percent_min AS cpu_percent_min" not in write_sql(grown)
    assert "CAST(cpu_percent_min AS DOUBLE)" in write_sql(grown)
