"""Every rollup table, declared once: its columns (type, meaning, how each is computed) and its source.

A minute table is pulled through the query layer (the aggregation runs where the rows are:
Parseable's SQL, or DataFusion over the local store) and kept in DuckDB. Each of its columns is
one of:

* a key, taken by name from the table's ``source``, a relation over ``ray_points``;
* ``pull``: an aggregate over the source's rows for the key, computed by the query layer;
* ``derived``: a DuckDB expression over the pulled columns, computed when the rows are written.

Adding a column is one ``Column`` line; the DDL, the pull, the write, the asset's column
schema and docs/rollup-tables.md all come from these declarations. Minutes are by sample time
(``time_unix_nano``), not arrival, so points replayed after an outage land where they were measured.

Each point (series and sample time) counts once, however often it was stored: Parseable has no idempotency key, so
a body it stored whose answer timed out is stored again from the spool, stamped with a later ``p_timestamp``. A
source that sums over series reads ``points_once``; one that takes the MAX per series and time, or a DISTINCT, is
unchanged by a second copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from raymetrics_pipeline.common import markdown
from raymetrics_pipeline.dataset.names import OLDER_SERIES_HASH, RECEIVED_AT, SERIES_HASH
from raymetrics_pipeline.ingest.health import TARGET_ATTRIBUTE, UP

# Ray node clocks and Parseable's may disagree a little: sample times a bit after ingest.
CLOCK_SKEW = timedelta(minutes=5)
# How long after its sample time a point may still arrive (replayed from the spool after an outage).
LATE_ARRIVAL = timedelta(hours=6)
# A target's scrape before a window's first one, for ``entered``: looked for this far back. A target
# not scraped for longer (the pipeline was stopped) counts its series' whole level again.
SCRAPE_LOOKBACK = timedelta(minutes=30)
# Columns the rollups read, beyond the identity ones ``ray_points`` derives.
REQUIRED_COLUMNS = ("metric_name", "data_point_value", "time_unix_nano", RECEIVED_AT)


@dataclass(frozen=True)
class Window:
    """Sample times ``[start, end)``: one hourly partition."""

    start: datetime
    end: datetime

    def ingest_window(self, now: datetime) -> tuple[datetime, datetime]:
        """The ``p_timestamp`` window that holds every point sampled in this one, late ones included;
        it ends a minute in the future so the current minute is read too."""
        return self.start - CLOCK_SKEW, min(self.end + LATE_ARRIVAL, now + timedelta(minutes=2))


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # DuckDB's
    description: str
    key: bool = False
    pull: str | None = None  # an aggregate over the source, run by the query layer
    derived: str | None = None  # a DuckDB expression over the pulled columns


def key(name: str, description: str) -> Column:
    return Column(name, "TIMESTAMP" if name == "minute" else "VARCHAR", description, key=True)


# Source builders get the window and the dataset's columns (a Ray label is absent until a series carried it).
Source = Callable[[Window, set[str]], str]


class _Keyed:
    columns: tuple[Column, ...]

    @property
    def keys(self) -> list[str]:
        return [column.name for column in self.columns if column.key]


@dataclass(frozen=True)
class MinuteTable(_Keyed):
    name: str
    description: str
    source: Source
    columns: tuple[Column, ...]

    @property
    def pulled(self) -> list[Column]:
        """What the query layer returns: the keys and the aggregates."""
        return [column for column in self.columns if column.derived is None]

    def pull_sql(self, window: Window, dataset_columns: set[str]) -> str:
        """The query-layer SQL for the table's pulled columns over one window."""
        values = [f"{column.pull} AS {column.name}" for column in self.pulled if not column.key]
        return (
            f"SELECT {', '.join(self.keys + values)}\n"
            f"FROM ({self.source(window, dataset_columns)}) AS source\n"
            f"GROUP BY {', '.join(self.keys)}"
        )


@dataclass(frozen=True)
class SummaryTable(_Keyed):
    """Rebuilt for the refreshed sessions (the ``refreshed`` temp table) from the minute tables; kept after
    the minute rows expire. ``refresh`` selects every column by name."""

    name: str
    description: str
    columns: tuple[Column, ...]
    refresh: str


