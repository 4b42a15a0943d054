"""The code location as a user meets it: `dagster definitions validate` and a run started by hand."""

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from raymetrics_pipeline.assets import raymetrics_in
from raymetrics_pipeline.dataset.query import QueryError
from raymetrics_pipeline.localstore.store import LocalStore
from raymetrics_pipeline.resources import (
    LocalStoreResource,
    ParseableResource,
    metrics_query_from_env,
    resources_from_env,
)
from raymetrics_pipeline.rollups.tables import NODE_MINUTE
from raymetrics_pipeline_tests.backends import local_backend
from raymetrics_pipeline_tests.exporters import Exporter
from raymetrics_pipeline_tests.parseable_double import ParseableDouble

ROOT = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).with_name("dagster"))


def environment(env: dict[str, str], tmp_path) -> dict[str, str]:
    """This process's environment without the project's settings, then ``env``, with a fresh Dagster home."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("PARSEABLE_", "RAY_", "RAYMETRICS_"))}
    return {**kept, **env, "DAGSTER_HOME": str(tmp_path)}


def run(arguments: list[str], env: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [DAGSTER, *arguments], cwd=ROOT, env=environment(env, tmp_path), capture_output=True, text=True, timeout=240
    )


def test_definitions_validate(tmp_path):
    for extra in ([], ["-w", "workspace.yaml"]):
        result = run(
            ["definitions", "validate", *extra],
            {"PARSEABLE_URL": "http://127.0.0.1:1", "PARSEABLE_PASSWORD": "x"},
            tmp_path,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "All code locations passed validation" in result.stdout + result.stderr


def test_scrape_and_ship_runs_by_hand_with_no_run_config(tmp_path):
    secret = "by-hand-secret-77"
    with (
        Exporter('ray_node_cpu_utilization{ip="127.0.0.1"} 12.5\n') as ray,
        ParseableDouble(username="u", password=secret) as parseable,
    ):
        env = {
            "RAY_METRICS_TARGETS": ray.target,
            "PARSEABLE_URL": parseable.url,
            "PARSEABLE_USERNAME": "u",
            "PARSEABLE_PASSWORD": secret,
        }
        result = run(
            ["job", "execute", "-m", "raymetrics_pipeline.definitions", "-j", "scrape_and_ship"], env, tmp_path
        )
        rows = parseable.rows("raymetrics")
    assert result.returncode == 0, result.stdout + result.stderr
    ray_rows = [(r["metric_name"], r["ip"], r["data_point_value"]) for r in rows if r["metric_name"].startswith("ray_")]
    assert ray_rows == [("ray_node_cpu_utilization", "127.0.0.1", 12.5)]
    assert {r["metric_name"] for r in rows if not r["metric_name"].startswith("ray_")} >= {"raymetrics_pipeline_up"}
    assert secret not in result.stdout + result.stderr


def test_settings_come_from_the_environment():
    resources = resources_from_env(
        {
            "RAY_METRICS_TARGETS": "h:1",
            "RAY_PROM_DISCOVERY_FILE": "/x.json",
            "RAYMETRICS_SCRAPE_TIMEOUT": "3",
            "PARSEABLE_URL": "http://p:8000",
            "PARSEABLE_STREAM": "rm",
            "PARSEABLE_OTLP_ENCODING": "PROTOBUF",
            "DAGSTER_HOME": "/dh",
        }
    )
    source, parseable = resources["ray_metrics"], resources["backend"]
    assert (source.targets, source.discovery_file, source.scrape_timeout_seconds) == ("h:1", "/x.json", 3.0)
    assert isinstance(parseable, ParseableResource)
    assert (parseable.url, parseable.stream, parseable.otlp_encoding) == ("http://p:8000", "rm", "protobuf")
    assert "PARSEABLE_PASSWORD" in parseable.problem()
    assert parseable.data_dir == "/dh/raymetrics"
    assert resources["rollups_db"].database == "/dh/raymetrics/rollups.duckdb"
    local = resources_from_env({"RAYMETRICS_DATA_DIR": "/d"})
    assert isinstance(local["backend"], LocalStoreResource) and local["backend"].data_dir == "/d"
    assert local["rollup_settings"].reports_dir == "/d/comparison"
    parseable_env = {"PARSEABLE_URL": "http://p:8000", "PARSEABLE_USERNAME": "u", "PARSEABLE_PASSWORD": "p"}
    bounded = resources_from_env({**parseable_env, "RAYMETRICS_SPOOL_MAX_BYTES": "104857600"})["backend"]
    assert bounded.backend().spool.max_bytes == 100 * 1024**2
    for size in ("1000", "lots"):
        with pytest.raises(ValueError, match="RAYMETRICS_SPOOL_MAX_BYTES"):
            resources_from_env({**parseable_env, "RAYMETRICS_SPOOL_MAX_BYTES": size})
    aged = resources_from_env({**parseable_env, "RAYMETRICS_SPOOL_MAX_AGE_HOURS": "24"})["backend"]
    assert aged.backend().spool.max_age_seconds == 86_400
    assert resources_from_env(parseable_env)["backend"].backend().spool.max_age_seconds == 7 * 86_400
    for age in ("0.5", "a week"):
        with pytest.raises(ValueError, match="RAYMETRICS_SPOOL_MAX_AGE_HOURS"):
            resources_from_env({**parseable_env, "RAYMETRICS_SPOOL_MAX_AGE_HOURS": age})
    for timeout in ("20", "1e-9", "soon"):
        with pytest.raises(ValueError, match="RAYMETRICS_SCRAPE_TIMEOUT"):
            resources_from_env({"RAYMETRICS_SCRAPE_TIMEOUT": timeout})


def test_with_no_parseable_a_run_by_hand_fills_the_local_store_and_the_asset_says_where(tmp_path):
    with Exporter('ray_node_cpu_utilization{ip="127.0.0.1"} 12.5\n') as ray:
        result = run(
            ["job", "execute", "-m", "raymetrics_pipeline.definitions", "-j", "scrape_and_ship"],
            {"RAY_METRICS_TARGETS": ray.target},
            tmp_path,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    store = LocalStore(tmp_path / "raymetrics" / "store")
    with local_backend(tmp_path / "raymetrics").query() as query:
        rows = query.query(
            "SELECT ray_node, data_point_value FROM ray_points WHERE metric_name = 'ray_node_cpu_utilization'",
            datetime.now(UTC) - timedelta(hours=1),
        )
    assert rows == [{"ray_node": "127.0.0.1", "data_point_value": 12.5}]
    shown = subprocess.run(
        [sys.executable, "-c", LOCATION_OF_RAYMETRICS],
        cwd=ROOT,
        env=environment({}, tmp_path),
        capture_output=True,
        text=True,
    )
    assert shown.stdout.strip() == store.location, shown.stderr


LOCATION_OF_RAYMETRICS = """
from raymetrics_pipeline.definitions import defs
spec = next(s for s in defs.resolve_all_asset_specs() if s.key.to_user_string() == "raymetrics")
print(spec.metadata["location"])
"""


def test_a_script_queries_parseable_with_the_real_credentials_from_the_environment(monkeypatch):
    with ParseableDouble(username="u", password="s3cret") as parseable:
        for name, value in {
            "PARSEABLE_URL": parseable.url,
            "PARSEABLE_USERNAME": "u",
            "PARSEABLE_PASSWORD": "s3cret",
        }.items():
            monkeypatch.setenv(name, value)
        with metrics_query_from_env() as query, pytest.raises(QueryError, match="table .* not found"):
            query.query("SELECT 1 FROM raymetrics", datetime.now(UTC))  # authenticated: it got as far as planning


def test_one_setting_chooses_the_backend_for_sink_query_and_location(tmp_path):
    local = resources_from_env({"RAYMETRICS_DATA_DIR": str(tmp_path), "RAYMETRICS_LOCAL_RETENTION_DAYS": "3"})
    backend = local["backend"]
    assert backend.retention_days == 3.0
    assert backend.location == backend.backend().location == f"local store {tmp_path}/store/raymetrics"
    remote = resources_from_env(
        {"PARSEABLE_URL": "http://p:8000/", "PARSEABLE_USERNAME": "u", "PARSEABLE_PASSWORD": "x"},
    )["backend"]
    assert remote.location == "http://p:8000 (dataset raymetrics)"
    assert resources_from_env({"PARSEABLE_URL": "p:8000"})["backend"].location.startswith("not usable until fixed")
    for bad in ("0", "a week"):
        with pytest.raises(ValueError, match="RAYMETRICS_LOCAL_RETENTION_DAYS"):
            resources_from_env({"RAYMETRICS_LOCAL_RETENTION_DAYS": bad})


def test_every_asset_says_what_it_is_who_owns_it_and_where_it_sits():
    from raymetrics_pipeline.definitions import defs

    specs = {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}
    assert {"raymetrics", "node_minute", "task_state_minute", "session_summary", "ray_run_comparison"} <= set(specs)
    for name, spec in specs.items():
        assert spec.description and spec.kinds and spec.owners, name
        assert spec.group_name in ("ingest", "rollups", "reports"), name
    assert specs["node_minute"].deps[0].asset_key.to_user_string() == "raymetrics", "lineage: raymetrics → rollups"
    columns = specs["node_minute"].metadata["dagster/column_schema"].columns
    assert [(c.name, c.type) for c in columns] == [(c.name, c.type) for c in NODE_MINUTE.columns]


def test_the_dataset_asset_says_which_backend_holds_it_and_where(tmp_path):
    local = raymetrics_in(LocalStoreResource(data_dir=str(tmp_path)))
    remote = raymetrics_in(ParseableResource(url="http://p:8000", username="u", password="x", data_dir=str(tmp_path)))
    assert "parquet" in local.kinds and "parseable" not in local.kinds
    assert "parseable" in remote.kinds and "parquet" not in remote.kinds
    assert local.metadata["location"] == f"local store {tmp_path}/store/raymetrics"
    assert remote.metadata["location"] == "http://p:8000 (dataset raymetrics)"


def test_the_rollup_runs_check_columns_only_and_the_report_runs_check_the_rest():
    from raymetrics_pipeline.definitions import defs

    def checks_of(job_name: str) -> set[str]:
        return {key.name for key in defs.resolve_job_def(job_name).asset_layer.asset_graph.asset_check_keys}

    assert checks_of("refresh_rollups") == {"rollup_columns_present"}
    assert checks_of("refresh_reports") == {
        "raymetrics_is_fresh",
        "node_minute_is_fresh_and_complete",
        "object_store_pressure",
        "node_memory_pressure",
    }


def test_the_first_reports_run_by_hand_on_a_fresh_dagster_home_succeeds(tmp_path):
    """A new installation: nothing scraped or rolled up yet, and `refresh_reports` still succeeds."""
    result = run(["job", "execute", "-m", "raymetrics_pipeline.definitions", "-j", "refresh_reports"], {}, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "RUN_SUCCESS" in output and "STEP_FAILURE" not in output
    assert "Nothing rolled up yet" in output, "the comparison says so (logged as a warning too)"
    # (The `dagster` CLI itself says it is superseded by `dg`; that is not about this code.)
    assert "BetaWarning" not in output and "PreviewWarning" not in output, "none when the definitions load"
