"""Scale-out: the scrape job's targets sharded over ops that run apart, on Dagster's multiprocess executor and on
dagster-celery workers with a real Redis broker. Shards are stable, and a shard that fails stops no other."""

import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from raymetrics_pipeline import jobs
from raymetrics_pipeline.ingest.targets import in_shard, shard_of
from raymetrics_pipeline.jobs import scrape_and_ship, scrape_job, sharded_scrape_job
from raymetrics_pipeline.resources import RayMetricsSource, ScaleOut, scale_out_from_env
from raymetrics_pipeline_tests.backends import local_backend
from raymetrics_pipeline_tests.celery_cluster import INSTALL_ADVICE, CeleryWorker, RedisServer
from raymetrics_pipeline_tests.exporters import Exporter
from raymetrics_pipeline_tests.test_definitions import ROOT, environment, run

LOOPBACK = [f"127.0.0.1:{port}" for port in range(20_000, 21_000)]
SCRAPE = ["job", "execute", "-m", "raymetrics_pipeline.definitions", "-j", "scrape_and_ship"]
SERIES = 5  # each exporter serves this many series of its own


class Node(Exporter):
    """A Ray node's endpoint serving ``SERIES`` series; with ``fails_first``, its first scrape gets HTTP 500 (a
    node that was restarting)."""

    fails_first = False

    def __init__(self) -> None:
        super().__init__("".join(f'ray_shard_test{{series="{series}"}} 1\n' for series in range(SERIES)))

    @property
    def status(self) -> int:
        return 500 if self.fails_first and self.hits <= 1 else self._status

    @status.setter
    def status(self, value: int) -> None:
        self._status = value


def nodes_by_shard(count: int, shards: int) -> dict[int, list[Node]]:
    """``count`` started nodes, by the shard their target falls in."""
    by_shard = defaultdict(list)
    for _ in range(count):
        node = Node().__enter__()
        by_shard[shard_of(node.target, shards)].append(node)
    return by_shard


def one_node_per_shard(shards: int) -> tuple[list[Node], list[Node]]:
    """A started node for each shard, in shard order, and the others started while looking for them."""
    by_shard = defaultdict(list)
    while len(by_shard) < shards:
        node = Node().__enter__()
        by_shard[shard_of(node.target, shards)].append(node)
    chosen = [by_shard[shard].pop(0) for shard in range(shards)]
    return chosen, [node for nodes in by_shard.values() for node in nodes]


def stop(nodes) -> None:
    for node in nodes:
        node.__exit__()


def keep_scraping(seconds: float) -> dict:
    return {"ops": {"scrape_and_ship_metrics": {"config": {"cycles": 0, "run_minutes": seconds / 60}}}}


def shard_step(shard: int) -> str:
    return f"scrape_and_ship_metrics.scrape_shard_{shard}"


def dagster_events(records) -> list[dg.DagsterEvent]:
    """The events of a run's log records (the others are the ops' log messages)."""
    return [record.dagster_event for record in records if record.dagster_event]


def stored_points(data_dir) -> Counter:
    """Ray points in the local store under ``data_dir``, per (target, series, time): each must be there once."""
    with local_backend(data_dir).query() as query:
        rows = query.query(
            'SELECT "service.instance.id" AS target, series, time_unix_nano FROM raymetrics '
            "WHERE metric_name = 'ray_shard_test'",
            datetime.now(UTC) - timedelta(hours=1),
        )
    return Counter((row["target"], row["series"], str(row["time_unix_nano"])) for row in rows)


def test_a_target_stays_in_its_shard_in_every_process_and_release():
    code = "import json, sys\nfrom raymetrics_pipeline.ingest.targets import shard_of\n"
    code += "print(json.dumps([shard_of(target, 7) for target in json.load(sys.stdin)]))"
    here = [shard_of(target, 7) for target in LOOPBACK]
    for seed in ("1", "2"):  # Python's own string hash differs with the seed
        other = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(LOOPBACK),
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(other.stdout) == here
    assert (shard_of("10.0.0.5:8080", 4), shard_of("[fd00::1]:8080", 4)) == (0, 3), "CRC-32, as released"


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 8, 16])
def test_every_target_is_in_exactly_one_shard_and_the_shards_are_even(shards):
    parts = [in_shard(LOOPBACK, shard, shards) for shard in range(shards)]
    assert sorted(target for part in parts for target in part) == sorted(LOOPBACK)
    mean = len(LOOPBACK) / shards
    assert all(abs(len(part) - mean) <= 0.1 * mean for part in parts), [len(part) for part in parts]