@dataclass(frozen=True)
class RayApiTable(_Keyed):
    """Ray's own exact figures, recorded from its Jobs and State APIs (rayapi/) as they are; kept for good."""

    name: str
    description: str
    columns: tuple[Column, ...]


Table = MinuteTable | SummaryTable | RayApiTable


# --- Building blocks of the sources ---------------------------------------------------


def at(moment: datetime) -> str:
    return f"TIMESTAMP '{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}'"


def samples_in(start: datetime, end: datetime) -> str:
    return f"time_unix_nano >= {at(start)} AND time_unix_nano < {at(end)}"


def label(name: str, dataset_columns: set[str]) -> str:
    """A Ray label as a SQL value; ``''`` when no row in the dataset has carried it yet (no task run so far)."""
    return f"COALESCE(\"{name}\", '')" if name in dataset_columns else "''"


def value_of(metric: str, aggregate: str = "AVG") -> str:
    return f"{aggregate}(CASE WHEN metric_name = '{metric}' THEN data_point_value END)"


# Parseable's own name for a series, the target's service.instance.id among what it hashes; versions before
# v2.8.0 wrote none.
SERIES_HASHES = (SERIES_HASH, OLDER_SERIES_HASH)
# Without a hash, the series is every column but these: Parseable's p_* columns say when and from where a body
# arrived (docs/parseable.md#system-columns), the only ones two deliveries of it differ in; data_point_* are the
# point's values; the metric's own fields are fixed by its name.
_NOT_SERIES_PREFIXES = ("p_", "data_point_")
_NOT_SERIES = frozenset(("time_unix_nano", "metric_description", "metric_unit", "metric_type"))


def points_once(metrics: tuple[str, ...], where: str, dataset_columns: set[str]) -> str:
    """The ``ray_points`` rows of ``metrics`` where ``where`` holds, each point (series and sample time) once: from
    the first delivery of it stored.

    The series is told by Parseable's hash, one column to read where the labels are dozens. Rows stored without a
    hash in a dataset that has one (written before Parseable v2.8) are all kept: nothing cheap tells their series
    apart.
    """
    hashes = [f'"{name}"' for name in SERIES_HASHES if name in dataset_columns]
    if hashes:
        series, kept = hashes, f"delivery = 1 OR ({' AND '.join(f'{name} IS NULL' for name in hashes)})"
    else:
        labels = sorted(dataset_columns - _NOT_SERIES)
        series, kept = [f'"{name}"' for name in labels if not name.startswith(_NOT_SERIES_PREFIXES)], "delivery = 1"
    names = ", ".join(f"'{metric}'" for metric in metrics)
    return f"""
        SELECT * FROM (
            SELECT *, ROW_NUMBER() OVER (PARTITION BY {", ".join(series)}, time_unix_nano ORDER BY {RECEIVED_AT})
                      AS delivery
            FROM ray_points WHERE metric_name IN ({names}) AND {where}) AS deliveries
        WHERE {kept}"""


POINT_KEYS = "DATE_TRUNC('minute', time_unix_nano) AS minute, ray_cluster AS cluster_id, ray_session AS session_name"
MINUTE = key("minute", "The minute (UTC) the samples were taken in.")
CLUSTER = key("cluster_id", "`cluster_id` from RAYMETRICS_RESOURCE_ATTRIBUTES; '' when unset.")
SESSION = key("session_name", "Ray's session (its `SessionName` label): one per `ray start` of the head.")
NODE = key("node", "The node's address (`NodeAddress`, or `ip` on `ray_node_*` series).")
JOB = key("job_id", "Ray's job id (`JobId`); '' for what Ray files under no job.")


# --- Minute tables ---------------------------------------------------------------------


