"""The real-Ray harness itself: a head comes up, its discovery is right, it goes away.

Marked ``ray`` (slow: starts a real Ray 2.60 head on this machine, ~10 s to start).
Run only these with ``pytest -m ray``; skip them with ``-m "not ray"``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("ray")

from raymetrics_pipeline_tests.ray_cluster import RayHead  # noqa: E402

pytestmark = pytest.mark.ray

WORKLOAD = Path(__file__).resolve().parent / "ray_workload.py"


def _ports(targets: list[str]) -> set[int]:
    return {int(t.rsplit(":", 1)[1]) for t in targets}


@pytest.fixture
def head(ray_head):
    return ray_head


def test_discovery_targets_serve_metrics(head: RayHead):
    # The file Ray writes (inside the session dir) and its legacy symlink.
    assert head.discovery_file.name == "prom_metrics_service_discovery.json"
    assert head.discovery_file.parent == head.session_dir
    assert head.legacy_discovery_file.resolve() == head.discovery_file.resolve()
    groups = head.read_discovery()
    assert isinstance(groups, list) and groups and groups[0]["labels"] == {"job": "ray"}
    raw = head.discovered_targets()
    assert len(raw) >= 3, raw
    assert head.expected_ports <= _ports(raw)

    targets = head.metrics_targets()
    assert all(t.startswith("127.0.0.1:") for t in targets)
    assert _ports(targets) == _ports(raw)

    bodies = {}
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        for t in targets:
            r = client.get(f"http://{t}/metrics")
            assert r.status_code == 200, (t, r.status_code)
            assert r.headers["content-type"].startswith("text/plain")
            bodies[t] = r.text
    joined = "\n".join(bodies.values())
    assert "ray_node_cpu_utilization" in joined
    assert f'SessionName="{head.session_name}"' in joined
    assert "autoscaler_" in bodies[f"127.0.0.1:{head.autoscaler_metrics_port}"]
    assert "ray_dashboard_" in bodies[f"127.0.0.1:{head.dashboard_metrics_port}"]


def test_dashboard_sd_endpoint_matches_file(head: RayHead):
    r = httpx.get(f"{head.dashboard_url}/api/prometheus/sd", timeout=10.0, trust_env=False)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    sd = r.json()
    assert isinstance(sd, list) and sd[0]["labels"] == {"job": "ray"}
    sd_targets = [t for g in sd for t in g["targets"]]
    assert _ports(sd_targets) == _ports(head.discovered_targets())


def test_workload_job_reports_failed_tasks(head: RayHead, tmp_path: Path):
    wd = tmp_path / "workload"
    wd.mkdir()
    shutil.copy(WORKLOAD, wd)
    sid = head.submit_job(
        "python ray_workload.py --tasks 20 --failing 3 --actor-calls 5 --objects 2 --object-mb 2 --hold-seconds 0",
        working_dir=wd,
    )
    assert head.wait_job(sid, timeout=120) == "SUCCEEDED"
    assert '"tasks_failed": 3' in head.job_logs(sid)
    # The owner reports task states on the metrics agent a few seconds later.
    target = f"127.0.0.1:{head.metrics_export_port}"
    deadline = time.monotonic() + 30
    while True:
        body = head.scrape(target).text
        failed = [
            line
            for line in body.splitlines()
            if line.startswith("ray_tasks{") and 'State="FAILED"' in line and not line.endswith(" 0.0")
        ]
        if failed or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert failed, "no ray_tasks{State=FAILED} > 0 after the job"
