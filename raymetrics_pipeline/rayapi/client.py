"""Read Ray's exact job and task figures from the dashboard over HTTP (Ray 2.60), to check the metrics against.

Two APIs of the dashboard (default port 8265) are used, nothing else, so no ``ray`` import is needed:

* Jobs API, ``GET /api/jobs/`` (the trailing slash matters: ``/api/jobs`` is 404): every job, SUBMISSION and
  DRIVER alike.
* State API, ``GET /api/v0/tasks/summarize?filter_keys=job_id&filter_predicates=%3D&filter_values=<hex>``: task
  attempts of one job by name and state. The job filter is applied in the GCS. ``ray.util.state.summarize_tasks``
  cannot filter (its client sends only ``timeout``), hence this client.

What the figures mean (observed on a real 2.60 head): a retried task counts once per attempt; the job supervisor's
own tasks are absent (Ray creates that actor with ``enable_task_events=False``); a job's tasks stay after it ends
until the GCS evicts them (``RAY_task_events_max_num_task_in_gcs``, 100,000 attempts cluster-wide by default,
finished tasks first), which the summary reports as missing data (:attr:`TaskSummary.complete`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import httpx

from raymetrics_pipeline.common import USER_AGENT
from raymetrics_pipeline.common.urls import scrub, without_credentials
from raymetrics_pipeline.ingest.targets import session_folder
from raymetrics_pipeline.rayapi.models import RayApiFormatError, RayJob, TaskSummary, parse_jobs, parse_task_summary

DEFAULT_TIMEOUT_SECONDS = 5.0
DEFAULT_DISCOVERY_FILE = "/tmp/ray/prom_metrics_service_discovery.json"
JOBS_PATH = "/api/jobs/"
TASK_SUMMARY_PATH = "/api/v0/tasks/summarize"
VERSION_PATH = "/api/version"
_JOB_ID_RE = re.compile(r"[0-9a-fA-F]{8}")  # a Ray JobID is 4 bytes; anything else makes the dashboard answer 500
# Written by the dashboard when its HTTP server is up (ray/dashboard/http_server_head.py): the only file that names
# the dashboard's address. Ray's other record of it is the GCS internal KV, which needs a Ray client to read.
_DASHBOARD_LOG_RE = re.compile(r"Dashboard head http address: (\S+)")
_LOG_HEAD_BYTES = 1 << 20  # the line is among the dashboard's first; never read a whole (up to 512 MB) log


class RayApiError(RuntimeError):
    """The dashboard could not be asked, or did not answer as Ray does. The message names the URL (without
    credentials) and what to check."""

    def __init__(self, message: str, url: str = "", status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.url = url  # credentials masked
        self.status = status  # the HTTP status, when there was an answer
        self.reason = reason or message  # what happened, without the advice


class DashboardNotFound(RayApiError):
    """No running Ray dashboard could be found from the files Ray writes on this machine."""


def _normalize(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url:
        raise ValueError("the Ray dashboard URL is empty; set RAY_DASHBOARD_URL, e.g. http://127.0.0.1:8265")
    return url if "://" in url else f"http://{url}"


_REACH_HINT = (
    "Check RAY_DASHBOARD_URL (the dashboard's HTTP address, port 8265 unless `ray start --dashboard-port` says "
    "otherwise), that Ray is running with its dashboard (`ray start --head --include-dashboard=true`; the dashboard "
    "needs `pip install 'ray[default]'`), and, from another machine, that it listens beyond localhost "
    "(`--dashboard-host=0.0.0.0`)."
)


def _status_hint(status: int) -> str:
    if status == 404:
        return "Is this the Ray dashboard (Ray 2.x, port 8265 by default) and not another server? " + _REACH_HINT
    if status == 429:
        return (
            "The State API allows few concurrent requests (RAY_STATE_SERVER_MAX_HTTP_REQUEST on the head); "
            "try again shortly."
        )
    if status in (401, 403):
        return "The dashboard wants credentials: put them in RAY_DASHBOARD_URL as http://user:pass@host:8265."
    if status >= 500:
        return (
            "The dashboard failed on the request; the reason is in its logs on the head node, "
            "<temp_dir>/session_latest/logs/dashboard_StateHead.log (task summaries), dashboard_JobHead.log (jobs) "
            "or dashboard.log."
        )
    return _REACH_HINT


class RayDashboard:
    """A connection to one Ray dashboard. Short timeouts: these reads feed checks and must not hold a run up.

    ``with RayDashboard("http://127.0.0.1:8265") as ray: ray.jobs(); ray.task_summary("02000000")``
    """

    def __init__(
        self,
        url: str,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = _normalize(url)
        self.timeout_seconds = timeout_seconds
        # trust_env=False: the dashboard is usually on the head or loopback; a proxy from the environment would
        # only get in the way (the scrapes do the same). Credentials in the URL become basic auth (httpx).
        self._client = httpx.Client(
            base_url=self.url,
            timeout=timeout_seconds,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            trust_env=False,
            transport=transport,
        )

    def __enter__(self) -> RayDashboard:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        shown = without_credentials(self.url + path)
        try:
            response = self._client.get(path, params=params)
        except httpx.TimeoutException as error:
            reason = f"no answer within {self.timeout_seconds:g} s ({type(error).__name__})"
            raise RayApiError(
                f"The Ray dashboard at {shown} gave {reason}. {_REACH_HINT}", shown, reason=reason
            ) from None
        except httpx.HTTPError as error:
            reason = scrub(f"{type(error).__name__}: {error}", self.url)
            raise RayApiError(
                f"Cannot reach the Ray dashboard at {shown} ({reason}). {_REACH_HINT}", shown, reason=reason
            ) from None
        if response.status_code != 200:
            body = " ".join(response.text.split())[:200]
            reason = f"HTTP {response.status_code}{f' ({body})' if body else ''}"
            raise RayApiError(
                f"The Ray dashboard at {shown} answered {reason}. {_status_hint(response.status_code)}",
                shown,
                response.status_code,
                reason,
            )
        try:
            return response.json()
        except ValueError:
            raise RayApiError(
                f"{shown} answered 200 but not with JSON ({response.headers.get('content-type', 'no content type')}). "
                f"Is RAY_DASHBOARD_URL the Ray dashboard? {_REACH_HINT}",
                shown,
                200,
            ) from None

    def jobs(self) -> list[RayJob]:
        """Every job Ray knows of in this session, SUBMISSION and DRIVER alike (the dashboard's own job manager is
        hidden: it runs in Ray's ``_ray_internal_`` namespace)."""
        document = self._get_json(JOBS_PATH)
        try:
            return parse_jobs(document)
        except RayApiFormatError as error:
            shown = without_credentials(self.url + JOBS_PATH)
            raise RayApiError(f"{shown} is not Ray's Jobs API: {error}. {_REACH_HINT}", shown, 200) from None

    def task_summary(self, job_id: str) -> TaskSummary:
        """One job's task attempts by name and state, from Ray's State API, with whether Ray says they are whole."""
        if not isinstance(job_id, str) or not _JOB_ID_RE.fullmatch(job_id):
            raise ValueError(f"{job_id!r} is not a Ray job id (8 hex digits, e.g. '02000000')")
        params = {
            "filter_keys": "job_id",
            "filter_predicates": "=",
            "filter_values": job_id.lower(),
            "summary_by": "func_name",
            # Ray's own deadline for asking the GCS (it uses 80 % of it), so it answers before ours expires.
            "timeout": max(1, int(self.timeout_seconds)),
        }
        document = self._get_json(TASK_SUMMARY_PATH, params)
        try:
            return parse_task_summary(job_id.lower(), document)
        except RayApiFormatError as error:
            shown = without_credentials(self.url + TASK_SUMMARY_PATH)
            raise RayApiError(f"{shown}: {error}. {_REACH_HINT}", shown, 200) from None

    def version(self) -> dict[str, Any]:
        """``GET /api/version``: ``ray_version`` and ``session_name`` of the cluster this dashboard serves."""
        document = self._get_json(VERSION_PATH)
        if not isinstance(document, dict) or "session_name" not in document:
            shown = without_credentials(self.url + VERSION_PATH)
            raise RayApiError(f"{shown} is not the Ray dashboard's version endpoint. {_REACH_HINT}", shown, 200)
        return document


def fetch_jobs(url: str, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> list[RayJob]:
    """Every job of the cluster whose dashboard is at ``url``."""
    with RayDashboard(url, timeout_seconds) as dashboard:
        return dashboard.jobs()


def fetch_task_summary(url: str, job_id: str, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> TaskSummary:
    """One job's task attempts by name and state, from the dashboard at ``url``."""
    with RayDashboard(url, timeout_seconds) as dashboard:
        return dashboard.task_summary(job_id)


# --------------------------------------------------------------------------- finding the dashboard


def default_ray_temp_dir() -> Path:
    """Where ``ray start`` puts its files unless ``--temp-dir`` says otherwise: Ray 2.60 uses ``$RAY_TMPDIR/ray``,
    else ``$TMPDIR/ray`` on Linux, else ``/tmp/ray`` (``ray._common.utils.get_default_ray_temp_dir``)."""
    base = os.environ.get("RAY_TMPDIR") or (os.environ.get("TMPDIR") if os.name == "posix" else None) or "/tmp"
    return Path(base) / "ray"


def _session_dirs(discovery_file: str | os.PathLike | None, temp_dir: str | os.PathLike | None) -> list[Path]:
    """Session folders to look in: the one the discovery file belongs to, then ``<temp_dir>/session_latest``."""
    found = [session_folder(Path(discovery_file))] if discovery_file else []
    try:
        latest = (Path(temp_dir or default_ray_temp_dir()) / "session_latest").resolve(strict=True)
    except (OSError, RuntimeError):  # absent, or a symlink loop
        latest = None
    found.append(latest if latest and latest.name.startswith("session_") else None)
    return list(dict.fromkeys(folder for folder in found if folder))


def _address_in_log(session_dir: Path) -> str | None:
    try:
        with open(session_dir / "logs" / "dashboard.log", "rb") as log:
            head = log.read(_LOG_HEAD_BYTES).decode(errors="replace")
    except OSError:
        return None
    addresses = _DASHBOARD_LOG_RE.findall(head)
    return addresses[-1] if addresses else None


def dashboard_url_from(
    discovery_file: str | os.PathLike | None = DEFAULT_DISCOVERY_FILE,
    temp_dir: str | os.PathLike | None = None,
    *,
    verify: bool = True,
    timeout_seconds: float = 2.0,
) -> str:
    """The dashboard URL of the Ray session running on this machine, e.g. ``http://127.0.0.1:8265``.

    Ray 2.60 writes the dashboard's address to no file meant for reading: the only place on disk is the line
    ``Dashboard head http address: <host>:<port>`` in ``<session>/logs/dashboard.log`` (Ray's real record is the
    GCS internal KV, readable only through Ray). A log line is not an interface and a stopped session leaves its log
    behind, so with ``verify`` (the default) the address is only returned once the dashboard there answers
    ``/api/version`` with the same session name as the folder the log is in. Works on the head node only; from
    elsewhere set ``RAY_DASHBOARD_URL``. Raises :class:`DashboardNotFound` saying what was looked at.
    """
    tried: list[str] = []
    for session_dir in _session_dirs(discovery_file, temp_dir):
        address = _address_in_log(session_dir)
        if address is None:
            tried.append(f"{session_dir}/logs/dashboard.log names no dashboard address")
            continue
        url = f"http://{address}"
        if not verify:
            return url
        try:
            with RayDashboard(url, timeout_seconds) as dashboard:
                session = dashboard.version().get("session_name")
        except RayApiError as error:
            tried.append(f"{url} (named in {session_dir.name}'s dashboard.log) does not answer: {error.reason}")
            continue
        if session == session_dir.name:
            return url
        tried.append(f"{url} serves {session}, not {session_dir.name} (a stopped session's log?)")
    if not tried:
        where = [str(p) for p in (discovery_file, Path(temp_dir or default_ray_temp_dir()) / "session_latest") if p]
        tried.append(f"no Ray session folder found from {' or '.join(where)}")
    raise DashboardNotFound(
        "No running Ray dashboard found on this machine (" + "; ".join(tried) + "). Set RAY_DASHBOARD_URL to the "
        "dashboard's address, e.g. http://<head>:8265, or start Ray with its dashboard "
        "(`ray start --head --include-dashboard=true`)."
    )