def _node_scrapes(window: Window, dataset_columns: set[str]) -> str:
    """Each node's CPU and memory at each scrape, so a peak ratio is one scrape's, not a ratio of averages."""
    return f"""
        SELECT *, mem_used / NULLIF(mem_total, 0) AS mem_pressure
        FROM (SELECT {POINT_KEYS}, ray_node AS node, time_unix_nano,
                     {value_of("ray_node_cpu_utilization", "MAX")} AS cpu_percent,
                     {value_of("ray_node_cpu_count", "MAX")} AS cpus,
                     {value_of("ray_node_mem_used", "MAX")} AS mem_used,
                     {value_of("ray_node_mem_total", "MAX")} AS mem_total
              FROM ray_points
              WHERE metric_name IN ('ray_node_cpu_utilization', 'ray_node_cpu_count', 'ray_node_mem_used',
                                    'ray_node_mem_total')
                AND {samples_in(window.start, window.end)}
              GROUP BY 1, 2, 3, 4, 5) AS scrapes"""


NODE_MINUTE = MinuteTable(
    "node_minute",
    "Per node and minute: CPU and memory.",
    _node_scrapes,
    (
        MINUTE,
        CLUSTER,
        SESSION,
        NODE,
        Column("cpu_percent_avg", "DOUBLE", "CPU utilisation %, mean of the scrapes.", pull="AVG(cpu_percent)"),
        Column("cpu_percent_max", "DOUBLE", "CPU utilisation %, highest scrape.", pull="MAX(cpu_percent)"),
        Column("cpu_count", "DOUBLE", "CPUs on the node.", pull="MAX(cpus)"),
        Column("mem_used_avg", "DOUBLE", "Memory used (bytes), mean of the scrapes.", pull="AVG(mem_used)"),
        Column("mem_used_max", "DOUBLE", "Memory used (bytes), highest scrape.", pull="MAX(mem_used)"),
        Column("mem_total", "DOUBLE", "The node's memory (bytes).", pull="MAX(mem_total)"),
        Column(
            "mem_pressure_avg", "DOUBLE", "mem_used_avg / mem_total.", derived="mem_used_avg / NULLIF(mem_total, 0)"
        ),
        Column(
            "mem_pressure_max",
            "DOUBLE",
            "Memory used / total at the scrape where it was highest.",
            pull="MAX(mem_pressure)",
        ),
        Column("samples", "BIGINT", "Scrapes with a CPU figure in the minute.", pull="COUNT(cpu_percent)"),
    ),
)

# Labels that, with the target and node, tell one ray_tasks series from another within a group.
_TASK_SERIES_LABELS = ("IsRetry", "Source", "Component")
# Ray's job manager runs each submitted job under a JobSupervisor actor (``_ray_internal_job_actor_<id>``):
# its tasks are Ray's, not the job's, and Ray's State API leaves them out of its task summary; so do we.
RAY_JOB_MANAGER_TASKS = ("JobSupervisor.%", "%:JobSupervisor.%")


