"""Nothing doubled: a body that reaches the dataset twice changes no rollup and no comparison.

Parseable has no idempotency key: a request it stored whose answer timed out comes back from the spool and is
stored again, stamped with a later ``p_timestamp``. The recorded sessions (``fixtures/ray-2.60-runs``), moved to
three hours ago, are delivered round by round (each round as the scrape cycle converts it) into the Parseable double,
over loopback HTTP by the project's encoder and ingest client, and into the local store, as the rows its sink writes;
each round a few seconds after it was sampled. One hourly partition is rolled up, summarised and compared. Then every
round arrives again, later: some in the same minute of ``p_timestamp``, some minutes later, some in a later hour.
Rolled up again, every table and the comparison must be what one copy gave.
"""

from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import pytest

from raymetrics_pipeline.assets import HOURLY, minute_rollups, ray_run_comparison, summaries
from raymetrics_pipeline.ingest.cycle import convert
from raymetrics_pipeline.ingest.otlp import ResourceMetrics
from raymetrics_pipeline.ingest.prometheus import NO_LABELS
from raymetrics_pipeline.ingest.scrape import ScrapeResult
from raymetrics_pipeline.localstore.rows import stored_rows
from raymetrics_pipeline.localstore.store import LocalStore
from raymetrics_pipeline.rollups.tables import ALL_TABLES, MINUTE_TABLES, SUMMARY_TABLES
from raymetrics_pipeline_tests.backends import BACKENDS, local_backend, parseable_backend, rollup_resources, ship
from raymetrics_pipeline_tests.parseable_double import ParseableDouble
from raymetrics_pipeline_tests.scrape_fixtures import ScrapeFixture, rounds
from raymetrics_pipeline_tests.test_recorded_runs import ALL_FIXTURES, comparison_markdown, markdown_tables

FIRST_COPY_AFTER = timedelta(seconds=2)
# When each round's second copy arrives after its sample time, by round: the same or the next minute, minutes later,
# and in a later hour (another hour folder of the local store).
SECOND_COPY_AFTER = (timedelta(seconds=25), timedelta(minutes=3, seconds=10), timedelta(hours=1, minutes=7))


def as_the_cycle_hands_it(scrape_round: list[ScrapeFixture], shift: timedelta) -> list[ResourceMetrics]:
    """A recorded round, its times moved by ``shift``, as the scrape cycle hands it to its sink: each target's
    answer converted by the cycle's own code, with the target's ``service.instance.id`` and up figure."""
    scrapes = []
    for fixture in scrape_round:
        text = fixture.text()
        scraped_at = fixture.scrape_time_unix_nano + shift // timedelta(microseconds=1) * 1000
        answer = ScrapeResult(f"127.0.0.1:{fixture.port}", scraped_at, 0.05, 200, text, len(text))
        scrapes.append(convert(answer, NO_LABELS)[1])
    return scrapes


def cycles(shift: timedelta) -> Iterator[tuple[datetime, list[ResourceMetrics]]]:
    """(sample time, the cycle's metrics) for every recorded round, moved by ``shift``."""
    for scrape_round in rounds(ALL_FIXTURES):
        sampled = datetime.fromtimestamp(scrape_round[0].scrape_time_unix_nano / 1e9, UTC) + shift
        yield sampled, as_the_cycle_hands_it(scrape_round, shift)


def deliver(parseable: ParseableDouble, store: LocalStore, scrapes: list[ResourceMetrics], received: datetime) -> None:
    """One delivery of a cycle's metrics to both backends, received at ``received``."""
    parseable.set_now(received)
    ship(parseable, scrapes)
    store.write(stored_rows(scrapes, received), received)


def dataset_rows(resource, since: datetime) -> int:
    """Rows ingested since ``since`` (the WHERE keeps Parseable from counting its uploaded files only)."""
    with resource.query() as query:
        (row,) = query.query("SELECT COUNT(*) AS n FROM raymetrics WHERE metric_name IS NOT NULL", since, None)
    return row["n"]


