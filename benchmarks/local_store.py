"""The local store's size per node per day, and queries over one hour on each backend.

One hour of a single Ray node (240 cycles, 15 s apart, each a round of the project's captured
scrapes of its three endpoints) goes into a local store and into the Parseable test double
(DataFusion over in-memory Arrow, standing in for a Parseable server, which cannot run here).
Prints the store's bytes per cycle before and after hourly compaction, the bytes per node per
day that implies, and how long the blog's three questions and one hourly partition of the
rollups take through the query layer on each backend, the local store both as written (one
file per cycle) and compacted.
The captured rounds repeat, which flatters compression: a live node's compacted bytes are higher.

Run: ``python benchmarks/local_store.py [--cycles N]``. The machine is shared: compare ratios.
"""

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from raymetrics_pipeline.dataset.query import MetricsQuery  # noqa: E402
from raymetrics_pipeline.ingest import otlp  # noqa: E402
from raymetrics_pipeline.ingest.otlp import ResourceMetrics  # noqa: E402
from raymetrics_pipeline.ingest.prometheus import NO_LABELS, parse  # noqa: E402
from raymetrics_pipeline.localstore.rows import stored_rows  # noqa: E402
from raymetrics_pipeline.localstore.sql import LocalSql  # noqa: E402
from raymetrics_pipeline.localstore.store import LocalStore  # noqa: E402
from raymetrics_pipeline.parseable.connection import ParseableSettings  # noqa: E402
from raymetrics_pipeline.parseable.sql import ParseableSql  # noqa: E402
from raymetrics_pipeline.rollups.database import ensure_schema, replace_window  # noqa: E402
from raymetrics_pipeline.rollups.pull import pull  # noqa: E402
from raymetrics_pipeline.rollups.tables import Window  # noqa: E402
from raymetrics_pipeline_tests.backends import ship  # noqa: E402
from raymetrics_pipeline_tests.blog_questions import QUESTIONS  # noqa: E402
from raymetrics_pipeline_tests.parseable_double import ParseableDouble  # noqa: E402
from raymetrics_pipeline_tests.scrape_fixtures import rounds, scrape_fixtures  # noqa: E402


def one_hour(cycles: int, start: datetime):
    """(receive time, the cycle's metrics) for ``cycles`` cycles 15 s apart, cycling through captured rounds."""
    captured = [r for r in rounds(scrape_fixtures(include_shared=False)) if len(r) == 3]
    for index in range(cycles):
        received = start + timedelta(seconds=15 * index)
        time_ns = int(received.timestamp() * 1e9)
        yield (
            received,
            [
                ResourceMetrics(NO_LABELS, otlp.to_metrics(parse(f.text()), time_ns).metrics)
                for f in captured[index % len(captured)]
            ],
        )


def timed(query: MetricsQuery, sql: str, start: datetime, end: datetime, repeat: int) -> tuple[float, int]:
    times, rows = [], 0
    for _ in range(repeat):
        began = time.perf_counter()
        rows = len(query.query(sql, start, end))
        times.append(time.perf_counter() - began)
    return statistics.median(times), rows


def rollup_seconds(query: MetricsQuery, window: Window, now: datetime, folder: str) -> tuple[float, int]:
    """One partition of ``minute_rollups``: pull through the query layer and replace it in DuckDB."""
    began = time.perf_counter()
    with duckdb.connect(str(Path(folder) / "rollups.duckdb")) as connection:
        ensure_schema(connection)
        written = replace_window(connection, window, pull(query, window, now))
    return time.perf_counter() - began, sum(written.rows.values())


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--cycles", type=int, default=240, help="cycles of 15 s (240 = one hour)")
    arguments.add_argument("--repeat", type=int, default=3)
    options = arguments.parse_args()
    start = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
    end = start + timedelta(seconds=15 * options.cycles)
    with tempfile.TemporaryDirectory() as folder, ParseableDouble() as parseable:
        store = LocalStore(folder)
        for received, scrapes in one_hour(options.cycles, start):
            store.write(stored_rows(scrapes, received), received)
            parseable.set_now(received)
            ship(parseable, scrapes)
        parseable_sql = ParseableSql(ParseableSettings(parseable.url, "admin", "admin").connect(60.0))
        with MetricsQuery(parseable_sql) as double, MetricsQuery(LocalSql(store)) as local:
            backends = {"parseable double": double, "local store": local}
            as_written = {
                question: [timed(backend, sql, start, end, options.repeat) for backend in backends.values()]
                for question, sql in QUESTIONS.items()
            }
            partition = Window(start, start + timedelta(hours=1))
            rollup_as_written = [rollup_seconds(backend, partition, end, folder) for backend in backends.values()]
            files, per_cycle = len(store.files()), store.size_bytes() / options.cycles
            compaction = store.compact(end + timedelta(hours=2))
            compacted = {
                question: timed(backends["local store"], sql, start, end, options.repeat)
                for question, sql in QUESTIONS.items()
            }
            rollup_compacted = rollup_seconds(backends["local store"], partition, end, folder)
    compacted_per_cycle = compaction.bytes_after / options.cycles
    print(f"{options.cycles} cycles of one node: {files} files, {compaction.rows_compacted:,} rows")
    print(f"local store: {per_cycle / 1e3:.1f} KB per cycle as written, {compacted_per_cycle / 1e3:.1f} KB compacted")
    print(
        f"per node per day (5,760 cycles): {per_cycle * 5760 / 1e6:.0f} MB as written, "
        f"{compacted_per_cycle * 5760 / 1e6:.0f} MB compacted"
    )
    for question in QUESTIONS:
        (double_seconds, rows), (local_seconds, _) = as_written[question]
        print(
            f"{question} ({rows} rows): parseable double {double_seconds * 1e3:,.0f} ms; local store "
            f"{local_seconds * 1e3:,.0f} ms as written, {compacted[question][0] * 1e3:,.0f} ms compacted"
        )
    (double_rollup, rows), (local_rollup, _) = rollup_as_written
    print(
        f"rollup of one hourly partition ({rows} minute rows, pull and DuckDB write): parseable double "
        f"{double_rollup:.2f} s; local store {local_rollup:.2f} s as written, {rollup_compacted[0]:.2f} s compacted"
    )


if __name__ == "__main__":
    main()