def _task_scrapes(window: Window, dataset_columns: set[str]) -> str:
    """Every ``ray_tasks`` series at every scrape of its target, with the tasks that entered its state since
    the target's previous scrape: the rise of the series, never a fall.

    Ray 2.60's metrics agent sums each task name and state over the live workers that own such tasks (the
    jobs' drivers), under ``JobId=""`` for FINISHED and FAILED. A job's part leaves the sum about 20 s
    after the job ends, so a fall is a job leaving (its tasks were counted as they rose), and a series
    missing from a scrape its target answered (``raymetrics_pipeline_up`` = 1) is at 0 there: when it
    returns for the next job, its whole level is new. Per scrape, not per minute, so a job shorter than a
    minute counts too. Points sent twice count once (the highest value of a series at a time). Rows from
    before the pipeline named its targets fall back to the node as the target.
    """
    target = f"COALESCE(NULLIF({label(TARGET_ATTRIBUTE, dataset_columns)}, ''), ray_node)"
    labels = [f'"{name}"' for name in _TASK_SERIES_LABELS if name in dataset_columns]
    series = ["target", "cluster_id", "session_name", "job_id", "task_name", "state", *labels, "node"]
    keys = ", ".join(series)
    scraped = samples_in(window.start - SCRAPE_LOOKBACK, window.end)
    task_name = label("Name", dataset_columns)
    ray_own = " OR ".join(f"{task_name} LIKE '{pattern}'" for pattern in RAY_JOB_MANAGER_TASKS)
    return f"""
        WITH levels AS (
            SELECT {target} AS target, ray_cluster AS cluster_id, ray_session AS session_name, ray_job AS job_id,
                   {task_name} AS task_name, {label("State", dataset_columns)} AS state,
                   {", ".join([*labels, "ray_node AS node"])}, time_unix_nano AS scraped_at,
                   MAX(data_point_value) AS level
            FROM ray_points WHERE metric_name = 'ray_tasks' AND {scraped} AND NOT ({ray_own})
            GROUP BY {", ".join(str(i) for i in range(1, len(series) + 2))}),
        scrapes AS (
            SELECT DISTINCT {target} AS target, time_unix_nano AS scraped_at
            FROM ray_points
            WHERE (metric_name = 'ray_tasks' OR (metric_name = '{UP}' AND data_point_value = 1)) AND {scraped}),
        grid AS (
            SELECT {", ".join(f"s.{name}" for name in series)}, c.scraped_at, COALESCE(l.level, 0) AS level
            FROM (SELECT DISTINCT {keys} FROM levels) AS s
            JOIN scrapes AS c ON c.target = s.target
            LEFT JOIN levels AS l ON {" AND ".join(f"l.{name} = s.{name}" for name in series)}
                 AND l.scraped_at = c.scraped_at),
        steps AS (
            SELECT *, LAG(level) OVER (PARTITION BY {keys} ORDER BY scraped_at) AS previous,
                   ROW_NUMBER() OVER (PARTITION BY {keys}, DATE_TRUNC('minute', scraped_at)
                                      ORDER BY scraped_at DESC) AS from_minute_end
            FROM grid)
        SELECT DATE_TRUNC('minute', scraped_at) AS minute, cluster_id, session_name, job_id, task_name, state,
               CASE WHEN from_minute_end = 1 THEN level END AS level_at_minute_end,
               CASE WHEN previous IS NULL OR previous = 0 THEN level
                    WHEN level > previous THEN level - previous
                    ELSE 0 END AS entered
        FROM steps WHERE {samples_in(window.start, window.end).replace("time_unix_nano", "scraped_at")}"""


TASK_STATE_MINUTE = MinuteTable(
    "task_state_minute",
    "Per task name, state and job, and minute: how many tasks are in the state, and how many entered it. "
    "Ray 2.60 files finished and failed tasks under JobId '', so look for failures by task_name. The tasks of "
    "Ray's job manager (JobSupervisor) are left out, as Ray's State API leaves them out of its summary.",
    _task_scrapes,
    (
        MINUTE,
        CLUSTER,
        SESSION,
        JOB,
        key("task_name", "The task's name (`Name`)."),
        key("state", "The task state (`State`): RUNNING, FINISHED, FAILED, ..."),
        Column(
            "tasks",
            "DOUBLE",
            "Tasks in the state at the minute's last scrape (summed over series; a series its target no longer "
            "serves is at 0).",
            pull="COALESCE(SUM(level_at_minute_end), 0)",
        ),
        Column(
            "entered",
            "DOUBLE",
            "Tasks that entered the state in the minute: each series' rise since its target's previous scrape "
            "(found up to 30 minutes back; a series absent from a scrape its target answered is at 0 there), "
            "summed over the minute's scrapes. A fall is a job's part leaving Ray's sum, not tasks un-finishing, "
            "and counts 0.",
            pull="SUM(entered)",
        ),
    ),
)