def test_the_scale_out_settings_say_which_variable_to_fix():
    assert scale_out_from_env({}) == ScaleOut(1, "multiprocess")
    celery = {"RAYMETRICS_SCRAPE_EXECUTOR": "Celery", "CELERY_BROKER_URL": "redis://:pw@broker:6379/0"}
    assert scale_out_from_env({"RAYMETRICS_SCRAPE_SHARDS": "4", **celery}) == ScaleOut(4, "celery")
    for shards in ("0", "2.5", "65", "many"):
        with pytest.raises(ValueError, match=f"RAYMETRICS_SCRAPE_SHARDS='{shards}': give a whole number"):
            scale_out_from_env({"RAYMETRICS_SCRAPE_SHARDS": shards})
    with pytest.raises(ValueError, match="RAYMETRICS_SCRAPE_EXECUTOR='k8s': give multiprocess"):
        scale_out_from_env({"RAYMETRICS_SCRAPE_EXECUTOR": "k8s"})
    with pytest.raises(ValueError, match="RAYMETRICS_SCRAPE_EXECUTOR=celery needs CELERY_BROKER_URL"):
        scale_out_from_env({"RAYMETRICS_SCRAPE_EXECUTOR": "celery"})


def test_one_shard_is_the_single_op_job_and_more_are_ops_of_the_same_job_on_a_distributed_executor():
    assert scrape_job(ScaleOut()) is scrape_and_ship
    sharded = scrape_job(ScaleOut(3))
    assert (sharded.name, sharded.executor_def.name) == ("scrape_and_ship", "multiprocess")
    assert sharded.tags == {"raymetrics/lane": "scrape", "raymetrics/shards": "3"}, "one scrape run at a time"
    steps = sorted(node.name for node in sharded.graph.node_named("scrape_and_ship_metrics").definition.nodes)
    assert steps == ["scrape_shard_0", "scrape_shard_1", "scrape_shard_2"]
    assert scrape_job(ScaleOut(2, "celery")).executor_def.name == "celery"


def test_the_code_location_imports_celery_only_when_it_is_the_executor(tmp_path):
    code = "import sys, raymetrics_pipeline.definitions\nprint('dagster_celery' in sys.modules)"
    celery = {"RAYMETRICS_SCRAPE_SHARDS": "2", "RAYMETRICS_SCRAPE_EXECUTOR": "celery", "CELERY_BROKER_URL": "redis://h"}
    for settings, imported in (({"RAYMETRICS_SCRAPE_SHARDS": "2"}, "False"), (celery, "True")):
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=environment(settings, tmp_path), capture_output=True, text=True
        )
        assert done.stdout.strip() == imported, done.stderr


def test_empty_shards_record_nothing_and_the_others_record_their_shard(instance, tmp_path):
    """Fewer targets than shards: a shard without targets has no cycle to record (no false freshness verdict)."""
    with Node() as node:
        result = sharded_scrape_job(4, dg.in_process_executor).execute_in_process(
            resources={"ray_metrics": RayMetricsSource(targets=node.target), "backend": local_backend(tmp_path)},
            instance=instance,
        )
    assert result.success
    shard = shard_of(node.target, 4)
    materializations = [e for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]
    checks = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert [e.step_key for e in materializations] == [e.step_key for e in checks] == [shard_step(shard)]
    metadata = materializations[0].event_specific_data.materialization.metadata
    assert metadata["shard"].value == f"{shard} of 4" and metadata["targets"].value == 1


def test_in_a_run_that_keeps_scraping_a_failed_shard_is_retried_and_the_others_go_on(instance, tmp_path, monkeypatch):
    """Shard 0's node fails its first scrape and recovers, shard 1's stays down, shard 2's is well; run in one
    process here, so the scrape interval can be short."""
    monkeypatch.setattr(jobs, "SCRAPE_INTERVAL_SECONDS", 0.2)
    (restarting, down, well), others = one_node_per_shard(3)
    restarting.fails_first, down.status = True, 500
    try:
        result = sharded_scrape_job(3, dg.in_process_executor).execute_in_process(
            resources={
                "ray_metrics": RayMetricsSource(targets=",".join(node.target for node in (restarting, down, well))),
                "backend": local_backend(tmp_path),
            },
            instance=instance,
            run_config=keep_scraping(1.5),
            raise_on_error=False,
        )
        points = stored_points(tmp_path)
    finally:
        stop([restarting, down, well, *others])
    events = Counter((event.step_key, event.event_type_value) for event in result.all_events)
    assert not result.success
    assert events[shard_step(0), "STEP_UP_FOR_RETRY"] >= 1 and events[shard_step(0), "STEP_SUCCESS"] == 1
    assert events[shard_step(1), "STEP_UP_FOR_RETRY"] >= 1 and events[shard_step(1), "STEP_FAILURE"] == 1
    assert events[shard_step(2), "STEP_SUCCESS"] == 1 and events[shard_step(2), "ASSET_MATERIALIZATION"] >= 2
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").event_specific_data.error
    assert f"1 target of shard 1 of 3 from RAY_METRICS_TARGETS: {down.target} HTTP 500" in failure.message
    assert {target for target, _, _ in points} == {restarting.target, well.target}
    assert set(points.values()) == {1}, "every point stored once"


