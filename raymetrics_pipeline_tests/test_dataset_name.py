"""Every asset and check with PARSEABLE_STREAM set to another name, on both backends.

Nothing may assume the dataset is called ``raymetrics``: one session of the captured scrapes is
shipped by real scrape runs into ``prod_metrics`` on the Parseable double and in the local store,
its samples moved so the newest is half a minute old; then every rollup, report and check runs.
"""

from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from raymetrics_pipeline.assets import HOURLY, minute_rollups, ray_jobs, ray_run_comparison, raymetrics_in, summaries
from raymetrics_pipeline.checks import (
    node_memory_pressure,
    node_minute_is_fresh_and_complete,
    object_store_pressure,
    raymetrics_is_fresh,
)
from raymetrics_pipeline.localstore.store import LocalStore
from raymetrics_pipeline.resources import RayMetricsSource
from raymetrics_pipeline.schedules import refresh_reports, refresh_rollups
from raymetrics_pipeline_tests.backends import BACKENDS, local_backend, parseable_backend, rollup_resources
from raymetrics_pipeline_tests.parseable_double import ParseableDouble
from raymetrics_pipeline_tests.scrape_fixtures import scrape_fixtures
from raymetrics_pipeline_tests.scraped_text import load_by_scrape_runs

STREAM = "prod_metrics"
FIXTURES = [f for f in scrape_fixtures(include_shared=False) if f.session == "session_a"]
CHECKS = [raymetrics_is_fresh, node_minute_is_fresh_and_complete, object_store_pressure, node_memory_pressure]


def sampled_at(time_ns: int, shift: timedelta) -> datetime:
    return datetime.fromtimestamp(time_ns / 1e9, UTC) + shift


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Per backend: the rows where they landed, and the result of materializing everything and running every check."""
    data_dir = tmp_path_factory.mktemp("data")
    newest = max(f.scrape_time_unix_nano for f in FIXTURES)
    shift = datetime.now(UTC) - timedelta(seconds=30) - sampled_at(newest, timedelta(0))
    hours = sorted(
        {
            HOURLY.get_partition_key_for_timestamp(sampled_at(f.scrape_time_unix_nano, shift).timestamp())
            for f in FIXTURES
        }
    )
    outcomes = {}
    with ExitStack() as stack:
        parseable = stack.enter_context(ParseableDouble())
        load_by_scrape_runs(stack, FIXTURES, parseable, data_dir, shift=shift, stream=STREAM)
        backends = {
            "parseable": parseable_backend(parseable, data_dir, STREAM),
            "local store": local_backend(data_dir, STREAM),
        }
        for name, backend in backends.items():
            defs = dg.Definitions(
                assets=[raymetrics_in(backend), minute_rollups, summaries, ray_jobs, ray_run_comparison],
                asset_checks=CHECKS,
                jobs=[refresh_rollups, refresh_reports],
                resources={
                    "backend": backend,
                    "ray_metrics": RayMetricsSource(discovery_file=str(data_dir / "no-ray")),
                    **rollup_resources(data_dir, f"{name.replace(' ', '_')}.duckdb"),
                },
            )
            hour_range = {
                "dagster/asset_partition_range_start": hours[0],
                "dagster/asset_partition_range_end": hours[-1],
            }
            with dg.instance_for_test() as instance:
                outcomes[name] = (
                    [
                        defs.resolve_job_def("refresh_rollups").execute_in_process(
                            instance=instance, tags=hour_range, raise_on_error=False
                        ),
                        defs.resolve_job_def("refresh_reports").execute_in_process(
                            instance=instance, raise_on_error=False
                        ),
                    ],
                    backend.location,
                )
        stored = {
            "parseable": parseable.rows(STREAM),
            "local store": LocalStore(data_dir / "store", STREAM).files(),
        }
        with pytest.raises(KeyError):  # nothing went to the default dataset
            parseable.rows("raymetrics")
    return outcomes, stored


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_asset_materializes_and_every_check_passes(runs, backend):
    outcomes, stored = runs
    results, location = outcomes[backend]
    assert stored[backend] and STREAM in location
    for result in results:
        assert result.success, [event.message for event in result.all_events if event.is_failure]
    events = [event for result in results for event in result.get_asset_materialization_events()]
    materialized = {event.asset_key.to_user_string() for event in events}
    assert materialized == {
        "node_minute", "task_state_minute", "object_store_minute", "job_minute",
        "session_summary", "job_summary", "ray_jobs", "ray_job_tasks", "ray_run_comparison",
    }  # fmt: skip
    evaluations = {e.check_name: e for result in results for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == {check.check_key.name for check in CHECKS} | {"rollup_columns_present"}
    fresh = evaluations["raymetrics_is_fresh"]
    assert fresh.passed and fresh.metadata["lag_seconds"].value < 60 and STREAM in fresh.metadata["dataset"].value
    assert evaluations["rollup_columns_present"].passed and evaluations["node_minute_is_fresh_and_complete"].passed