def snapshot(database: str) -> dict[str, dict[tuple, tuple]]:
    """Every table's rows by key; a summary's ``updated_at`` (when it was rebuilt) left out."""
    tables = {}
    with duckdb.connect(database, read_only=True) as connection:
        for table in ALL_TABLES:
            values = [column.name for column in table.columns if not column.key and column.name != "updated_at"]
            rows = connection.execute(f"SELECT {', '.join(table.keys + values)} FROM {table.name}").fetchall()
            tables[table.name] = {row[: len(table.keys)]: row[len(table.keys) :] for row in rows}
    return tables


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Per backend: the dataset's rows, every table and the comparison, from one copy and from two."""
    data_dir = tmp_path_factory.mktemp("data")
    first = datetime.fromtimestamp(min(f.scrape_time_unix_nano for f in ALL_FIXTURES) / 1e9, UTC)
    hour = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    shift = hour + timedelta(minutes=10) - first
    delivered = list(cycles(shift))
    assert delivered[-1][0] < hour + timedelta(hours=1), "both sessions in one hourly partition"
    partition = HOURLY.get_partition_key_for_timestamp(hour.timestamp())
    results = {name: {} for name in BACKENDS}
    with ExitStack() as stack:
        parseable = stack.enter_context(ParseableDouble())
        instance = stack.enter_context(dg.instance_for_test())
        store = LocalStore(data_dir / "store")
        backends = {"parseable": parseable_backend(parseable, data_dir), "local store": local_backend(data_dir)}

        def build(copies: str) -> None:
            for name, backend in backends.items():
                database = f"{name.replace(' ', '_')}.duckdb"
                resources = {"backend": backend, **rollup_resources(data_dir, database)}
                rolled = dg.materialize(
                    [minute_rollups], partition_key=partition, resources=resources, instance=instance
                )
                reports = dg.materialize([summaries, ray_run_comparison], resources=resources, instance=instance)
                assert rolled.success and reports.success
                results[name][copies] = {
                    "dataset rows": dataset_rows(backend, hour - timedelta(hours=1)),
                    "tables": snapshot(str(data_dir / database)),
                    "comparison": comparison_markdown(reports),
                }

        for sampled, scrapes in delivered:
            deliver(parseable, store, scrapes, sampled + FIRST_COPY_AFTER)
        build("one copy")
        for index, (sampled, scrapes) in enumerate(delivered):
            deliver(parseable, store, scrapes, sampled + SECOND_COPY_AFTER[index % len(SECOND_COPY_AFTER)])
        build("two copies")
    return results


@pytest.fixture(params=BACKENDS)
def backend(request, built):
    return built[request.param]


def test_every_body_reached_the_dataset_twice(backend):
    once, twice = backend["one copy"]["dataset rows"], backend["two copies"]["dataset rows"]
    assert once > 0 and twice == 2 * once


@pytest.mark.parametrize("table", [table.name for table in ALL_TABLES])
def test_a_second_copy_changes_no_table(backend, table):
    once, twice = backend["one copy"]["tables"][table], backend["two copies"]["tables"][table]
    assert twice.keys() == once.keys()
    changed = {key: (once[key], twice[key]) for key in once if not _same(once[key], twice[key])}
    assert not changed, f"{len(changed)} of {len(once)} rows changed, e.g. {next(iter(changed.items()))}"


def test_a_second_copy_changes_nothing_in_the_comparison(backend):
    once, twice = backend["one copy"]["comparison"], backend["two copies"]["comparison"]
    assert markdown_tables(twice) == markdown_tables(once)
    assert twice == once, "the chart too"


def test_what_is_compared_is_there(backend):
    """Every table built from the metrics holds rows, and the comparison shows sessions and jobs."""
    built = backend["one copy"]
    assert all(built["tables"][table.name] for table in (*MINUTE_TABLES, *SUMMARY_TABLES))
    assert "### Sessions" in built["comparison"] and "### Jobs" in built["comparison"]


def _same(left: tuple, right: tuple) -> bool:
    """Equal, floats to the last few bits (the engines sum in no fixed order)."""
    return all(
        a == pytest.approx(b, rel=1e-12) if isinstance(a, float) and isinstance(b, float) else a == b
        for a, b in zip(left, right, strict=True)
    )