def test_a_sharded_run_on_the_multiprocess_executor_delivers_every_shard_but_the_dead_one(tmp_path, monkeypatch):
    """By hand (one cycle), through the code location as RAYMETRICS_SCRAPE_SHARDS shapes it: each shard a process
    of its own; one shard's nodes are down, and only that shard fails."""
    by_shard = nodes_by_shard(6, 3)
    dead_shard = shard_of(next(iter(by_shard.values()))[0].target, 3)
    dead = by_shard.pop(dead_shard)
    live = [node for nodes in by_shard.values() for node in nodes]
    stop(dead)  # their ports now refuse connections
    assert live, "every node fell in one shard"
    targets = ",".join(node.target for node in [*dead, *live])
    try:
        result = run(SCRAPE, {"RAY_METRICS_TARGETS": targets, "RAYMETRICS_SCRAPE_SHARDS": "3"}, tmp_path)
    finally:
        stop(live)
    assert result.returncode != 0, "the run shows the failed shard"
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.get() as instance:
        (run_record,) = instance.get_run_records()
        events = dagster_events(instance.all_logs(run_record.dagster_run.run_id))
    outcomes = {
        e.step_key: e.event_type_value for e in events if e.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE")
    }
    assert outcomes == {
        shard_step(shard): "STEP_SUCCESS" if shard != dead_shard else "STEP_FAILURE" for shard in range(3)
    }
    assert not [e for e in events if e.event_type_value == "STEP_UP_FOR_RETRY"], "one cycle by hand: no retry"
    starts = {e.step_key for e in events if e.event_type_value == "STEP_WORKER_STARTED"}
    assert starts == {shard_step(shard) for shard in range(3)}, "each shard in a process of its own"
    failure = next(e for e in events if e.event_type_value == "STEP_FAILURE").event_specific_data.error
    assert f"Every Ray metrics endpoint failed ({len(dead)} target" in failure.message
    assert f"of shard {dead_shard} of 3" in failure.message
    recorded = {
        e.step_key: e.event_specific_data.materialization.metadata
        for e in events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    }
    for shard, nodes in by_shard.items():
        assert recorded[shard_step(shard)]["shard"].value == f"{shard} of 3"
        assert recorded[shard_step(shard)]["targets_up"].value == len(nodes)
    points = stored_points(tmp_path / "raymetrics")
    assert Counter(target for target, _, _ in points) == {node.target: SERIES for node in live}
    assert set(points.values()) == {1}, "every point stored once"


def test_a_sharded_run_on_celery_workers_runs_every_shard_on_a_worker(tmp_path, monkeypatch):
    """A real Redis broker (with a password) and two dagster-celery workers started here, sharing this test's
    Dagster home; the run's steps go to the workers as Celery tasks."""
    try:
        broker = RedisServer(tmp_path).__enter__()
    except FileNotFoundError:
        pytest.fail(INSTALL_ADVICE)
    by_shard = nodes_by_shard(6, 3)
    nodes = [node for shard_nodes in by_shard.values() for node in shard_nodes]
    settings = {
        "RAY_METRICS_TARGETS": ",".join(node.target for node in nodes),
        "RAYMETRICS_SCRAPE_SHARDS": "3",
        "RAYMETRICS_SCRAPE_EXECUTOR": "celery",
        "CELERY_BROKER_URL": broker.url,
    }
    home = tmp_path / "dagster_home"
    home.mkdir()
    workers = [CeleryWorker(name, environment(settings, home), ROOT, tmp_path) for name in ("alpha", "beta")]
    try:
        for worker in workers:
            worker.__enter__()
        result = run(SCRAPE, settings, home)
    finally:
        for worker in workers:
            worker.__exit__()
        stop(nodes)
        broker.__exit__()
    assert result.returncode == 0, result.stdout + result.stderr
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        (run_record,) = instance.get_run_records()
        records = instance.all_logs(run_record.dagster_run.run_id)
    events = dagster_events(records)
    ran_on = {
        e.step_key: e.event_specific_data.metadata["Celery worker"].value
        for e in events
        if e.event_type_value == "ENGINE_EVENT" and "Celery worker" in e.event_specific_data.metadata
    }
    assert set(ran_on) == {shard_step(shard) for shard in range(3)}, ran_on
    assert {worker.split("@")[0] for worker in ran_on.values()} <= {"alpha", "beta"}, ran_on
    successes = {e.step_key for e in events if e.event_type_value == "STEP_SUCCESS"}
    assert successes == set(ran_on)
    recorded = {e.step_key for e in events if e.event_type_value == "ASSET_MATERIALIZATION"}
    assert recorded == {shard_step(shard) for shard in by_shard}
    points = stored_points(home / "raymetrics")
    assert Counter(target for target, _, _ in points) == {node.target: SERIES for node in nodes}
    shown = [result.stdout, result.stderr, *(str(record) for record in records)]
    shown += [worker.log.read_text(errors="replace") for worker in workers]
    assert not [text for text in shown if RedisServer.password in text], "the broker's password was shown"
