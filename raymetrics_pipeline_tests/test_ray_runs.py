"""Task counts across repeated and overlapping jobs, end to end on real Ray heads, against Ray's own count.

Each session is a fresh Ray head. A thread runs the real ``scrape_and_ship`` job every few seconds
into both backends (the Parseable double and the local store) while jobs run; then the real rollup,
summary, ``ray_jobs`` and comparison assets run. The finished and failed tasks counted from the
metrics, and those ``ray_jobs`` recorded, per task name, must equal what Ray's State API counts
(``ray.util.state.summarize_tasks``), and ``ray_jobs`` must list the jobs the Jobs API lists.

Ray 2.60's metrics agent sums each task name's FINISHED and FAILED counts over the live jobs and drops
a job's part about 20 s after it ends, so the same job run three times in a row is the case that
per-minute levels got wrong. The metric cannot tell one job leaving the sum from another entering it in
the same report, so here each job starts once the previous one has left it (as the Jobs API's exact
figures, the ``ray_jobs`` table, do not need).
"""

import shutil
import sys
import threading
import time
import traceback
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from raymetrics_pipeline.assets import HOURLY, minute_rollups, ray_jobs, ray_run_comparison, summaries
from raymetrics_pipeline.jobs import scrape_and_ship
from raymetrics_pipeline.resources import RayMetricsSource
from raymetrics_pipeline_tests.backends import BACKENDS, local_backend, parseable_backend, rollup_resources
from raymetrics_pipeline_tests.parseable_double import ParseableDouble

pytestmark = pytest.mark.ray

WORKLOAD = Path(__file__).parent / "ray_workload.py"
TERMINAL = ("FINISHED", "FAILED")
SCRAPE_EVERY_SECONDS = 3.0


def entrypoint(tasks: int, failing: int, hold_seconds: float) -> str:
    return (
        f"python {WORKLOAD.name} --tasks {tasks} --failing {failing} --actor-calls 10 --objects 2 --object-mb 1 "
        f"--hold-seconds {hold_seconds}"
    )


# Runs in a thread must not capture stdout: Dagster's compute log capture tails it through a `tail -F` subprocess
# that, under pytest's own capture, took 30 s to stop after every run (seen in CI), starving the scrapes.
NO_COMPUTE_LOGS = {
    "compute_logs": {"module": "dagster._core.storage.noop_compute_log_manager", "class": "NoOpComputeLogManager"}
}


class Scraper:
    """The real scrape job, run every few seconds in a thread into every backend."""

    def __init__(self, head, backends: dict) -> None:
        self.source = RayMetricsSource(discovery_file=str(head.discovery_file), host_override="127.0.0.1")
        self.backends = backends
        self.stopped = threading.Event()
        self.failures: list[str] = []
        self.cycles = 0  # scrapes done into every backend
        self.cycled = threading.Condition()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        try:
            with dg.instance_for_test(overrides=NO_COMPUTE_LOGS) as instance:
                while not self.stopped.is_set():
                    for backend in self.backends.values():
                        result = scrape_and_ship.execute_in_process(
                            resources={"ray_metrics": self.source, "backend": backend},
                            instance=instance,
                            raise_on_error=False,
                        )
                        if not result.success:
                            self.failures.append(f"run {result.run_id} failed")
                    with self.cycled:
                        self.cycles += 1
                        self.cycled.notify_all()
                    self.stopped.wait(SCRAPE_EVERY_SECONDS)
        except BaseException:  # noqa: B036 - the test must learn why its scraper stopped
            self.failures.append(traceback.format_exc())
            with self.cycled:
                self.cycled.notify_all()

    def wait_cycles(self, count: int, timeout: float = 120.0) -> None:
        """Until ``count`` more scrapes are done (however slow a loaded machine makes them)."""
        with self.cycled:
            target = self.cycles + count
            done = self.cycled.wait_for(lambda: self.cycles >= target or not self.thread.is_alive(), timeout)
        if not (done and self.thread.is_alive()):
            frame = sys._current_frames().get(self.thread.ident)
            where = "".join(traceback.format_stack(frame)) if frame else "(the scraper thread has ended)"
            raise AssertionError(f"{count} scrapes not done in {timeout:g} s: {self.failures}\nscraper at:\n{where}")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        self.thread.join(timeout=60)