def _object_store_scrapes(window: Window, dataset_columns: set[str]) -> str:
    """``ray_object_store_memory`` summed over series per node, object state, location and scrape (one
    ``WORKER_HEAP`` series per worker, as Ray's dashboard sums them), beside the node's used, available and
    spilled bytes that minute and its highest per-scrape pressure."""
    samples = samples_in(window.start, window.end)
    return f"""
        SELECT o.*, n.node_used_bytes, n.node_available_bytes, n.node_pressure, n.node_spilled_bytes
        FROM (SELECT {POINT_KEYS}, ray_node AS node, {label("ObjectState", dataset_columns)} AS object_state,
                     {label("Location", dataset_columns)} AS location, time_unix_nano,
                     SUM(data_point_value) AS bytes
              FROM ({points_once(("ray_object_store_memory",), samples, dataset_columns)}) AS points
              GROUP BY 1, 2, 3, 4, 5, 6, 7) AS o
        LEFT JOIN (
              SELECT minute, cluster_id, session_name, node, AVG(used) AS node_used_bytes,
                     AVG(available) AS node_available_bytes, MAX(used / NULLIF(used + available, 0)) AS node_pressure,
                     MAX(spilled) AS node_spilled_bytes
              FROM (SELECT {POINT_KEYS}, ray_node AS node, time_unix_nano,
                           {value_of("ray_object_store_used_memory", "MAX")} AS used,
                           {value_of("ray_object_store_available_memory", "MAX")} AS available,
                           MAX(CASE WHEN metric_name = 'ray_spill_manager_objects_bytes'
                                    AND {label("State", dataset_columns)} = 'Spilled' THEN data_point_value END)
                               AS spilled
                    FROM ray_points
                    WHERE metric_name IN ('ray_object_store_used_memory', 'ray_object_store_available_memory',
                                          'ray_spill_manager_objects_bytes') AND {samples}
                    GROUP BY 1, 2, 3, 4, 5) AS scrapes
              GROUP BY 1, 2, 3, 4) AS n
          ON o.minute = n.minute AND o.cluster_id = n.cluster_id AND o.session_name = n.session_name
             AND o.node = n.node"""


OBJECT_STORE_MINUTE = MinuteTable(
    "object_store_minute",
    "Object store bytes per node, object state and location, and minute (summed over the node's series at each "
    "scrape), with the node's used and available bytes and pressure.",
    _object_store_scrapes,
    (
        MINUTE,
        CLUSTER,
        SESSION,
        NODE,
        key("object_state", "`ObjectState` of `ray_object_store_memory`."),
        key("location", "`Location` of `ray_object_store_memory` (IN_MEMORY, SPILLED, WORKER_HEAP, ...)."),
        Column("bytes_avg", "DOUBLE", "Bytes on the node, mean of the scrapes.", pull="AVG(bytes)"),
        Column("bytes_max", "DOUBLE", "Bytes on the node, highest scrape.", pull="MAX(bytes)"),
        Column(
            "node_used_bytes",
            "DOUBLE",
            "The node's object store bytes used, mean of the scrapes.",
            pull="MAX(node_used_bytes)",
        ),
        Column(
            "node_available_bytes",
            "DOUBLE",
            "The node's object store bytes available, mean of the scrapes.",
            pull="MAX(node_available_bytes)",
        ),
        Column(
            "node_pressure",
            "DOUBLE",
            "The node's object store used / (used + available) at the scrape where it was highest.",
            pull="MAX(node_pressure)",
        ),
        Column(
            "node_spilled_bytes",
            "DOUBLE",
            "Bytes the node has spilled, highest scrape.",
            pull="MAX(node_spilled_bytes)",
        ),
    ),
)


def _job_scrapes(window: Window, dataset_columns: set[str]) -> str:
    """What Ray labels with a job, per job and scrape: its duration, live actors and running tasks then."""
    state = label("State", dataset_columns)
    labelled = f"ray_job <> '' AND {samples_in(window.start, window.end)}"
    return f"""
        SELECT {POINT_KEYS}, ray_job AS job_id, time_unix_nano,
               MAX(CASE WHEN metric_name = 'ray_job_duration_s' THEN data_point_value END) AS duration_s,
               SUM(CASE WHEN metric_name = 'ray_actors' AND {state} LIKE 'ALIVE%' THEN data_point_value END) AS actors,
               SUM(CASE WHEN metric_name = 'ray_tasks' AND {state} LIKE 'RUNNING%' THEN data_point_value END)
                   AS running
        FROM ({points_once(("ray_job_duration_s", "ray_actors", "ray_tasks"), labelled, dataset_columns)}) AS points
        GROUP BY 1, 2, 3, 4, 5"""


