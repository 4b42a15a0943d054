"""The Ray dashboard client: parsing of JSON captured from a real Ray 2.60 head, errors against real loopback
sockets, and, on a real head, the same figures as Ray's own Python State API and Jobs client."""

import copy
import json
import os
import shutil
import socket
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from raymetrics_pipeline.common.urls import without_credentials
from raymetrics_pipeline.rayapi.client import (
    DashboardNotFound,
    RayApiError,
    RayDashboard,
    dashboard_url_from,
    fetch_jobs,
    fetch_task_summary,
)
from raymetrics_pipeline.rayapi.models import RayApiFormatError, RayJob, parse_jobs, parse_task_summary
from raymetrics_pipeline_tests.exporters import Exporter

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rayapi"
WORKLOAD = Path(__file__).resolve().parents[1] / "ray_workload.py"


def fixture(name: str):
    return json.loads((FIXTURES / name).read_text())


def ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


# --------------------------------------------------------------------------- parsing, on captured JSON


def test_every_job_field_is_one_ray_writes():
    # Ray 2.60's JobDetails keys, as the real head wrote them; a renamed key would silently read as None.
    for entry in fixture("jobs.json"):
        assert {
            "type",
            "job_id",
            "submission_id",
            "entrypoint",
            "status",
            "start_time",
            "end_time",
            "driver_exit_code",
            "message",
            "error_type",
        } <= entry.keys()


def test_submission_driver_pending_and_failed_jobs_are_parsed():
    jobs = {job.submission_id or job.job_id: job for job in parse_jobs(fixture("jobs.json"))}
    assert jobs["raysubmit_3VJQ2fZp1pxeHWeY"] == RayJob(
        job_id="02000000",
        submission_id="raysubmit_3VJQ2fZp1pxeHWeY",
        job_type="SUBMISSION",
        entrypoint="python ray_workload.py --tasks 30 --failing 4 --actor-calls 5 --objects 1 --object-mb 1 "
        "--hold-seconds 0",
        status="SUCCEEDED",
        start_time=ms(1796023740991),
        end_time=ms(1796023749952),
        driver_exit_code=0,
        message="Job finished successfully.",
    )
    driver = jobs["03000000"]
    assert (driver.job_type, driver.submission_id, driver.status, driver.driver_exit_code) == (
        "DRIVER",
        None,
        "SUCCEEDED",
        None,
    )
    assert driver.start_time == ms(1796023766485) and driver.end_time == ms(1796023771024) and driver.is_terminal
    pending = jobs["rx_pending"]
    assert (pending.job_id, pending.status, pending.end_time, pending.is_terminal) == (None, "PENDING", None, False)
    assert pending.start_time == ms(1796023785926) and "waiting for resources" in pending.message
    failed = jobs["rx_fail"]  # exited before ray.init(): Ray never gave it a job id
    assert (failed.job_id, failed.status, failed.driver_exit_code, failed.error_type) == (
        None,
        "FAILED",
        3,
        "JOB_ENTRYPOINT_COMMAND_ERROR",
    )


def test_zero_and_missing_times_are_none():
    (job,) = parse_jobs([{"type": "DRIVER", "job_id": "04000000", "status": "RUNNING", "start_time": 5, "end_time": 0}])
    assert job.end_time is None and job.start_time == ms(5) and job.entrypoint == ""


@pytest.mark.parametrize(
    "document", [{"jobs": []}, [1, 2], [{"job_id": "01000000"}], [{"type": "DRIVER", "status": "X", "end_time": "x"}]]
)
def test_what_is_not_a_job_list_is_refused(document):
    with pytest.raises(RayApiFormatError):
        parse_jobs(document)


def test_a_workload_summary_counts_by_name_and_state():
    summary = parse_task_summary("02000000", fixture("summary_workload.json"))
    assert summary.by_name_and_state() == {
        ("Counter.__init__", "FINISHED"): 1,
        ("Counter.add", "FINISHED"): 5,
        ("fail", "FAILED"): 4,
        ("square", "FINISHED"): 30,
    }
    assert summary.complete and summary.warning == "" and summary.total == summary.kept == 40
    assert {c.job_id for c in summary.counts} == {"02000000"}
    assert summary.count("square", "FINISHED") == 30 and summary.count("square", "FAILED") == 0


def test_a_retried_task_counts_once_per_attempt():
    summary = parse_task_summary("03000000", fixture("summary_retries.json"))
    # 3 tasks with max_retries=2 that always raise: 9 failed attempts; one task that fails once then succeeds.
    assert summary.count("flaky", "FAILED") == 9
    assert (summary.count("once_flaky", "FAILED"), summary.count("once_flaky", "FINISHED")) == (1, 1)
    assert summary.complete


def test_tasks_evicted_from_the_gcs_make_the_summary_incomplete():
    summary = parse_task_summary("01000000", fixture("summary_evicted.json"))
    assert not summary.complete and (summary.total, summary.kept) == (19, 8)
    assert "returned 8 of the 19" in summary.warning and "RAY_task_events_max_num_task_in_gcs" in summary.warning
    assert summary.count("flaky", "FAILED") == 7  # what is left; the missing attempts are not guessed