def ray_task_counts(head) -> dict[tuple[str, str], int]:
    """(task name, state) → tasks, for the terminal states, from Ray's State API."""
    from ray.util.state import summarize_tasks

    summary = summarize_tasks(address=head.dashboard_url, raise_on_missing_output=True)["cluster"]["summary"]
    return {
        (task["func_or_class_name"], state): count
        for task in summary.values()
        for state, count in task["state_counts"].items()
        if state in TERMINAL and count
    }


@dataclass
class Counted:
    """What one backend's rollups say: from the metrics, from Ray's own APIs (ray_jobs), and the comparison."""

    from_metrics: dict[tuple[str, str], float]
    from_ray: dict[tuple[str, str], int]
    jobs: list[tuple]
    comparison: dict


def rolled_up(head, data_dir: Path, backend_name: str, backend, started: datetime) -> Counted:
    """Roll up every hour since ``started``, record Ray's jobs, summarise and compare, as the schedules do."""
    database = f"{backend_name.replace(' ', '_')}.duckdb"
    resources = {
        "backend": backend,
        "ray_metrics": RayMetricsSource(dashboard_url=head.dashboard_url),
        **rollup_resources(data_dir, database),
    }
    hour = started.replace(minute=0, second=0, microsecond=0)
    with dg.instance_for_test() as instance:
        while hour <= datetime.now(UTC):
            key = HOURLY.get_partition_key_for_timestamp(hour.timestamp())
            assert dg.materialize([minute_rollups], partition_key=key, resources=resources, instance=instance).success
            hour += timedelta(hours=1)
        reports = dg.materialize([summaries, ray_jobs, ray_run_comparison], resources=resources, instance=instance)
        assert reports.success
    (comparison,) = reports.asset_materializations_for_node("ray_run_comparison")
    with duckdb.connect(resources["rollups_db"].database, read_only=True) as connection:
        metrics = connection.execute(
            "SELECT task_name, state, SUM(entered) FROM task_state_minute WHERE state IN ('FINISHED', 'FAILED') "
            "GROUP BY 1, 2 HAVING SUM(entered) > 0"
        ).fetchall()
        ray = connection.execute(
            "SELECT task_name, state, SUM(tasks) FROM ray_job_tasks WHERE state IN ('FINISHED', 'FAILED') GROUP BY 1, 2"
        ).fetchall()
        summary = connection.execute("SELECT tasks_finished, tasks_failed FROM session_summary").fetchall()
        jobs = connection.execute(
            "SELECT session_name, job_id, submission_id, entrypoint, status, driver_exit_code, tasks_complete "
            "FROM ray_jobs ORDER BY job_id"
        ).fetchall()
    from_metrics = {(name, state): value for name, state, value in metrics}
    finished = sum(v for (_, state), v in from_metrics.items() if state == "FINISHED")
    failed = sum(v for (_, state), v in from_metrics.items() if state == "FAILED")
    assert summary == [(finished, failed)]
    metadata = {key: value.value for key, value in comparison.metadata.items()}
    return Counted(from_metrics, {(name, state): n for name, state, n in ray}, jobs, metadata)


def ray_jobs_listed(head) -> list[tuple]:
    """Ray's Jobs API's own list, in the ray_jobs columns."""
    return sorted(
        (
            head.session_name,
            job.job_id,
            job.submission_id or "",
            job.entrypoint,
            str(job.status.value),
            job.driver_exit_code,
            True,
        )  # fmt: skip
        for job in head.job_client.list_jobs()
    )


