"""The rollup declarations drive everything: the docs page, the DuckDB schema (new columns included), the pull."""

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from raymetrics_pipeline.dataset.names import SERIES_HASH
from raymetrics_pipeline.dataset.query import MetricsQuery
from raymetrics_pipeline.ingest import otlp
from raymetrics_pipeline.ingest.otlp import ResourceMetrics
from raymetrics_pipeline.ingest.prometheus import NO_LABELS, parse
from raymetrics_pipeline.localstore.rows import stored_rows
from raymetrics_pipeline.localstore.sql import LocalSql
from raymetrics_pipeline.localstore.store import LocalStore
from raymetrics_pipeline.rollups import tables
from raymetrics_pipeline.rollups.database import create_sql, ensure_schema, write_sql
from raymetrics_pipeline.rollups.pull import pull
from raymetrics_pipeline.rollups.tables import ALL_TABLES, MINUTE_TABLES, Column, Window
from raymetrics_pipeline_tests.scrape_fixtures import rounds, scrape_fixtures
from raymetrics_pipeline_tests.test_duplicate_deliveries import as_the_cycle_hands_it
from raymetrics_pipeline_tests.test_recorded_runs import recorded_fixtures

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
    LocalStore(root).write(stored_rows(scrapes, sampled), sampled)
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


# A round of the recorded ``repeat`` session while its first job runs: many WORKER_HEAP series, live actors and
# running tasks under the job's id, each target's rows carrying its service.instance.id.
BUSY_ROUND = rounds(recorded_fixtures("repeat"))[2]
# Parseable's series hash as each version names it: HEAD (and the local store), v2.8.0-v2.9.5, none before.
HASHES = {"__series_hash_u64": int, "__series_hash": str, None: None}


def busy_round(sampled: datetime, received: datetime, series_hash: str | None) -> list[dict]:
    """``BUSY_ROUND`` sampled at ``sampled`` as the local store writes it received at ``received``, its series hash
    named and typed as ``series_hash`` says (none: a Parseable before v2.8)."""
    shift = sampled - datetime.fromtimestamp(BUSY_ROUND[0].scrape_time_unix_nano / 1e9, UTC)
    rows = stored_rows(as_the_cycle_hands_it(BUSY_ROUND, shift), received)
    for row in rows:
        value = row.pop(SERIES_HASH)
        if series_hash is not None:
            row[series_hash] = HASHES[series_hash](value)
    return rows


def pulled(store: LocalStore) -> dict[str, list]:
    with MetricsQuery(LocalSql(store)) as query:
        return {name: sorted(rows, key=repr) for name, rows in pull(query, WINDOW, WINDOW.end).items()}


@pytest.mark.parametrize("series_hash", HASHES, ids=["HEAD", "v2.8-v2.9.5", "before v2.8"])
def test_a_point_stored_twice_counts_once_whatever_parseable_wrote(series_hash, tmp_path):
    """The second copy of a body, stored minutes later, changes no pulled row: found by Parseable's series hash, or
    without one by every label."""
    sampled = WINDOW.start + timedelta(minutes=30)
    once, twice = LocalStore(tmp_path / "once"), LocalStore(tmp_path / "twice")
    for store, delays in ((once, [2]), (twice, [2, 190])):
        for delay in delays:
            received = sampled + timedelta(seconds=delay)
            store.write(busy_round(sampled, received, series_hash), received)
    one_copy = pulled(once)
    assert one_copy["object_store_minute"] and one_copy["job_minute"]
    assert pulled(twice) == one_copy


def test_rows_parseable_stored_before_it_hashed_series_are_all_kept(tmp_path):
    """In a dataset that has the hash now, rows stored without one count as they are, none taken for a copy of
    another."""
    first, second = WINDOW.start + timedelta(minutes=30), WINDOW.start + timedelta(minutes=31)
    upgraded, hashed = LocalStore(tmp_path / "upgraded"), LocalStore(tmp_path / "hashed")
    for store, before_upgrade in ((upgraded, None), (hashed, "__series_hash_u64")):
        store.write(busy_round(first, first, before_upgrade), first)
        store.write(busy_round(second, second, "__series_hash_u64"), second)
    assert pulled(upgraded) == pulled(hashed)
