"""The blog's three questions, asked through the query layer of both backends.

Both are loaded by real runs of ``scrape_and_ship``: one run per fixture round into the
Parseable double, one into the local store, scraping real HTTP exporters that serve the
fixture texts. The exporters stamp every sample with its fixture scrape time, so the
sample times (``time_unix_nano``) are the fixtures' and the answers are deterministic.
Both backends must give the same answers, equal to numbers computed from the scraped text
with plain string handling, not with the project's parser.
"""

from collections import defaultdict
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import pytest

from raymetrics_pipeline_tests.backends import local_backend, parseable_backend
from raymetrics_pipeline_tests.blog_questions import FAILED_TASKS, NODE_CPU_AND_MEMORY, OBJECT_STORE_BYTES
from raymetrics_pipeline_tests.parseable_double import ParseableDouble
from raymetrics_pipeline_tests.scrape_fixtures import SHARED_FIXTURES, scrape_fixtures
from raymetrics_pipeline_tests.scraped_text import lines_of, load_by_scrape_runs, minute_of

ORIGINS = [
    "project",
    pytest.param("shared", marks=pytest.mark.skipif(not SHARED_FIXTURES.is_dir(), reason="no ../shared")),
]


@pytest.fixture(scope="module", params=ORIGINS)
def loaded(request, tmp_path_factory):
    """Every fixture round of one origin scraped by real job runs into both backends."""
    fixtures = [f for f in scrape_fixtures() if f.id.startswith(request.param + "/")]
    data_dir = tmp_path_factory.mktemp("data")
    started = datetime.now(UTC)
    with ExitStack() as stack:
        parseable = stack.enter_context(ParseableDouble())
        load_by_scrape_runs(stack, fixtures, parseable, data_dir)
        backends = {
            "parseable": stack.enter_context(parseable_backend(parseable, data_dir).query()),
            "local store": stack.enter_context(local_backend(data_dir).query()),
        }
        yield backends, fixtures, started


def answers(loaded, sql: str, key_columns: tuple[str, ...], value_column: str) -> dict:
    """The same SQL on both backends; they must agree row for row (up to float summation order, which
    depends on how many files or batches the engine reads). Returns the answer keyed by ``key_columns``."""
    backends, _, started = loaded
    results = {
        name: {tuple(row[c] for c in key_columns): row[value_column] for row in query.query(sql, started)}
        for name, query in backends.items()
    }
    assert results["parseable"] == pytest.approx(results["local store"], rel=1e-12)
    return results["parseable"]


def test_node_cpu_and_memory_per_minute(loaded):
    _, fixtures, _ = loaded
    got = answers(
        loaded,
        NODE_CPU_AND_MEMORY,
        ("minute", "ray_node", "metric_name"),
        "mean",
    )
    values = defaultdict(list)
    for fixture, name, labels, value in lines_of(fixtures, "ray_node_cpu_utilization", "ray_node_mem_used"):
        values[(minute_of(fixture.scrape_time_unix_nano), labels["ip"], name)].append(value)
    assert got == pytest.approx({key: sum(v) / len(v) for key, v in values.items()})
    assert {name for _, _, name in got} == {"ray_node_cpu_utilization", "ray_node_mem_used"} and len(got) >= 4


def test_failed_tasks_by_job_and_task_name_as_levels_not_sums(loaded):
    """`ray_tasks` is a level: take each series' last value in the minute, then add series up."""
    _, fixtures, _ = loaded
    got = answers(
        loaded,
        FAILED_TASKS,
        ("minute", "ray_session", "ray_job", "task_name"),
        "failed",
    )
    latest = {}  # (minute, series) -> (scrape time, value)
    for fixture, _, labels, value in lines_of(fixtures, "ray_tasks"):
        if labels["State"] == "FAILED":
            key = (minute_of(fixture.scrape_time_unix_nano), tuple(sorted(labels.items())))
            if fixture.scrape_time_unix_nano >= latest.get(key, (0, 0))[0]:
                latest[key] = (fixture.scrape_time_unix_nano, value)
    expected = defaultdict(float)
    for (minute, series), (_, value) in latest.items():
        labels = dict(series)
        expected[(minute, labels["SessionName"], labels["JobId"], labels["Name"])] += value
    assert got == pytest.approx(dict(expected))
    assert sum(expected.values()) > 0, "the fixtures hold failed tasks"


def test_object_store_bytes_by_node_and_state(loaded):
    _, fixtures, _ = loaded
    got = answers(
        loaded,
        OBJECT_STORE_BYTES,
        ("minute", "ray_node", "object_state", "location"),
        "avg_bytes",
    )
    values = defaultdict(list)
    for fixture, _, labels, value in lines_of(fixtures, "ray_object_store_memory"):
        key = (
            minute_of(fixture.scrape_time_unix_nano),
            labels["NodeAddress"],
            labels["ObjectState"],
            labels["Location"],
        )
        values[key].append(value)
    assert got == pytest.approx({key: sum(v) / len(v) for key, v in values.items()})
    assert max(got.values()) > 0, "the fixtures hold objects in the store"


def test_both_backends_see_nothing_outside_the_ingest_window(loaded):
    backends, _, started = loaded
    before = started - timedelta(minutes=10)
    for query in backends.values():
        assert query.query("SELECT COUNT(*) AS n FROM raymetrics", before, started - timedelta(minutes=1)) == [{"n": 0}]
        assert query.query("SELECT COUNT(*) AS n FROM raymetrics", started)[0]["n"] > 0
