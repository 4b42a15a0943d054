"""The blog's three questions, asked in SQL of what the pipeline ships into the Parseable double.

Each scrape is shipped with the double's clock at its scrape time, as a live pipeline would.
The expected numbers are computed from the scraped text with plain string handling, not
with the project's parser.
"""

import time
from collections import defaultdict
from datetime import UTC, datetime

import httpx
import pytest

from raymetrics_pipeline import otlp
from raymetrics_pipeline.parseable import ParseableClient
from raymetrics_pipeline.prometheus import NO_LABELS, parse
from raymetrics_pipeline_tests.parseable_double import ParseableDouble
from raymetrics_pipeline_tests.scrape_fixtures import SHARED_FIXTURES, scrape_fixtures

ORIGINS = [
    "project",
    pytest.param("shared", marks=pytest.mark.skipif(not SHARED_FIXTURES.is_dir(), reason="no ../shared")),
]


def labels_and_value(line: str) -> tuple[dict[str, str], float]:
    """Ray's lines carry no escapes or commas inside values, so a split is an independent reading."""
    inside = line[line.index("{") + 1 : line.rindex("}")]
    labels = dict(pair.split("=", 1) for pair in inside.split('",') if pair)
    return {k: v.strip('"') for k, v in labels.items()}, float(line.rsplit(" ", 1)[1])


def minute_of(time_ns: int) -> str:
    return datetime.fromtimestamp(time_ns // 10**9, UTC).strftime("%Y-%m-%dT%H:%M:00")


@pytest.fixture(scope="module", params=ORIGINS)
def shipped(request):
    """Every fixture scrape of one origin shipped into a fresh double; yields (double, fixtures)."""
    fixtures = [f for f in scrape_fixtures() if f.id.startswith(request.param + "/")]
    encoder = otlp.JsonEncoder()
    with ParseableDouble() as parseable, ParseableClient(parseable.url, "admin", "admin") as client:
        for fixture in sorted(fixtures, key=lambda f: f.scrape_time_unix_nano):
            parseable.set_now(datetime.fromtimestamp(fixture.scrape_time_unix_nano / 1e9, UTC))
            conversion = otlp.to_metrics(parse(fixture.text()), fixture.scrape_time_unix_nano)
            for body in encoder.encode([(NO_LABELS, conversion.metrics)]):
                assert client.post(body, time.monotonic() + 10).sent
        yield parseable, fixtures


def query(parseable: ParseableDouble, sql: str, fixtures) -> list[dict]:
    times = [f.scrape_time_unix_nano for f in fixtures]
    start = datetime.fromtimestamp(min(times) // 10**9 - 120, UTC).isoformat()
    end = datetime.fromtimestamp(max(times) // 10**9 + 120, UTC).isoformat()
    response = httpx.post(
        f"{parseable.url}/api/v1/query",
        json={"query": sql, "startTime": start, "endTime": end},
        auth=("admin", "admin"),
    )
    assert response.status_code == 200, response.text
    return response.json()


def lines_of(fixtures, metric: str):
    for fixture in fixtures:
        for line in fixture.text().splitlines():
            if line.startswith(metric + "{"):
                yield fixture, *labels_and_value(line)


def test_node_cpu_per_minute(shipped):
    parseable, fixtures = shipped
    rows = query(
        parseable,
        """SELECT DATE_TRUNC('minute', p_timestamp) AS minute, "ip" AS node, AVG(data_point_value) AS avg_cpu,
                  DATE_TRUNC('minute', time_unix_nano) AS sample_minute
           FROM raymetrics WHERE metric_name = 'ray_node_cpu_utilization'
           GROUP BY minute, sample_minute, node ORDER BY minute, node""",
        fixtures,
    )
    values = defaultdict(list)
    for fixture, labels, value in lines_of(fixtures, "ray_node_cpu_utilization"):
        values[(minute_of(fixture.scrape_time_unix_nano), labels["ip"])].append(value)
    expected = {key: sum(v) / len(v) for key, v in values.items()}
    assert {(r["minute"], r["node"]): r["avg_cpu"] for r in rows} == pytest.approx(expected)
    assert all(r["minute"] == r["sample_minute"] for r in rows)
    assert len(expected) >= 2


def test_failed_tasks_by_task_name_as_levels_not_sums(shipped):
    """`ray_tasks` is a level: take each series' last value in the minute, then add series up."""
    parseable, fixtures = shipped
    rows = query(
        parseable,
        """WITH last_per_series AS (
               SELECT DATE_TRUNC('minute', time_unix_nano) AS minute, "Name", "JobId", "IsRetry", "Source",
                      "Component", "NodeAddress", "SessionName",
                      LAST_VALUE(data_point_value ORDER BY time_unix_nano) AS tasks
               FROM raymetrics WHERE metric_name = 'ray_tasks' AND "State" = 'FAILED'
               GROUP BY 1, 2, 3, 4, 5, 6, 7, 8)
           SELECT minute, "Name" AS task_name, SUM(tasks) AS failed FROM last_per_series
           GROUP BY minute, task_name ORDER BY minute, task_name""",
        fixtures,
    )
    latest = {}  # (minute, series) -> (scrape time, value)
    for fixture, labels, value in lines_of(fixtures, "ray_tasks"):
        if labels["State"] == "FAILED":
            key = (minute_of(fixture.scrape_time_unix_nano), tuple(sorted(labels.items())))
            if fixture.scrape_time_unix_nano >= latest.get(key, (0, 0))[0]:
                latest[key] = (fixture.scrape_time_unix_nano, value)
    expected = defaultdict(float)
    for (minute, series), (_, value) in latest.items():
        expected[(minute, dict(series)["Name"])] += value
    assert {(r["minute"], r["task_name"]): r["failed"] for r in rows} == pytest.approx(dict(expected))
    assert sum(expected.values()) > 0, "the fixtures hold failed tasks"


def test_object_store_bytes_by_state(shipped):
    parseable, fixtures = shipped
    rows = query(
        parseable,
        """SELECT DATE_TRUNC('minute', time_unix_nano) AS minute, "NodeAddress" AS node, "ObjectState" AS object_state,
                  "Location" AS location, AVG(data_point_value) AS avg_bytes
           FROM raymetrics WHERE metric_name = 'ray_object_store_memory'
           GROUP BY minute, node, object_state, location""",
        fixtures,
    )
    values = defaultdict(list)
    for fixture, labels, value in lines_of(fixtures, "ray_object_store_memory"):
        key = (
            minute_of(fixture.scrape_time_unix_nano),
            labels["NodeAddress"],
            labels["ObjectState"],
            labels["Location"],
        )
        values[key].append(value)
    got = {(r["minute"], r["node"], r.get("object_state", ""), r["location"]): r["avg_bytes"] for r in rows}
    assert got == pytest.approx({key: sum(v) / len(v) for key, v in values.items()})
    assert max(got.values()) > 0, "the fixtures hold objects in the store"
