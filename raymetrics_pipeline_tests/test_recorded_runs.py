"""The recorded Ray sessions (``fixtures/ray-2.60-runs``) replayed end to end, on both backends, against Ray's figures.

Both sessions (``repeat``: one job three times in a row; ``overlap``: three overlapping jobs) are served to real
``scrape_and_ship`` runs, their sample times moved to three hours ago (spacing kept), into the Parseable double
(receiving each round 40 minutes late, as after an outage) and into the local store. Each backend's hour is rolled
up by the real assets into its own DuckDB file; then what Ray itself said (``truth.json``: the Jobs API list and the
State API task summaries) goes through the project's parsers and writer into that file, and the comparison is made
again. Expected numbers come from ``truth.json`` and the scraped text only, never from the pipeline's output.
"""

import json
import re
from collections import defaultdict
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from raymetrics_pipeline.assets import HOURLY, minute_rollups, ray_run_comparison, summaries
from raymetrics_pipeline.rayapi.models import parse_jobs, parse_task_summary
from raymetrics_pipeline.rollups.database import ensure_schema, record_ray_jobs
from raymetrics_pipeline_tests.backends import BACKENDS, local_backend, parseable_backend, rollup_resources
from raymetrics_pipeline_tests.parseable_double import ParseableDouble
from raymetrics_pipeline_tests.scrape_fixtures import ScrapeFixture
from raymetrics_pipeline_tests.scraped_text import lines_of, load_by_scrape_runs

RUNS = Path(__file__).parent / "fixtures" / "ray-2.60-runs"
SESSIONS = ("repeat", "overlap")
TERMINAL = ("FINISHED", "FAILED")
_SCRAPE_NAME = re.compile(r"scrape_(\d+)_(\d+)\.txt")


def recorded_fixtures(session: str) -> list[ScrapeFixture]:
    """Every scrape of one recorded session, the session named after its folder."""
    found = []
    for path in sorted((RUNS / session).glob("scrape_*.txt")):
        match = _SCRAPE_NAME.fullmatch(path.name)
        found.append(ScrapeFixture(path, session, int(match.group(1)), int(match.group(2))))
    return found


FIXTURES = {session: recorded_fixtures(session) for session in SESSIONS}
ALL_FIXTURES = [fixture for session in SESSIONS for fixture in FIXTURES[session]]
TRUTH = {session: json.loads((RUNS / session / "truth.json").read_text()) for session in SESSIONS}
RAY_SESSION = {session: TRUTH[session]["session_name"] for session in SESSIONS}


