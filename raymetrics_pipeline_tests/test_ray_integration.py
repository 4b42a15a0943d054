"""End to end on a real Ray head: discovery by file and by dashboard, a full scrape shipped to the
double or written to the local store.

Ray writes the machine's interface address into its discovery even when started with
``--node-ip-address=127.0.0.1``; ``RAY_METRICS_HOST`` (``host_override``) keeps every
request on loopback.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from raymetrics_pipeline.ingest.targets import TargetSettings, discover
from raymetrics_pipeline.jobs import scrape_and_ship
from raymetrics_pipeline.resources import ParseableResource, RayMetricsSource
from raymetrics_pipeline.sensors import ray_metrics_sensor
from raymetrics_pipeline_tests.backends import local_backend, parseable_backend

pytestmark = pytest.mark.ray


@pytest.fixture
def head(ray_head):
    return ray_head


def source_for(head, how: str) -> RayMetricsSource:
    if how == "dashboard":
        return RayMetricsSource(dashboard_url=head.dashboard_url, host_override="127.0.0.1", discovery_file="/absent")
    return RayMetricsSource(discovery_file=str(head.discovery_file), host_override="127.0.0.1")


def test_file_and_dashboard_discovery_agree(head):
    by_file = discover(TargetSettings(discovery_file=str(head.discovery_file), host_override="127.0.0.1"))
    by_dashboard = discover(TargetSettings(dashboard_url=head.dashboard_url, host_override="127.0.0.1"))
    assert by_file.source == "RAY_PROM_DISCOVERY_FILE" and by_dashboard.source == "RAY_DASHBOARD_URL"
    assert sorted(by_file.targets) == sorted(by_dashboard.targets) == sorted(head.metrics_targets())
    assert len(by_file.targets) == 3


@pytest.mark.parametrize("how", ["file", "dashboard"])
def test_a_full_scrape_of_a_real_head_is_shipped(head, how, tmp_path, instance, parseable):
    result = scrape_and_ship.execute_in_process(
        resources={"ray_metrics": source_for(head, how), "backend": parseable_backend(parseable, tmp_path)},
        instance=instance,
    )
    rows = parseable.rows("raymetrics")
    assert result.success
    (materialization,) = result.asset_materializations_for_node("scrape_and_ship_metrics")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    print(
        f"\n{how}: {metadata['data_points']} data points from {metadata['samples']} samples, {metadata['bytes_raw']} B"
    )
    assert metadata["targets"] == metadata["targets_up"] == 3, metadata
    assert metadata["parse_errors"] == 0 and metadata["bodies_spooled"] == 0, metadata
    ray_rows = [r for r in rows if not r["metric_name"].startswith("raymetrics_pipeline_")]
    assert metadata["data_points"] == len(ray_rows) > 300, metadata
    up = {r["service.instance.id"]: r["data_point_value"] for r in rows if r["metric_name"] == "raymetrics_pipeline_up"}
    assert up == dict.fromkeys(head.metrics_targets(), 1.0)
    cpu = [r for r in rows if r["metric_name"] == "ray_node_cpu_utilization"]
    assert cpu and cpu[0]["SessionName"] == head.session_name and "ip" in cpu[0]
    assert {r["metric_type"] for r in rows} >= {"gauge", "sum"}


def test_the_sensor_finds_the_real_head(head, instance):
    backend = ParseableResource(url="http://127.0.0.1:1", username="u", password="p", data_dir="/unused")
    context = dg.build_sensor_context(
        instance=instance, resources={"ray_metrics": source_for(head, "file"), "backend": backend}
    )
    (request,) = ray_metrics_sensor.evaluate_tick(context).run_requests
    assert request.tags["raymetrics/targets"] == "3"
    assert request.tags["raymetrics/discovered_from"] == "RAY_PROM_DISCOVERY_FILE"


def test_without_parseable_a_real_head_lands_in_the_local_store_and_answers_by_node(head, tmp_path, instance):
    result = scrape_and_ship.execute_in_process(
        resources={"ray_metrics": source_for(head, "file"), "backend": local_backend(tmp_path)}, instance=instance
    )
    assert result.success
    with local_backend(tmp_path).query() as query:
        rows = query.query(
            """SELECT ray_node, ray_session, COUNT(DISTINCT metric_name) AS metrics FROM ray_points
               WHERE metric_name IN ('ray_node_cpu_utilization', 'ray_tasks', 'ray_object_store_memory')
                  OR metric_name LIKE 'ray_node_mem%'
               GROUP BY ray_node, ray_session""",
            datetime.now(UTC) - timedelta(minutes=5),
        )
    (node,) = rows  # one node, whether the metric says `ip` or `NodeAddress`
    assert node["ray_session"] == head.session_name and node["ray_node"] and node["metrics"] >= 3