JOB_MINUTE = MinuteTable(
    "job_minute",
    "Per Ray job and minute: what Ray labels with a job.",
    _job_scrapes,
    (
        MINUTE,
        CLUSTER,
        SESSION,
        JOB,
        Column("job_duration_s", "DOUBLE", "The job's duration so far (`ray_job_duration_s`).", pull="MAX(duration_s)"),
        Column("actors_alive", "DOUBLE", "Most live actors at one scrape in the minute.", pull="MAX(actors)"),
        Column("tasks_running", "DOUBLE", "Most running tasks at one scrape in the minute.", pull="MAX(running)"),
    ),
)

MINUTE_TABLES = (NODE_MINUTE, TASK_STATE_MINUTE, OBJECT_STORE_MINUTE, JOB_MINUTE)


# --- Summaries -----------------------------------------------------------------------

_FIRST_SEEN = Column("first_seen", "TIMESTAMP", "First minute with data.")
_LAST_SEEN = Column("last_seen", "TIMESTAMP", "Last minute with data.")
_NODES = Column("nodes", "BIGINT", "Nodes that reported.")
_CPU = (
    Column("cpu_percent_avg", "DOUBLE", "CPU %, mean over nodes and minutes."),
    Column("cpu_percent_p95", "DOUBLE", "CPU %, 95th percentile of the node minutes' means."),
    Column("cpu_percent_max", "DOUBLE", "CPU %, highest sample."),
    Column("peak_mem_pressure", "DOUBLE", "Highest memory used / total of a node."),
)
_TASK_COUNTS = (
    Column("tasks_finished", "DOUBLE", "Tasks that finished (sum of `entered`); empty with no task metrics."),
    Column("tasks_failed", "DOUBLE", "Tasks that failed (sum of `entered`); empty with no task metrics."),
)
_STORE = (
    Column("peak_object_store_pressure", "DOUBLE", "Highest object store used / (used + available) of a node."),
    Column("spilled_bytes", "DOUBLE", "Most bytes a node had spilled."),
)
_UPDATED_AT = Column("updated_at", "TIMESTAMP", "When this row was last rebuilt.")

SESSION_SUMMARY = SummaryTable(
    "session_summary",
    "One row per Ray session.",
    (
        CLUSTER,
        SESSION,
        _FIRST_SEEN,
        _LAST_SEEN,
        Column("duration_minutes", "DOUBLE", "Minutes from the first to the last minute, both counted."),
        _NODES,
        *_CPU,
        *_TASK_COUNTS,
        Column("failure_rate", "DOUBLE", "tasks_failed / (tasks_finished + tasks_failed)."),
        *_STORE,
        _UPDATED_AT,
    ),
    """
    INSERT INTO session_summary BY NAME
    WITH nodes AS (
        SELECT cluster_id, session_name, MIN(minute) AS first_seen, MAX(minute) AS last_seen,
               COUNT(DISTINCT node) AS nodes, AVG(cpu_percent_avg) AS cpu_percent_avg,
               QUANTILE_CONT(cpu_percent_avg, 0.95) AS cpu_percent_p95, MAX(cpu_percent_max) AS cpu_percent_max,
               MAX(mem_pressure_max) AS peak_mem_pressure
        FROM node_minute SEMI JOIN refreshed USING (cluster_id, session_name) GROUP BY 1, 2),
    tasks AS (
        SELECT cluster_id, session_name, COALESCE(SUM(entered) FILTER (WHERE state = 'FINISHED'), 0) AS finished,
               COALESCE(SUM(entered) FILTER (WHERE state = 'FAILED'), 0) AS failed
        FROM task_state_minute GROUP BY 1, 2),
    store AS (
        SELECT cluster_id, session_name, MAX(node_pressure) AS pressure, MAX(node_spilled_bytes) AS spilled
        FROM object_store_minute GROUP BY 1, 2)
    SELECT cluster_id, session_name, first_seen, last_seen,
           (EPOCH(last_seen) - EPOCH(first_seen)) / 60 + 1 AS duration_minutes, nodes, cpu_percent_avg,
           cpu_percent_p95, cpu_percent_max, peak_mem_pressure, finished AS tasks_finished, failed AS tasks_failed,
           failed / NULLIF(finished + failed, 0) AS failure_rate,
           pressure AS peak_object_store_pressure, spilled AS spilled_bytes, $now AS updated_at
    FROM nodes LEFT JOIN tasks USING (cluster_id, session_name) LEFT JOIN store USING (cluster_id, session_name)""",
)

