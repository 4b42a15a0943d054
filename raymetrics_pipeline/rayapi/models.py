"""Ray's job and task figures as frozen dataclasses, parsed from the dashboard's JSON (checked against Ray 2.60.0).

Parsing is kept apart from HTTP so it is tested on JSON captured from a real head.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# JobStatus in ray.dashboard.modules.job.common (Ray 2.60). A DRIVER job (a script that called ray.init itself) is
# only ever RUNNING or SUCCEEDED: Ray reports SUCCEEDED for any dead driver, even one that crashed.
JOB_STATUSES = ("PENDING", "RUNNING", "STOPPED", "SUCCEEDED", "FAILED")


class RayApiFormatError(ValueError):
    """A document that is not what Ray's API returns (a different server on that port, say)."""


@dataclass(frozen=True)
class RayJob:
    """One entry of ``GET /api/jobs/`` (Ray's ``JobDetails``).

    ``job_id`` is the hex job id (``"02000000"``); None for a submission whose driver has not connected yet, or
    never did (an entrypoint that exits without ``ray.init()``). ``submission_id`` is None for a DRIVER job.
    """

    job_id: str | None
    submission_id: str | None
    job_type: str  # SUBMISSION (through the Jobs API) or DRIVER (a script that called ray.init itself)
    entrypoint: str
    status: str  # one of JOB_STATUSES
    start_time: datetime | None  # UTC; Ray gives ms since the epoch
    end_time: datetime | None  # UTC; None while the job runs
    driver_exit_code: int | None  # the entrypoint's exit code (SUBMISSION jobs only)
    message: str | None  # Ray's explanation, e.g. why a job failed or is still pending
    error_type: str | None = None  # e.g. JOB_ENTRYPOINT_COMMAND_ERROR

    @property
    def is_terminal(self) -> bool:
        return self.status in ("STOPPED", "SUCCEEDED", "FAILED")


@dataclass(frozen=True)
class TaskCount:
    """Task attempts of one job with one name in one state. A retried task counts once per attempt (Ray's own rule)."""

    job_id: str
    task_name: str  # the task's name: the function (``square``) or ``Class.method``, or ``.options(name=...)``
    state: str  # FINISHED, FAILED, RUNNING, PENDING_NODE_ASSIGNMENT, ... (Ray's TaskStatus)
    count: int


@dataclass(frozen=True)
class TaskSummary:
    """A job's task counts, and whether Ray says they are whole.

    ``complete`` is False when Ray reports missing data: task attempts the GCS no longer holds (evicted beyond
    ``RAY_task_events_max_num_task_in_gcs``, default 100,000 attempts for the whole cluster, finished tasks first;
    or dropped by a worker's task event buffer), more attempts than one query returns
    (``RAY_MAX_LIMIT_FROM_DATA_SOURCE`` and ``RAY_MAX_LIMIT_FROM_API_SERVER``, 10,000 each by default, read by the
    dashboard on the head), or a data source that did not answer. ``warning`` says which, in Ray's words where it
    gave any.
    """

    job_id: str
    counts: tuple[TaskCount, ...]
    complete: bool
    warning: str
    total: int  # attempts Ray knows of for the job, including those it no longer holds
    kept: int  # attempts Ray still holds (its num_after_truncation)

    def count(self, task_name: str, state: str) -> int:
        return sum(c.count for c in self.counts if c.task_name == task_name and c.state == state)

    def by_name_and_state(self) -> dict[tuple[str, str], int]:
        return {(c.task_name, c.state): c.count for c in self.counts}


def _datetime_from_ms(value: Any) -> datetime | None:
    if value in (None, 0, "", "0"):
        return None
    return datetime.fromtimestamp(int(value) / 1000, UTC)


def _optional_int(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def parse_job(entry: Mapping[str, Any]) -> RayJob:
    """One JobDetails object. Field names as Ray 2.60 writes them: ``type``, ``job_id``, ``submission_id``, ...."""
    try:
        return RayJob(
            job_id=_optional_str(entry.get("job_id")),
            submission_id=_optional_str(entry.get("submission_id")),
            job_type=str(entry["type"]),
            entrypoint=str(entry.get("entrypoint") or ""),
            status=str(entry["status"]),
            start_time=_datetime_from_ms(entry.get("start_time")),
            end_time=_datetime_from_ms(entry.get("end_time")),
            driver_exit_code=_optional_int(entry.get("driver_exit_code")),
            message=_optional_str(entry.get("message")),
            error_type=_optional_str(entry.get("error_type")),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise RayApiFormatError(f"a job entry lacks or garbles {error}: {str(dict(entry))[:200]}") from None


def parse_jobs(document: Any) -> list[RayJob]:
    """``GET /api/jobs/``: a JSON list of JobDetails, SUBMISSION and DRIVER jobs alike."""
    if not isinstance(document, list) or not all(isinstance(entry, Mapping) for entry in document):
        raise RayApiFormatError(f"expected a JSON list of job objects, got {str(document)[:200]}")
    return [parse_job(entry) for entry in document]


def parse_task_summary(job_id: str, document: Any) -> TaskSummary:
    """``GET /api/v0/tasks/summarize`` filtered to one job, as Ray 2.60 answers it::

        {"result": true, "msg": "", "data": {"result": {
            "total": 40, "num_after_truncation": 40, "num_filtered": 40,
            "result": {"node_id_to_summary": {"cluster": {"summary": {
                "square": {"func_or_class_name": "square", "type": "NORMAL_TASK", "state_counts": {"FINISHED": 30}},
                ...}, "total_tasks": 34, ...}}},
            "partial_failure_warning": "", "warnings": null}}}

    ``complete`` follows Ray's own client (``StateApiClient._raise_on_missing_output``: a partial failure, or
    ``total`` above ``num_after_truncation``), plus the summary's own warnings and a summary that counts fewer
    attempts than matched the filter.
    """
    try:
        if document.get("result") is not True:
            raise RayApiFormatError(f"Ray refused the summary: {document.get('msg') or document}")
        body = document["data"]["result"]
        cluster = body["result"]["node_id_to_summary"]["cluster"]
        groups = cluster["summary"]
        counts = [
            TaskCount(job_id, str(name), str(state), int(n))
            for name, group in groups.items()
            for state, n in group["state_counts"].items()
        ]
        total, kept = int(body["total"]), int(body["num_after_truncation"])
        matched = int(body.get("num_filtered", kept))
        partial = str(body.get("partial_failure_warning") or "")
        ray_warnings = [str(w) for w in body.get("warnings") or []]
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        if isinstance(error, RayApiFormatError):
            raise
        raise RayApiFormatError(f"not a State API task summary ({type(error).__name__}: {error})") from None

    counted = sum(c.count for c in counts)
    problems = []
    if partial:
        problems.append(f"some data sources did not answer: {partial}")
    if total > kept:
        problems.append(
            f"Ray returned {kept} of the {total} task attempts it recorded for job {job_id}; the rest were evicted "
            "from the GCS (RAY_task_events_max_num_task_in_gcs), dropped by a worker's task event buffer, or cut by "
            "the per-query limit RAY_MAX_LIMIT_FROM_DATA_SOURCE (10,000 by default); the count can include the "
            "job's driver task"
        )
    if matched > counted:
        problems.append(
            f"the summary counts {counted} of the {matched} task attempts that matched (cut at "
            "RAY_MAX_LIMIT_FROM_API_SERVER)"
        )
    problems += [w for w in ray_warnings if w not in problems]
    counts.sort(key=lambda c: (c.task_name, c.state))
    return TaskSummary(job_id, tuple(counts), not problems, "; ".join(problems), total, kept)