def test_the_job_managers_job_has_no_tasks_in_the_state_api():
    summary = parse_task_summary("01000000", fixture("summary_job_manager.json"))
    assert summary.counts == () and summary.complete


def test_partial_failures_limits_and_rays_warnings_are_surfaced():
    partial = fixture("summary_workload.json")
    partial["data"]["result"]["partial_failure_warning"] = "GCS timed out"
    summary = parse_task_summary("02000000", partial)
    assert not summary.complete and "GCS timed out" in summary.warning

    cut = fixture("summary_workload.json")
    cut["data"]["result"]["num_filtered"] = 12000
    summary = parse_task_summary("02000000", cut)
    assert not summary.complete and "40 of the 12000" in summary.warning

    warned = copy.deepcopy(fixture("summary_workload.json"))
    warned["data"]["result"]["warnings"] = ["There is missing data in this aggregation."]
    summary = parse_task_summary("02000000", warned)
    assert not summary.complete and summary.warning == "There is missing data in this aggregation."


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"result": False, "msg": "Given limit 20000 exceeds the supported limit", "data": {}},
        {"result": True, "data": {"result": {"total": 1}}},
        {"result": True, "data": {"result": {"total": "x", "num_after_truncation": 1, "result": {}}}},
    ],
)
def test_what_is_not_a_task_summary_is_refused(document):
    with pytest.raises(RayApiFormatError) as caught:
        parse_task_summary("02000000", document)
    if isinstance(document, dict) and document.get("msg"):
        assert "exceeds the supported limit" in str(caught.value)


def test_credentials_are_masked():
    assert without_credentials("http://admin:s3cret@head:8265/api/jobs/") == "http://***@head:8265/api/jobs/"
    assert without_credentials("http://admin:s3/c@ret@head:8265") == "http://***@head:8265"
    assert without_credentials("http://head:8265") == "http://head:8265"


def test_a_bad_job_id_is_refused_before_asking():
    # The dashboard answers a job id that is not 8 hex digits with a bare 500.
    with RayDashboard("http://127.0.0.1:1") as dashboard, pytest.raises(ValueError, match="not a Ray job id"):
        dashboard.task_summary("raysubmit_abc")


# --------------------------------------------------------------------------- errors, on real loopback sockets


def test_nothing_listening_names_the_url_without_credentials_and_what_to_check():
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(RayApiError) as caught:
            fetch_jobs(f"http://ray:s3cret@127.0.0.1:{port}")
    message = str(caught.value)
    assert time.monotonic() - started < 5
    assert f"http://***@127.0.0.1:{port}/api/jobs/" in message and "s3cret" not in message
    assert "RAY_DASHBOARD_URL" in message and "--dashboard-host" in message
    assert caught.value.status is None and "ConnectError" in caught.value.reason


def test_a_dashboard_that_answers_500_is_reported_with_its_status_and_where_to_look():
    with Exporter("Server got itself in trouble", status=500) as server:
        with pytest.raises(RayApiError) as caught:
            fetch_task_summary(f"http://{server.target}", "02000000")
    message = str(caught.value)
    assert caught.value.status == 500 and f"http://{server.target}/api/v0/tasks/summarize" in message
    assert "HTTP 500 (Server got itself in trouble)" in message and "dashboard.log" in message


def test_another_server_on_the_port_is_told_apart():
    with Exporter("not json") as server, RayDashboard(server.target) as dashboard:
        with pytest.raises(RayApiError, match="not with JSON"):
            dashboard.jobs()
    with Exporter("Not Found", status=404) as server, pytest.raises(RayApiError, match="Is this the Ray dashboard"):
        fetch_jobs(f"http://{server.target}")
    with Exporter(json.dumps({"jobs": []})) as server, pytest.raises(RayApiError, match="not Ray's Jobs API"):
        fetch_jobs(f"http://{server.target}")


def test_a_dashboard_that_never_answers_times_out_quickly():
    with socket.socket() as silent:  # listening, never answering
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        started = time.monotonic()
        with pytest.raises(RayApiError, match="no answer within 0.3 s"):
            fetch_jobs(f"127.0.0.1:{silent.getsockname()[1]}", timeout_seconds=0.3)
        assert time.monotonic() - started < 3


# --------------------------------------------------------------------------- finding the dashboard


def fake_session(temp_dir: Path, name: str, address: str) -> Path:
    """``<temp_dir>/<name>/logs/dashboard.log`` naming ``address`` as Ray's dashboard does, with Ray's links."""
    session = temp_dir / name
    (session / "logs").mkdir(parents=True)
    (session / "logs" / "dashboard.log").write_text(
        "2026-11-30 07:28:08,300\tINFO head.py:300 -- Starting dashboard\n"
        f"2026-11-30 07:28:08,322\tINFO http_server_head.py:492 -- Dashboard head http address: {address}\n"
    )
    (session / "prom_metrics_service_discovery.json").write_text("[]")
    (temp_dir / "prom_metrics_service_discovery.json").symlink_to(session / "prom_metrics_service_discovery.json")
    (temp_dir / "session_latest").symlink_to(session)
    return session


