"""Ray runs side by side: tables and a chart from the DuckDB rollups.

Sessions are aligned on minutes since their own start, so two runs of the same workload line
up whatever the wall-clock time they ran at.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import duckdb
import matplotlib

matplotlib.use("Agg")  # no display: render straight to PNG
import matplotlib.pyplot as plt  # noqa: E402

from raymetrics_pipeline.common import markdown  # noqa: E402

MAX_SESSIONS = 8  # the newest ones; more lines stop being readable
NOTHING_YET = (
    "Nothing rolled up yet: session_summary holds no Ray session. The minute rollups are filled by "
    "refresh_rollups every 5 minutes (rollups_schedule) once scrape runs have delivered metrics, and this "
    "comparison by the next refresh_reports. To see it now, launch refresh_rollups for the current hour "
    "(UI: Jobs → refresh_rollups → Materialize, pick the hour), then refresh_reports."
)

_SESSIONS = f"""
    SELECT cluster_id, session_name, first_seen, duration_minutes, nodes, cpu_percent_avg, cpu_percent_p95,
           cpu_percent_max, peak_mem_pressure, tasks_finished, tasks_failed, failure_rate,
           peak_object_store_pressure, spilled_bytes
    FROM session_summary ORDER BY first_seen DESC LIMIT {MAX_SESSIONS}"""
_JOBS = """
    SELECT session_name, job_id, first_seen, duration_s, peak_actors_alive, peak_tasks_running, cpu_percent_avg,
           peak_mem_pressure
    FROM job_summary SEMI JOIN chosen USING (cluster_id, session_name) ORDER BY first_seen, job_id"""
_OVER_TIME = """
    SELECT n.session_name, (EPOCH(n.minute) - EPOCH(c.first_seen)) / 60 AS minutes_in,
           AVG(n.cpu_percent_avg) AS cpu, AVG(n.mem_pressure_avg) * 100 AS memory
    FROM node_minute n JOIN chosen c USING (cluster_id, session_name)
    GROUP BY 1, 2 ORDER BY 1, 2"""
_FAILED_BY_TASK = """
    SELECT t.session_name, t.task_name, SUM(t.entered) AS failed
    FROM task_state_minute t SEMI JOIN chosen USING (cluster_id, session_name)
    WHERE t.state = 'FAILED' GROUP BY 1, 2 HAVING SUM(t.entered) > 0 ORDER BY 2, 1"""


@dataclass
class Comparison:
    sessions: list[dict]
    jobs: list[dict]
    markdown: str
    png: bytes


def _rows(connection: duckdb.DuckDBPyConnection, sql: str) -> list[dict]:
    cursor = connection.execute(sql)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]


def _table(rows: list[dict], columns: dict[str, str]) -> str:
    """``rows`` under the headers ``columns`` gives for each key."""
    return markdown.table(list(columns.values()), ([row[key] for key in columns] for row in rows))


def _short(session: str) -> str:
    """``session_2026-11-28_07-30-55_508794_18017`` → ``2026-11-28 07:30:55``, enough to tell runs apart."""
    parts = session.split("_")
    return f"{parts[1]} {parts[2].replace('-', ':')}" if len(parts) >= 3 and session.startswith("session_") else session


def render_chart(over_time: list[dict], failed: list[dict]) -> bytes:
    figure, (cpu_axis, memory_axis, failed_axis) = plt.subplots(1, 3, figsize=(13, 4), dpi=80)
    for session in sorted({row["session_name"] for row in over_time}):
        points = [row for row in over_time if row["session_name"] == session]
        minutes = [row["minutes_in"] for row in points]
        cpu_axis.plot(minutes, [row["cpu"] for row in points], marker="o", label=_short(session))
        memory_axis.plot(minutes, [row["memory"] for row in points], marker="o", label=_short(session))
    cpu_axis.set(title="CPU % (mean over nodes)", xlabel="minutes since session start")
    memory_axis.set(title="Memory used % (mean over nodes)", xlabel="minutes since session start")
    tasks = sorted({row["task_name"] for row in failed})
    sessions = sorted({row["session_name"] for row in failed})
    width = 0.8 / max(len(sessions), 1)
    for index, session in enumerate(sessions):
        counts = {row["task_name"]: row["failed"] for row in failed if row["session_name"] == session}
        positions = [position + index * width for position in range(len(tasks))]
        failed_axis.bar(positions, [counts.get(task, 0) for task in tasks], width, label=_short(session))
    failed_axis.set_xticks([position + 0.4 - width / 2 for position in range(len(tasks))], tasks)
    failed_axis.set(title="Failed tasks by task name")
    for axis in (cpu_axis, memory_axis, failed_axis):
        axis.grid(alpha=0.3)
        if axis.has_data():
            axis.legend(fontsize="small")
        else:
            axis.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=axis.transAxes)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def compare(connection: duckdb.DuckDBPyConnection) -> Comparison:
    """The newest sessions and their jobs side by side, from the summary and minute tables."""
    connection.execute(f"CREATE OR REPLACE TEMP TABLE chosen AS {_SESSIONS}").fetchall()
    sessions = _rows(connection, "SELECT * FROM chosen ORDER BY first_seen DESC")
    jobs = _rows(connection, _JOBS)
    png = render_chart(_rows(connection, _OVER_TIME), _rows(connection, _FAILED_BY_TASK))
    if not sessions:
        return Comparison([], [], f"{NOTHING_YET}\n", png)
    session_table = _table(
        sessions,
        {
            "session_name": "session",
            "cluster_id": "cluster",
            "first_seen": "started (UTC)",
            "duration_minutes": "minutes",
            "nodes": "nodes",
            "cpu_percent_avg": "CPU % avg",
            "cpu_percent_p95": "CPU % p95",
            "cpu_percent_max": "CPU % max",
            "peak_mem_pressure": "peak memory used",
            "tasks_finished": "tasks finished",
            "tasks_failed": "tasks failed",
            "failure_rate": "failure rate",
            "peak_object_store_pressure": "peak object store used",
            "spilled_bytes": "spilled bytes",
        },
    )
    job_table = _table(
        jobs,
        {
            "session_name": "session",
            "job_id": "job",
            "first_seen": "first seen (UTC)",
            "duration_s": "duration s",
            "peak_actors_alive": "peak actors",
            "peak_tasks_running": "peak running tasks",
            "cpu_percent_avg": "CPU % avg",
            "peak_mem_pressure": "peak memory used",
        },
    )
    image = base64.b64encode(png).decode()
    text = (
        f"### Sessions\n\n{session_table}\n\n### Jobs\n\n{job_table}\n\n"
        f"![CPU, memory and failed tasks per session](data:image/png;base64,{image})\n"
    )
    return Comparison(sessions, jobs, text, png)
