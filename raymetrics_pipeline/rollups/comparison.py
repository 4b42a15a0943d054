"""Ray runs side by side: tables and a chart from the DuckDB rollups and Ray's own job figures.

Sessions are aligned on minutes since their first scraped minute, so two runs of the same workload
line up whatever the wall-clock time they ran at. Task counts are Ray's exact figures (``ray_jobs``,
from its State API) where every ended job of a session has them, and the sampled metrics otherwise;
the tables say which. Jobs are named by their entrypoint, and runs of the same entrypoint across
sessions line up in their own table and panel: what a Ray user means by comparing runs.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raymetrics_pipeline.common import markdown

if TYPE_CHECKING:
    import duckdb

MAX_SESSIONS = 8  # the newest ones; more lines stop being readable
MAX_RUNS_SHOWN = 20  # per entrypoint, the newest
NOTHING_YET = (
    "Nothing rolled up yet: session_summary holds no Ray session. The minute rollups are filled by "
    "refresh_rollups every 10 minutes (rollups_schedule) once scrape runs have delivered metrics, and this "
    "comparison by the next refresh_reports. To see it now, launch refresh_rollups for the current hour "
    "(UI: Jobs → refresh_rollups → Materialize, pick the hour), then refresh_reports."
)
EXACT, SAMPLED = "Ray State API", "metrics"

# Ray's exact task figures per session, usable when every ended job of it has them whole.
_EXACT_TASKS = """
    SELECT cluster_id, session_name, SUM(tasks_finished) AS finished, SUM(tasks_failed) AS failed,
           BOOL_AND(tasks_recorded_at IS NOT NULL AND tasks_complete) AS whole
    FROM ray_jobs WHERE status IN ('SUCCEEDED', 'FAILED', 'STOPPED') GROUP BY 1, 2"""
_SESSIONS = f"""
    SELECT s.cluster_id, s.session_name, s.first_seen, s.duration_minutes, s.nodes, s.cpu_percent_avg,
           s.cpu_percent_p95, s.cpu_percent_max, s.peak_mem_pressure * 100 AS peak_mem_percent,
           CAST(CASE WHEN e.whole THEN e.finished ELSE s.tasks_finished END AS BIGINT) AS tasks_finished,
           CAST(CASE WHEN e.whole THEN e.failed ELSE s.tasks_failed END AS BIGINT) AS tasks_failed,
           CASE WHEN e.whole THEN '{EXACT}' WHEN s.tasks_finished IS NOT NULL THEN '{SAMPLED}' END AS tasks_from,
           s.peak_object_store_pressure * 100 AS peak_object_store_percent, s.spilled_bytes
    FROM session_summary s LEFT JOIN ({_EXACT_TASKS}) e USING (cluster_id, session_name)
    ORDER BY s.first_seen DESC LIMIT {MAX_SESSIONS}"""
_JOBS = f"""
    SELECT cluster_id, session_name, job_id, r.entrypoint, r.status,
           DATE_TRUNC('second', COALESCE(r.start_time, m.first_seen)) AS started,
           COALESCE(r.duration_s, m.duration_s) AS duration_s, r.driver_exit_code,
           r.tasks_finished, r.tasks_failed,
           CASE WHEN r.tasks_recorded_at IS NOT NULL THEN '{EXACT}' END AS tasks_from,
           m.peak_tasks_running, m.peak_actors_alive, m.cpu_percent_avg, m.peak_mem_pressure * 100 AS peak_mem_percent
    FROM ray_jobs r FULL JOIN job_summary m USING (cluster_id, session_name, job_id)
    SEMI JOIN chosen USING (cluster_id, session_name)
    -- Where Ray listed a session's jobs, those are its jobs: a job id seen only in the metrics there is Ray's
    -- own job manager (the JobSupervisor actors' owner), which the Jobs API does not list.
    WHERE r.job_id IS NOT NULL OR (cluster_id, session_name) NOT IN (SELECT (cluster_id, session_name) FROM ray_jobs)
    ORDER BY started, job_id"""
_RUNS = f"""
    SELECT entrypoint, session_name, job_id, DATE_TRUNC('second', start_time) AS start_time, duration_s, status,
           tasks_finished, tasks_failed,
           ROW_NUMBER() OVER (PARTITION BY entrypoint ORDER BY start_time) AS run
    FROM ray_jobs WHERE entrypoint <> '' AND status IN ('SUCCEEDED', 'FAILED', 'STOPPED')
    QUALIFY ROW_NUMBER() OVER (PARTITION BY entrypoint ORDER BY start_time DESC) <= {MAX_RUNS_SHOWN}
    ORDER BY entrypoint, start_time"""
_OVER_TIME = """
    SELECT n.session_name, (EPOCH(n.minute) - EPOCH(c.first_seen)) / 60 AS minutes_in,
           AVG(n.cpu_percent_avg) AS cpu, AVG(n.mem_pressure_avg) * 100 AS memory
    FROM node_minute n JOIN chosen c USING (cluster_id, session_name)
    GROUP BY 1, 2 ORDER BY 1, 2"""
_FAILED_BY_TASK = f"""
    SELECT session_name, task_name, SUM(tasks) AS failed, '{EXACT}' AS tasks_from
    FROM ray_job_tasks SEMI JOIN chosen USING (cluster_id, session_name)
    WHERE state = 'FAILED' AND session_name IN (SELECT session_name FROM chosen WHERE tasks_from = '{EXACT}')
    GROUP BY 1, 2
    UNION ALL
    SELECT session_name, task_name, SUM(entered), '{SAMPLED}'
    FROM task_state_minute SEMI JOIN chosen USING (cluster_id, session_name)
    WHERE state = 'FAILED' AND session_name IN (SELECT session_name FROM chosen WHERE tasks_from = '{SAMPLED}')
    GROUP BY 1, 2
    HAVING SUM(entered) > 0
    ORDER BY 2, 1"""


@dataclass
class Comparison:
    sessions: list[dict]
    jobs: list[dict]
    runs: list[dict]
    markdown: str
    png: bytes


def _rows(connection: duckdb.DuckDBPyConnection, sql: str) -> list[dict]:
    cursor = connection.execute(sql)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]


def _table(rows: list[dict], columns: dict[str, str]) -> str:
    """``rows`` under the headers ``columns`` gives for each key."""
    return markdown.table(list(columns.values()), ([row[key] for key in columns] for row in rows))


def _short(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_chart(over_time: list[dict], failed: list[dict], runs: list[dict]) -> bytes:
    """CPU and memory (both in %) by minutes since each session's start, failed tasks by task name, and the
    duration of each run of an entrypoint; sessions named as Ray names them."""
    # Imported here, not with the module: the scrape runs load this code location every time and never draw.
    import matplotlib

    matplotlib.use("Agg")  # no display: render straight to PNG
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    from PIL import Image

    figure, axes = plt.subplots(2, 2, figsize=(14, 8), dpi=80)
    (cpu_axis, memory_axis), (failed_axis, runs_axis) = axes
    for session in sorted({row["session_name"] for row in over_time}):
        points = [row for row in over_time if row["session_name"] == session]
        minutes = [row["minutes_in"] for row in points]
        cpu_axis.plot(minutes, [row["cpu"] for row in points], marker="o", label=session)
        memory_axis.plot(minutes, [row["memory"] for row in points], marker="o", label=session)
    cpu_axis.set(title="CPU % (mean over nodes)", xlabel="minutes since the session's first scrape", ylabel="%")
    memory_axis.set(title="Memory used % (mean over nodes)", xlabel="minutes since the session's first scrape")
    memory_axis.set(ylabel="%")
    tasks = sorted({row["task_name"] for row in failed})
    sessions = sorted({row["session_name"] for row in failed})
    width = 0.8 / max(len(sessions), 1)
    for index, session in enumerate(sessions):
        counts = {row["task_name"]: row["failed"] for row in failed if row["session_name"] == session}
        positions = [position + index * width for position in range(len(tasks))]
        failed_axis.bar(positions, [counts.get(task, 0) for task in tasks], width, label=session)
    failed_axis.set_xticks([position + 0.4 - width / 2 for position in range(len(tasks))], tasks)
    failed_axis.set(title="Failed tasks by task name", ylabel="tasks")
    for entrypoint in sorted({row["entrypoint"] for row in runs}):
        points = [row for row in runs if row["entrypoint"] == entrypoint]
        runs_axis.plot([row["run"] for row in points], [row["duration_s"] for row in points], marker="o",
                       label=_short(entrypoint))  # fmt: skip
    runs_axis.set(title="Duration of each run of an entrypoint (Ray Jobs API)", xlabel="run", ylabel="seconds")
    runs_axis.set_ylim(bottom=0)  # from 0, so a second's difference does not look like a doubling
    runs_axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axis in axes.flat:
        axis.grid(alpha=0.3)
        if axis.has_data():
            axis.legend(fontsize="x-small")
        else:
            axis.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=axis.transAxes)
    figure.tight_layout()
    drawn = io.BytesIO()
    figure.savefig(drawn, format="png")
    plt.close(figure)
    # A few flat colours: a 256-colour palette keeps the chart as it looks at 2.5 times fewer bytes, and the
    # chart is stored with every materialization's metadata (twice: in the materialization and its output).
    palette = Image.open(drawn).convert("RGB").quantize(256)
    small = io.BytesIO()
    palette.save(small, format="png", optimize=True)
    return small.getvalue()


_SESSION_COLUMNS = {
    "session_name": "session",
    "cluster_id": "cluster",
    "first_seen": "first scraped (UTC)",
    "duration_minutes": "minutes",
    "nodes": "nodes",
    "cpu_percent_avg": "CPU % avg",
    "cpu_percent_p95": "CPU % p95",
    "cpu_percent_max": "CPU % max",
    "peak_mem_percent": "peak memory %",
    "tasks_finished": "tasks finished",
    "tasks_failed": "tasks failed",
    "tasks_from": "task counts from",
    "peak_object_store_percent": "peak object store %",
    "spilled_bytes": "spilled bytes",
}
_JOB_COLUMNS = {
    "session_name": "session",
    "job_id": "job",
    "entrypoint": "entrypoint",
    "status": "status",
    "started": "started (UTC)",
    "duration_s": "duration s",
    "driver_exit_code": "exit code",
    "tasks_finished": "tasks finished",
    "tasks_failed": "tasks failed",
    "tasks_from": "task counts from",
    "peak_tasks_running": "most running tasks at a scrape",
    "peak_actors_alive": "most live actors at a scrape",
    "cpu_percent_avg": "CPU % avg",
    "peak_mem_percent": "peak memory %",
}
_RUN_COLUMNS = {
    "entrypoint": "entrypoint",
    "run": "run",
    "session_name": "session",
    "job_id": "job",
    "start_time": "started (UTC)",
    "duration_s": "duration s",
    "status": "status",
    "tasks_finished": "tasks finished",
    "tasks_failed": "tasks failed",
}
_LEGEND = (
    "Task counts come from Ray's State API (exact, taken once a job has ended) where every ended job of a "
    "session has them, else from the sampled `ray_tasks` metric (finished and failed tasks counted as they "
    "rise between scrapes). Peaks, CPU and memory are from the metrics. – means no data."
)


def compare(connection: duckdb.DuckDBPyConnection) -> Comparison:
    """The newest sessions, their jobs, and every entrypoint's runs side by side."""
    connection.execute(f"CREATE OR REPLACE TEMP TABLE chosen AS {_SESSIONS}").fetchall()
    sessions = _rows(connection, "SELECT * FROM chosen ORDER BY first_seen DESC")
    jobs = _rows(connection, _JOBS)
    runs = _rows(connection, _RUNS)
    png = render_chart(_rows(connection, _OVER_TIME), _rows(connection, _FAILED_BY_TASK), runs)
    if not sessions:
        return Comparison([], [], runs, f"{NOTHING_YET}\n", png)
    image = base64.b64encode(png).decode()
    text = (
        f"### Sessions\n\n{_table(sessions, _SESSION_COLUMNS)}\n\n"
        f"### Jobs\n\n{_table(jobs, _JOB_COLUMNS)}\n\n"
        f"### Runs of the same entrypoint\n\n{_table(runs, _RUN_COLUMNS) if runs else 'No ended job recorded yet.'}"
        f"\n\n{_LEGEND}\n\n"
        f"![CPU, memory, failed tasks and run durations](data:image/png;base64,{image})\n"
    )
    return Comparison(sessions, jobs, runs, text, png)