def state_counts(document: dict) -> dict[tuple[str, str], int]:
    """``(func_or_class_name, state) -> attempts`` of a ``GET /api/v0/tasks/summarize`` answer, read by hand."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for node in document["data"]["result"]["result"]["node_id_to_summary"].values():
        for group in node["summary"].values():
            for state, n in group["state_counts"].items():
                counts[(group["func_or_class_name"], state)] += n
    return dict(counts)


def terminal(counts: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    return {key: n for key, n in counts.items() if key[1] in TERMINAL and n}


def minute_key(fixture: ScrapeFixture, shift: timedelta) -> datetime:
    moment = datetime.fromtimestamp(fixture.scrape_time_unix_nano / 1e9, UTC) + shift
    return moment.replace(second=0, microsecond=0, tzinfo=None)


def table(database: str, sql: str, parameters=None) -> list[tuple]:
    with duckdb.connect(database, read_only=True) as connection:
        return connection.execute(sql, parameters).fetchall()


def comparison_markdown(result: dg.ExecuteInProcessResult) -> str:
    (materialization,) = result.asset_materializations_for_node("ray_run_comparison")
    return materialization.metadata["comparison"].value


def markdown_tables(markdown: str) -> dict[str, list[dict[str, str]]]:
    """``### title`` → the rows of the table under it, each as ``{header: cell}``."""
    tables, title = {}, None
    for line in markdown.splitlines():
        if line.startswith("### "):
            title = line[4:].strip()
        elif line.startswith("| ") and title is not None:
            cells = [cell.strip() for cell in line.strip()[1:-1].split(" | ")]
            if title not in tables:
                tables[title] = {"headers": cells, "rows": []}
            else:
                tables[title]["rows"].append(dict(zip(tables[title]["headers"], cells, strict=True)))
    return {name: found["rows"] for name, found in tables.items()}


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """Both sessions scraped into both backends; per backend, one hour rolled up, summarised and compared, then
    Ray's own figures recorded and the comparison made again."""
    data_dir = tmp_path_factory.mktemp("data")
    first = datetime.fromtimestamp(min(f.scrape_time_unix_nano for f in ALL_FIXTURES) / 1e9, UTC)
    last = datetime.fromtimestamp(max(f.scrape_time_unix_nano for f in ALL_FIXTURES) / 1e9, UTC)
    hour = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    shift = hour + timedelta(minutes=10) - first.replace(second=0, microsecond=0)
    assert last + shift < hour + timedelta(hours=1), "both sessions in one hourly partition"
    out = {}
    with ExitStack() as stack:
        parseable = stack.enter_context(ParseableDouble())
        load_by_scrape_runs(stack, ALL_FIXTURES, parseable, data_dir, shift=shift, parseable_lag=timedelta(minutes=40))
        instance = stack.enter_context(dg.instance_for_test())
        backends = {"parseable": parseable_backend(parseable, data_dir), "local store": local_backend(data_dir)}
        partition = HOURLY.get_partition_key_for_timestamp(hour.timestamp())
        for name, backend in backends.items():
            database = f"{name.replace(' ', '_')}.duckdb"
            resources = {"backend": backend, **rollup_resources(data_dir, database)}
            rolled = dg.materialize([minute_rollups], partition_key=partition, resources=resources, instance=instance)
            reports = dg.materialize([summaries, ray_run_comparison], resources=resources, instance=instance)
            assert rolled.success and reports.success
            path = str(data_dir / database)
            with duckdb.connect(path) as connection:
                ensure_schema(connection)
                for session in SESSIONS:
                    final = TRUTH[session]["final"]
                    jobs = parse_jobs(final["jobs"])
                    summaries_taken = [
                        parse_task_summary(job_id, document)
                        for job_id, document in final["tasks_summary_by_job"].items()
                    ]
                    record_ray_jobs(connection, "", RAY_SESSION[session], jobs, summaries_taken, datetime.now(UTC))
            compared = dg.materialize([ray_run_comparison], resources=resources, instance=instance)
            assert compared.success
            out[name] = {
                "database": path,
                "before": comparison_markdown(reports),
                "after": comparison_markdown(compared),
            }
    yield out, shift


@pytest.fixture(params=BACKENDS)
def backend(request, replayed):
    results, shift = replayed
    return results[request.param], shift


@pytest.mark.parametrize("session", SESSIONS)
def test_tasks_entered_from_the_metrics_equal_rays_state_api(backend, session):
    result, _ = backend
    rows = table(
        result["database"],
        """SELECT task_name, state, SUM(entered) FROM task_state_minute
           WHERE session_name = ? AND state IN ('FINISHED', 'FAILED') GROUP BY task_name, state""",
        [RAY_SESSION[session]],
    )
    want = terminal(state_counts(TRUTH[session]["final"]["tasks_summary_all"]))
    assert want and not [key for key in want if "JobSupervisor" in key[0]]
    assert terminal({(name, state): entered for name, state, entered in rows}) == pytest.approx(want)


@pytest.mark.parametrize("session", SESSIONS)
def test_rays_own_figures_are_recorded_as_ray_gave_them(backend, session):
    result, _ = backend
    database, ray_session, final = result["database"], RAY_SESSION[session], TRUTH[session]["final"]
    per_job = table(
        database,
        "SELECT job_id, task_name, state, tasks FROM ray_job_tasks WHERE cluster_id = '' AND session_name = ?",
        [ray_session],
    )
    for job_id, document in final["tasks_summary_by_job"].items():
        recorded = {(name, state): n for job, name, state, n in per_job if job == job_id}
        assert recorded == state_counts(document), job_id
    summed = defaultdict(int)
    for _, name, state, n in per_job:
        summed[(name, state)] += n
    assert terminal(dict(summed)) == terminal(state_counts(final["tasks_summary_all"]))

    jobs = table(
        database,
        """SELECT job_id, submission_id, entrypoint, status, tasks_finished, tasks_failed, tasks_complete
           FROM ray_jobs WHERE cluster_id = '' AND session_name = ?""",
        [ray_session],
    )
    expected = {}
    for job in final["jobs"]:
        counts = state_counts(final["tasks_summary_by_job"][job["job_id"]])
        finished, failed = (sum(n for (_, s), n in counts.items() if s == state) for state in TERMINAL)
        expected[job["job_id"]] = (job["submission_id"], job["entrypoint"], job["status"], finished, failed, True)
    assert len(expected) == 3
    assert {row[0]: row[1:] for row in jobs} == expected


