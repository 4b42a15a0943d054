"""What tools/deploy/ installs (docs/deploy.md): the production instance on a real PostgreSQL, loaded as the
services load it, with the same limits as the development instance, the scrape, rollup and pruning runs made on it
by the `dagster` CLI; and the environment file, which lists every setting."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import psycopg2
import pytest
import yaml
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.scheduler.instigation import TickStatus
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from raymetrics_pipeline.assets import DUCKDB_POOL, HOURLY
from raymetrics_pipeline.resources import resources_from_env
from raymetrics_pipeline_tests.exporters import Exporter
from raymetrics_pipeline_tests.postgres_server import PostgresServer
from raymetrics_pipeline_tests.scrape_fixtures import scrape_fixtures

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION_YAML = ROOT / "tools" / "deploy" / "dagster.yaml"
ENV_EXAMPLE = ROOT / "tools" / "deploy" / "raymetrics.env.example"
DEVELOPMENT_YAML = ROOT / ".dagster_home" / "dagster.yaml"
DAGSTER = str(Path(sys.executable).with_name("dagster"))
# A real Ray head's scrape, so the rollups have nodes and sessions to roll up.
RAY_TEXT = max(scrape_fixtures(include_shared=False), key=lambda f: f.path.stat().st_size).text()


@pytest.fixture
def production_home(postgres: PostgresServer, tmp_path, monkeypatch) -> Path:
    """A Dagster home holding only the production dagster.yaml, its settings in the environment as the units
    give them."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PRODUCTION_YAML, home / "dagster.yaml")
    for name, value in postgres.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def dagster_cli(arguments: list[str], env: dict[str, str]) -> str:
    """Run the `dagster` CLI in this environment (without the project's own settings) plus ``env``."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("PARSEABLE_", "RAY_", "RAYMETRICS_"))}
    done = subprocess.run(
        [DAGSTER, *arguments], cwd=ROOT, env={**kept, **env}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def execute(job: str, env: dict[str, str], *options: str) -> str:
    return dagster_cli(["job", "execute", "-m", "raymetrics_pipeline.definitions", "-j", job, *options], env)


def rows_of_run(postgres: PostgresServer, run_id: str) -> dict[str, int]:
    """What PostgreSQL itself holds of a run, read without Dagster."""
    connection = psycopg2.connect(
        host=postgres.host, port=postgres.port, user=postgres.user, password=postgres.password, dbname=postgres.database
    )
    try:
        with connection.cursor() as cursor:
            counts = {}
            for table in ("runs", "run_tags", "event_logs"):
                cursor.execute(f"SELECT count(*) FROM {table} WHERE run_id = %s", (run_id,))
                counts[table] = cursor.fetchone()[0]
            return counts
    finally:
        connection.close()


def test_the_production_instance_keeps_everything_in_postgres_under_the_development_limits(production_home):
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        run_queue = instance.get_concurrency_config().run_queue_config
        assert {"key": "raymetrics/lane", "value": "scrape", "limit": 1} in run_queue.tag_concurrency_limits
        assert instance.event_log_storage.get_concurrency_info(DUCKDB_POOL).limit == 1
        assert instance.run_monitoring_enabled and not instance.telemetry_enabled
        assert instance.get_tick_retention_settings(InstigatorType.SENSOR)[TickStatus.SKIPPED] == 1
    production, development = (yaml.safe_load(path.read_text()) for path in (PRODUCTION_YAML, DEVELOPMENT_YAML))
    for section in ("concurrency", "run_monitoring", "retention", "telemetry"):
        assert production[section] == development[section], f"{section} differs from .dagster_home/dagster.yaml"
    # What docs/deploy.md has an upgrade and a check run.
    assert "Storage schema state after migration" in dagster_cli(["instance", "migrate"], {})
    assert "PostgresRunStorage" in dagster_cli(["instance", "info"], {})


def test_scrape_rollups_and_pruning_run_on_postgres(production_home, postgres, tmp_path):
    data_dir = tmp_path / "raymetrics"
    env = {"RAYMETRICS_DATA_DIR": str(data_dir)}
    started = time.time()
    with Exporter(RAY_TEXT) as ray:
        execute("scrape_and_ship", {**env, "RAY_METRICS_TARGETS": ray.target})
    # The hours the scrape's samples fall in, rolled up in one run as the 5-minute schedule asks for them.
    first, last = (HOURLY.get_partition_key_for_timestamp(moment) for moment in (started, time.time()))
    hours = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    execute("refresh_rollups", env, "--tags", json.dumps(hours))

    with dg.DagsterInstance.get() as instance:
        (scrape,) = instance.get_run_records(dg.RunsFilter(job_name="scrape_and_ship"))
        (rollups,) = instance.get_run_records(dg.RunsFilter(job_name="refresh_rollups"))
        assert scrape.dagster_run.status == rollups.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        assert abs(scrape.create_timestamp.timestamp() - started) < 60, "run times are UTC on a server that is not"
        assert instance.get_latest_materialization_event(dg.AssetKey("raymetrics")).run_id == scrape.dagster_run.run_id
        duckdb_pool = instance.event_log_storage.get_concurrency_info(DUCKDB_POOL)
        assert duckdb_pool.claimed_slots == [] and duckdb_pool.pending_steps == [], "the rollups gave the slot back"
    with duckdb.connect(str(data_dir / "rollups.duckdb"), read_only=True) as rolled_up:
        assert rolled_up.execute("SELECT count(*) FROM node_minute").fetchone()[0] > 0
    scrape_run_id = scrape.dagster_run.run_id
    assert min(rows_of_run(postgres, scrape_run_id).values()) > 0

    prune_config = tmp_path / "prune.yaml"
    prune_config.write_text(yaml.safe_dump({"ops": {"delete_old_runs": {"config": {"older_than_days": 1e-6}}}}))
    execute("prune_old_runs", env, "-c", str(prune_config))

    assert rows_of_run(postgres, scrape_run_id) == {"runs": 0, "run_tags": 0, "event_logs": 0}
    with dg.DagsterInstance.get() as instance:
        assert not instance.has_run(scrape_run_id)
        assert instance.has_run(rollups.dagster_run.run_id), "only scrape runs are pruned"
        (prune,) = instance.get_run_records(dg.RunsFilter(job_name="prune_old_runs"))
        assert prune.dagster_run.status == dg.DagsterRunStatus.SUCCESS


def test_the_environment_file_lists_every_setting_with_its_default():
    """The services see only what the file sets: every variable the code or dagster.yaml reads is in it, and its
    values, as given, change nothing from the defaults but the data folder."""
    settings = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")
    )
    code = "\n".join(path.read_text() for path in (ROOT / "raymetrics_pipeline").rglob("*.py"))
    read_by_code = set(re.findall(r'"((?:RAY|RAYMETRICS|PARSEABLE|CELERY)_[A-Z0-9_]+)"', code))
    read_by_instance = set(re.findall(r"env: (\w+)", PRODUCTION_YAML.read_text()))
    assert read_by_code | read_by_instance <= set(settings)
    assert all(not settings[name] for name in ("DAGSTER_PG_PASSWORD", "PARSEABLE_PASSWORD")), "no secret in the repo"
    data_dir = {"RAYMETRICS_DATA_DIR": settings["RAYMETRICS_DATA_DIR"]}
    assert resources_from_env(settings) == resources_from_env(data_dir)