JOB_SUMMARY = SummaryTable(
    "job_summary",
    "One row per Ray job (what carries JobId), with its session's CPU, memory and object store while it ran.",
    (
        CLUSTER,
        SESSION,
        JOB,
        _FIRST_SEEN,
        _LAST_SEEN,
        Column("duration_s", "DOUBLE", "The job's duration (`ray_job_duration_s`, highest)."),
        _NODES,
        *_CPU,
        Column("peak_actors_alive", "DOUBLE", "Most live actors in a minute."),
        Column("peak_tasks_running", "DOUBLE", "Most running tasks in a minute."),
        *_TASK_COUNTS,
        *_STORE,
        _UPDATED_AT,
    ),
    """
    INSERT INTO job_summary BY NAME
    WITH jobs AS (
        SELECT cluster_id, session_name, job_id, MIN(minute) AS first_seen, MAX(minute) AS last_seen,
               MAX(job_duration_s) AS duration_s, MAX(actors_alive) AS peak_actors_alive,
               MAX(tasks_running) AS peak_tasks_running
        FROM job_minute SEMI JOIN refreshed USING (cluster_id, session_name) GROUP BY 1, 2, 3),
    during AS (
        SELECT j.cluster_id, j.session_name, j.job_id, COUNT(DISTINCT n.node) AS nodes,
               AVG(n.cpu_percent_avg) AS cpu_percent_avg, QUANTILE_CONT(n.cpu_percent_avg, 0.95) AS cpu_percent_p95,
               MAX(n.cpu_percent_max) AS cpu_percent_max, MAX(n.mem_pressure_max) AS peak_mem_pressure
        FROM jobs j JOIN node_minute n ON n.cluster_id = j.cluster_id AND n.session_name = j.session_name
             AND n.minute BETWEEN j.first_seen AND j.last_seen
        GROUP BY 1, 2, 3),
    store AS (
        SELECT j.cluster_id, j.session_name, j.job_id, MAX(o.node_pressure) AS peak_object_store_pressure,
               MAX(o.node_spilled_bytes) AS spilled_bytes
        FROM jobs j JOIN object_store_minute o ON o.cluster_id = j.cluster_id AND o.session_name = j.session_name
             AND o.minute BETWEEN j.first_seen AND j.last_seen
        GROUP BY 1, 2, 3),
    tasks AS (
        SELECT cluster_id, session_name, job_id,
               COALESCE(SUM(entered) FILTER (WHERE state = 'FINISHED'), 0) AS finished,
               COALESCE(SUM(entered) FILTER (WHERE state = 'FAILED'), 0) AS failed
        FROM task_state_minute WHERE job_id <> '' GROUP BY 1, 2, 3)
    SELECT cluster_id, session_name, job_id, first_seen, last_seen, duration_s, nodes, cpu_percent_avg,
           cpu_percent_p95, cpu_percent_max, peak_mem_pressure, peak_actors_alive, peak_tasks_running,
           finished AS tasks_finished, failed AS tasks_failed, peak_object_store_pressure, spilled_bytes,
           $now AS updated_at
    FROM jobs LEFT JOIN during USING (cluster_id, session_name, job_id)
         LEFT JOIN store USING (cluster_id, session_name, job_id)
         LEFT JOIN tasks USING (cluster_id, session_name, job_id)""",
)

SUMMARY_TABLES = (SESSION_SUMMARY, JOB_SUMMARY)