def test_the_comparison_names_sessions_as_ray_does_and_takes_tasks_from_its_state_api(backend):
    result, _ = backend
    before, after = markdown_tables(result["before"]), markdown_tables(result["after"])
    for session in SESSIONS:
        assert RAY_SESSION[session] in result["after"]
    sessions_before = {row["session"]: row for row in before["Sessions"]}
    sessions_after = {row["session"]: row for row in after["Sessions"]}
    assert set(sessions_after) == set(sessions_before) == set(RAY_SESSION.values())
    for session in SESSIONS:
        row, final = sessions_after[RAY_SESSION[session]], TRUTH[session]["final"]
        assert sessions_before[RAY_SESSION[session]]["task counts from"] == "metrics", "before Ray's figures"
        assert row["task counts from"] == "Ray State API"
        counts = state_counts(final["tasks_summary_all"])
        for state, header in (("FINISHED", "tasks finished"), ("FAILED", "tasks failed")):
            shown = float(row[header].replace(",", ""))  # markdown.cell writes floats of 1000 and more as 1,041
            assert shown == sum(n for (_, s), n in counts.items() if s == state), (session, header)

    repeat_jobs = sorted(TRUTH["repeat"]["final"]["jobs"], key=lambda job: job["start_time"])
    (entrypoint,) = {job["entrypoint"] for job in repeat_jobs}
    runs = [row for row in after["Runs of the same entrypoint"] if row["entrypoint"] == entrypoint]
    assert [(row["run"], row["session"], row["job"]) for row in runs] == [
        (str(run), RAY_SESSION["repeat"], job["job_id"]) for run, job in enumerate(repeat_jobs, start=1)
    ]
    shown = {(row["session"], row["job"]): row["entrypoint"] for row in after["Jobs"]}
    for session in SESSIONS:
        for job in TRUTH[session]["final"]["jobs"]:
            assert shown[(RAY_SESSION[session], job["job_id"])] == job["entrypoint"]


def test_object_store_minute_sums_each_scrape_over_series(backend):
    result, shift = backend
    per_scrape = defaultdict(float)  # summed by hand over the node's series (one WORKER_HEAP series per worker)
    heap_series, heap_holding = defaultdict(int), defaultdict(int)
    for fixture, _, labels, value in lines_of(ALL_FIXTURES, "ray_object_store_memory"):
        where = (labels["SessionName"], labels["NodeAddress"], labels["ObjectState"], labels["Location"])
        per_scrape[(minute_key(fixture, shift), *where, fixture.path)] += value
        if labels["Location"] == "WORKER_HEAP":
            heap_series[fixture.path] += 1
            heap_holding[fixture.path] += value > 0
    assert max(heap_series.values()) >= 6 and max(heap_holding.values()) >= 6, "many workers hold bytes at once"
    values = defaultdict(list)
    for (*key, _), total in per_scrape.items():
        values[tuple(key)].append(total)
    used, available = {}, {}
    for fixture, name, labels, value in lines_of(
        ALL_FIXTURES, "ray_object_store_used_memory", "ray_object_store_available_memory"
    ):
        scrape = (minute_key(fixture, shift), labels["SessionName"], labels["NodeAddress"], fixture.path)
        (used if name == "ray_object_store_used_memory" else available)[scrape] = value
    assert used.keys() == available.keys()
    pressure = defaultdict(float)
    for scrape, value in used.items():
        pressure[scrape[:3]] = max(pressure[scrape[:3]], value / (value + available[scrape]))
    rows = table(
        result["database"],
        """SELECT minute, session_name, node, object_state, location, bytes_avg, bytes_max, node_pressure
           FROM object_store_minute""",
    )
    assert {row[1] for row in rows} == set(RAY_SESSION.values())
    assert {row[:5]: pytest.approx(row[5:7]) for row in rows} == {
        key: (sum(v) / len(v), max(v)) for key, v in values.items()
    }
    assert {row[:3]: row[7] for row in rows} == pytest.approx(dict(pressure))
    assert max(pressure.values()) > 0
