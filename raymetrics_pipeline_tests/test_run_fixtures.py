"""Facts of the recorded run sessions (``fixtures/ray-2.60-runs``) that the task-count tests rely on.

Pure: reads the committed files only (made by ``tools/capture_fixtures.py --sessions repeat,overlap``).
"""

import functools
import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

RUNS = Path(__file__).parent / "fixtures" / "ray-2.60-runs"
MANIFEST = json.loads((RUNS / "manifest.json").read_text())
SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:\\.|[^"\\])*)"')
TERMINAL = ("FINISHED", "FAILED")


def samples(path: Path):
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and (m := SAMPLE.match(line)):
            yield m.group(1), tuple(sorted(LABEL.findall(m.group(2) or ""))), float(m.group(3))


def agent_scrapes(session: str) -> list[dict]:
    """The metrics-agent port's answered scrapes (where ``ray_tasks`` is), in round order."""
    s = MANIFEST["sessions"][session]
    port = s["ports"]["metrics_export"]
    return sorted((x for x in s["scrapes"] if x["port"] == port and x.get("file")), key=lambda x: x["round"])


@functools.cache
def terminal_levels(session: str) -> list[dict[tuple, float]]:
    """Per agent scrape: ``{labels: value}`` of the ``ray_tasks`` series in FINISHED or FAILED."""
    return [
        {
            labels: v
            for name, labels, v in samples(RUNS / session / x["file"])
            if name == "ray_tasks" and dict(labels).get("State") in TERMINAL
        }
        for x in agent_scrapes(session)
    ]


def level(levels: dict[tuple, float], name: str, state: str) -> float | None:
    found = [v for labels, v in levels.items() if dict(labels)["Name"] == name and dict(labels)["State"] == state]
    return sum(found) if found else None


def truth(session: str) -> dict:
    return json.loads((RUNS / session / "truth.json").read_text())


def summary_counts(resp: dict) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = defaultdict(int)
    for node in resp["data"]["result"]["result"]["node_id_to_summary"].values():
        for key, x in node["summary"].items():
            for state, n in x["state_counts"].items():
                out[(key, state)] += n
    return dict(out)


@pytest.mark.parametrize("session", ["repeat", "overlap"])
def test_every_answered_scrape_is_there_15_s_apart_and_truth_was_taken(session):
    s = MANIFEST["sessions"][session]
    assert s["kind"] == session
    for x in s["scrapes"]:
        assert x.get("file") and (RUNS / session / x["file"]).is_file(), x
    starts = [
        min(x["unix_ns"] for x in s["scrapes"] if x["round"] == k) for k in sorted({x["round"] for x in s["scrapes"]})
    ]
    assert all(abs((b - a) / 1e9 - 15) < 1.5 for a, b in zip(starts, starts[1:], strict=False))
    t = truth(session)
    assert len(t["after_job_end"]) == len(s["jobs"])
    assert {j["submission_id"] for j in t["final"]["jobs"]} == {j["submission_id"] for j in s["jobs"]}
    for j in s["jobs"]:
        assert summary_counts(t["final"]["tasks_summary_by_job"][j["job_id"]])
    # round 0 is before the first job: no task counts yet; the last round is after every job's series went
    levels = terminal_levels(session)
    assert level(levels[0], "square", "FINISHED") is None
    assert level(levels[-1], "square", "FINISHED") is None


def test_repeat_runs_one_entrypoint_three_times_and_square_vanishes_and_returns():
    t = truth("repeat")
    jobs = t["final"]["jobs"]
    assert len(jobs) == 3 and len({j["entrypoint"] for j in jobs}) == 1
    assert {j["status"] for j in jobs} == {"SUCCEEDED"}
    tasks = int(re.search(r"--tasks (\d+)", jobs[0]["entrypoint"]).group(1))
    for resp in t["final"]["tasks_summary_by_job"].values():
        assert summary_counts(resp)[("square", "FINISHED")] == tasks
    present = [level(lv, "square", "FINISHED") is not None for lv in terminal_levels("repeat")]
    returns = sum(1 for a, b in zip(present, present[1:], strict=False) if not a and b)
    assert returns == 3, present  # absent before each job, present while it runs, absent again after it


def test_a_scrape_shows_at_least_six_worker_heap_series_holding_bytes():
    best = 0
    for x in agent_scrapes("repeat"):
        heap = [
            v
            for name, labels, v in samples(RUNS / "repeat" / x["file"])
            if name == "ray_object_store_memory" and dict(labels).get("Location") == "WORKER_HEAP"
        ]
        best = max(best, min(len(heap), sum(v > 0 for v in heap)))
    assert best >= 6


def rule_counts(session: str) -> dict[tuple[str, str], float]:
    """Rises between consecutive agent scrapes per series, absent = 0; a fall is a job's part leaving Ray's sum."""
    out: dict[tuple[str, str], float] = defaultdict(float)
    prev: dict[tuple, float] = {}
    for cur in terminal_levels(session):
        for labels in prev.keys() | cur.keys():
            a, b = prev.get(labels, 0.0), cur.get(labels, 0.0)
            lb = dict(labels)
            out[(lb["Name"], lb["State"])] += max(b - a, 0.0)
        prev = cur
    return out


@pytest.mark.parametrize("session", ["repeat", "overlap"])
def test_per_scrape_rises_equal_rays_own_counts(session):
    want = summary_counts(truth(session)["final"]["tasks_summary_all"])
    got = rule_counts(session)
    assert want and {k: got.get(k, 0) for k in want} == want


def test_state_api_does_not_count_job_supervisor_tasks_but_ray_tasks_does():
    for session in ("repeat", "overlap"):
        want = summary_counts(truth(session)["final"]["tasks_summary_all"])
        assert not [k for k in want if "JobSupervisor" in k[0]]
        got = rule_counts(session)
        assert got[("JobSupervisor.run", "FINISHED")] == len(MANIFEST["sessions"][session]["jobs"])


def test_overlap_jobs_overlap_one_fails_tasks_and_square_falls_without_vanishing():
    t = truth("overlap")
    jobs = sorted(t["final"]["jobs"], key=lambda j: j["start_time"])
    assert len(jobs) >= 2 and len({j["entrypoint"] for j in jobs}) == len(jobs)
    assert any(b["start_time"] < a["end_time"] for a, b in zip(jobs, jobs[1:], strict=False))
    assert any(summary_counts(r).get(("fail", "FAILED")) for r in t["final"]["tasks_summary_by_job"].values())
    # the jobs' counts are summed into one series; when one job's part ages out while another still reports,
    # the series falls but stays (a fall is not a reset)
    squares = [level(lv, "square", "FINISHED") for lv in terminal_levels("overlap")]
    assert any(a is not None and b is not None and b < a for a, b in zip(squares, squares[1:], strict=False))