def run_session(tmp_path: Path, submit) -> tuple[dict, dict]:
    """A fresh head, scraped while ``submit(head, working_dir, scraper)`` runs its jobs; Ray's counts and each
    backend's."""
    from raymetrics_pipeline_tests.ray_cluster import RayHead

    working_dir = tmp_path / "workload"
    working_dir.mkdir()
    shutil.copy(WORKLOAD, working_dir / WORKLOAD.name)
    with ExitStack() as stack:
        head = stack.enter_context(RayHead(tmp_path / "head", startup_timeout=120))
        parseable = stack.enter_context(ParseableDouble())
        backends = {
            "parseable": parseable_backend(parseable, tmp_path / "p"),
            "local store": local_backend(tmp_path / "l"),
        }
        started = datetime.now(UTC)
        # Import Ray's job client here, not while the scraper thread's first runs import Dagster's modules:
        # Python's per-module import locks can deadlock across threads and raise in one of them.
        assert head.job_client is not None
        with Scraper(head, backends) as scraper:
            submit(head, working_dir, scraper)
        assert not scraper.failures
        truth = ray_task_counts(head)
        counted = {name: rolled_up(head, tmp_path, name, backend, started) for name, backend in backends.items()}
        for name in BACKENDS:
            assert counted[name].jobs == ray_jobs_listed(head), name
    return truth, counted


def serves_finished(head, task_name: str) -> bool:
    """Whether an endpoint serves a FINISHED ``ray_tasks`` series for ``task_name`` (a job's part is in Ray's sum)."""
    needle = f'Name="{task_name}"'
    return any(
        line.startswith("ray_tasks{") and needle in line and 'State="FINISHED"' in line
        for target in head.metrics_targets()
        for line in head.scrape(target).text.splitlines()
    )


def wait_until(condition, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not {what} after {timeout} s"
        time.sleep(0.5)


def scraped_until_ray_drops(head, scraper: Scraper, task_name: str) -> None:
    """Ray exports a job's tasks some seconds after they end and keeps them about 20 s after the job: wait until
    it serves them and the scraper has seen them, then until it drops them and the scraper has seen that."""
    wait_until(lambda: serves_finished(head, task_name), f"serving {task_name} FINISHED")
    scraper.wait_cycles(2)
    wait_until(lambda: not serves_finished(head, task_name), f"dropping {task_name} FINISHED")
    scraper.wait_cycles(2)


def show(truth: dict, counted: dict) -> None:
    """Ray's counts beside each backend's, in the test's output (pytest -s)."""
    print(f"\nRay's counts: {sorted(truth.items())}")
    for name in BACKENDS:
        print(f"{name}: {sorted(counted[name].from_metrics.items())}")


def test_the_same_job_three_times_in_a_row_counts_three_times(tmp_path):
    def three_in_a_row(head, working_dir, scraper):
        for _ in range(3):
            head.wait_job(head.submit_job(entrypoint(40, 5, 4.0), working_dir=working_dir))
            scraped_until_ray_drops(head, scraper, "square")

    truth, counted = run_session(tmp_path, three_in_a_row)
    show(truth, counted)
    assert truth[("square", "FINISHED")] == 120 and truth[("fail", "FAILED")] == 15
    for name in BACKENDS:
        assert counted[name].from_metrics == counted[name].from_ray == truth, name
    comparison = counted["local store"].comparison
    (session,) = comparison["sessions"]
    text = comparison["comparison"]
    assert "### Runs of the same entrypoint" in text and "| Ray State API |" in text and session in text
    runs = [line for line in text.splitlines() if line.startswith(f"| {entrypoint(40, 5, 4.0)} |")]
    assert [line.split(" | ")[1] for line in runs] == ["1", "2", "3"], "three runs of one entrypoint, in order"


def test_overlapping_jobs_count_once_each(tmp_path):
    def overlapping(head, working_dir, scraper):
        # The second job runs its tasks and leaves while the first holds its objects: the two overlap, and no
        # report has one job's tasks rising while the other's part leaves.
        first = head.submit_job(entrypoint(60, 10, 25.0), working_dir=working_dir)
        wait_until(lambda: serves_finished(head, "square"), "serving the first job's tasks")
        second = head.submit_job(entrypoint(25, 3, 1.0), working_dir=working_dir)
        for submission in (first, second):
            head.wait_job(submission)
        scraped_until_ray_drops(head, scraper, "square")

    truth, counted = run_session(tmp_path, overlapping)
    show(truth, counted)
    assert truth[("square", "FINISHED")] == 85 and truth[("fail", "FAILED")] == 13
    for name in BACKENDS:
        assert counted[name].from_metrics == counted[name].from_ray == truth, name