# --- Ray's own figures ------------------------------------------------------------------

_RAY_SESSION = key("session_name", "The Ray session the dashboard served (`/api/version`), as in `SessionName`.")
_RAY_JOB = key(
    "job_id",
    "Ray's job id (hex, as in `JobId`; ids start again in each session); for a submission that ended before its "
    "driver started (an entrypoint that failed at once), which Ray never gives an id, its submission id.",
)

RAY_JOBS = RayApiTable(
    "ray_jobs",
    "Every job Ray's Jobs API lists (submitted jobs and driver scripts), with its tasks from the State API "
    "summed, taken once the job has ended: Ray's exact figures, where the minute tables have sampled metrics.",
    (
        CLUSTER,
        _RAY_SESSION,
        _RAY_JOB,
        Column("submission_id", "VARCHAR", "The Jobs API's submission id; empty for a driver script."),
        Column("job_type", "VARCHAR", "SUBMISSION (through the Jobs API) or DRIVER (a script calling ray.init)."),
        Column("entrypoint", "VARCHAR", "The command the job ran: runs of the same entrypoint line up in reports."),
        Column("status", "VARCHAR", "PENDING, RUNNING, STOPPED, SUCCEEDED or FAILED."),
        Column("start_time", "TIMESTAMP", "When the job started (UTC)."),
        Column("end_time", "TIMESTAMP", "When it ended (UTC); empty while it runs."),
        Column("duration_s", "DOUBLE", "end_time - start_time, in seconds."),
        Column("driver_exit_code", "BIGINT", "The entrypoint's exit code (submitted jobs)."),
        Column("message", "VARCHAR", "Ray's word on the job, e.g. why it failed."),
        Column("tasks_finished", "BIGINT", "Task attempts that finished (State API); empty until recorded."),
        Column("tasks_failed", "BIGINT", "Task attempts that failed (a retried task counts per attempt)."),
        Column("tasks_complete", "BOOLEAN", "False when Ray said its task figures for the job are partial."),
        Column("tasks_warning", "VARCHAR", "Why they are partial, in Ray's words."),
        Column("tasks_recorded_at", "TIMESTAMP", "When the tasks were taken from the State API."),
        Column("updated_at", "TIMESTAMP", "When the job's row was last written."),
    ),
)

RAY_JOB_TASKS = RayApiTable(
    "ray_job_tasks",
    "Per Ray job, task name and state: task attempts, from the State API's summary taken once the job ended.",
    (
        CLUSTER,
        _RAY_SESSION,
        _RAY_JOB,
        key("task_name", "The task's name: the function, or Class.method."),
        key("state", "FINISHED, FAILED, ... (Ray's TaskStatus)."),
        Column("tasks", "BIGINT", "Task attempts in that state."),
    ),
)

RAY_API_TABLES = (RAY_JOBS, RAY_JOB_TASKS)
ALL_TABLES: tuple[Table, ...] = MINUTE_TABLES + SUMMARY_TABLES + RAY_API_TABLES


COLUMN_HEADERS = ("column", "type", "meaning")


def reference() -> str:
    """docs/rollup-tables.md: every table and column, written from these declarations."""
    lines = [
        "# Rollup tables",
        "",
        "Written by `python tools/write_rollup_docs.py` from `raymetrics_pipeline/rollups/tables.py`;",
        "a test fails when this page and the declarations disagree. Keys are marked **key**.",
        "",
        "Figures from the metrics count each point (a series at a sample time) once, however often it was stored.",
    ]
    for table in ALL_TABLES:
        kind = {
            MinuteTable: "minute table",
            SummaryTable: "summary, kept after its minutes expire",
            RayApiTable: "from Ray's own APIs, kept for good",
        }[type(table)]
        rows = [(f"`{c.name}`" + (" **key**" if c.key else ""), c.type, c.description) for c in table.columns]
        lines += ["", f"## `{table.name}` ({kind})", "", table.description, "", markdown.table(COLUMN_HEADERS, rows)]
    return "\n".join(lines) + "\n"