def test_a_stopped_sessions_log_is_not_taken_for_a_running_dashboard(tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
        fake_session(tmp_path, "session_2026-11-30_07-28-05_1", address)
        with pytest.raises(DashboardNotFound) as caught:
            dashboard_url_from(tmp_path / "prom_metrics_service_discovery.json", tmp_path, timeout_seconds=0.5)
        assert f"http://{address}" in str(caught.value) and "RAY_DASHBOARD_URL" in str(caught.value)
        assert dashboard_url_from(tmp_path / "absent.json", tmp_path, verify=False) == f"http://{address}"


def test_the_dashboard_must_serve_the_session_whose_log_named_it(tmp_path):
    version = {"ray_version": "2.60.0", "session_name": "session_2026-11-30_07-28-05_1"}
    with Exporter(json.dumps(version)) as server:
        fake_session(tmp_path / "a", "session_2026-11-30_07-28-05_1", server.target)
        assert dashboard_url_from(None, tmp_path / "a") == f"http://{server.target}"
        fake_session(tmp_path / "b", "session_2026-12-01_00-00-00_2", server.target)
        with pytest.raises(DashboardNotFound, match="serves session_2026-11-30_07-28-05_1, not session_2026-12-01"):
            dashboard_url_from(tmp_path / "b" / "prom_metrics_service_discovery.json", tmp_path / "b")


def test_no_ray_files_at_all(tmp_path):
    with pytest.raises(DashboardNotFound, match="no Ray session folder found"):
        dashboard_url_from(tmp_path / "prom_metrics_service_discovery.json", tmp_path)


# --------------------------------------------------------------------------- a real Ray head: Ray is the truth


@pytest.mark.ray
def test_jobs_and_task_counts_are_rays_own(ray_head, tmp_path):
    from ray.job_submission import JobSubmissionClient
    from ray.util.state import list_tasks

    url = ray_head.dashboard_url
    workload = tmp_path / "workload"
    workload.mkdir()
    shutil.copy(WORKLOAD, workload)
    sid = ray_head.submit_job(
        "python ray_workload.py --tasks 25 --failing 3 --actor-calls 4 --objects 1 --object-mb 1 --hold-seconds 0",
        working_dir=workload,
    )
    assert ray_head.wait_job(sid, timeout=180) == "SUCCEEDED"

    with RayDashboard(url) as dashboard:
        ours = {job.submission_id or job.job_id: job for job in dashboard.jobs()}
        job = ours[sid]
        assert job.job_type == "SUBMISSION" and job.status == "SUCCEEDED" and job.driver_exit_code == 0
        assert job.job_id and job.start_time <= job.end_time <= datetime.now(UTC)
        # Workers report task events to the GCS about once a second: wait for the last to land.
        deadline = time.monotonic() + 30
        while True:
            summary = dashboard.task_summary(job.job_id)
            if summary.count("square", "FINISHED") == 25 or time.monotonic() > deadline:
                break
            time.sleep(1)

    truth = list_tasks(address=url, filters=[("job_id", "=", job.job_id)], limit=10_000, raise_on_missing_output=True)
    assert summary.by_name_and_state() == dict(Counter((task.name, task.state) for task in truth))
    assert summary.complete and summary.total == summary.kept == len(truth)
    assert summary.by_name_and_state() == {
        ("square", "FINISHED"): 25,
        ("fail", "FAILED"): 3,
        ("Counter.add", "FINISHED"): 4,
        ("Counter.__init__", "FINISHED"): 1,
    }  # no JobSupervisor tasks: Ray creates the supervisor with enable_task_events=False

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    rays = {details.submission_id or details.job_id: details for details in JobSubmissionClient(url).list_jobs()}
    assert rays.keys() == ours.keys()
    for key, details in rays.items():
        if not details.status.is_terminal():
            continue  # may have moved on between the two reads
        assert ours[key] == RayJob(
            job_id=details.job_id,
            submission_id=details.submission_id,
            job_type=details.type.value,
            entrypoint=details.entrypoint,
            status=details.status.value,
            start_time=ms(details.start_time) if details.start_time else None,
            end_time=ms(details.end_time) if details.end_time else None,
            driver_exit_code=details.driver_exit_code,
            message=details.message,
            error_type=details.error_type,
        ), key


@pytest.mark.ray
def test_the_dashboard_is_found_from_rays_own_files(ray_head):
    assert dashboard_url_from(ray_head.legacy_discovery_file) == ray_head.dashboard_url
    assert dashboard_url_from(None, ray_head.temp_dir) == ray_head.dashboard_url
    with RayDashboard(ray_head.dashboard_url) as dashboard:
        assert dashboard.version()["session_name"] == ray_head.session_name
