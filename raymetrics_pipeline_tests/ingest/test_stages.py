"""A cycle's stage timings: each second counted once, in the innermost stage, and reported per stage."""

import pytest

from raymetrics_pipeline.ingest.cycle import CycleResult, Stopwatch, run_cycle, stage, stopwatch_running, timed
from raymetrics_pipeline.jobs import cycle_metadata
from raymetrics_pipeline.localstore.backend import LocalStoreBackend
from raymetrics_pipeline.parseable.backend import ParseableBackend
from raymetrics_pipeline.parseable.sink import ParseableDelivery
from raymetrics_pipeline_tests.exporters import Exporter
from raymetrics_pipeline_tests.scrape_fixtures import scrape_fixtures

TEXT = max(scrape_fixtures(include_shared=False), key=lambda f: f.path.stat().st_size).text()


class FakeClock:
    """Time that moves only when the test says."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_a_stage_inside_another_pauses_it():
    clock = FakeClock()
    stopwatch = Stopwatch(clock)
    with stopwatch.stage("send"):
        clock.advance(1)
        with stopwatch.stage("compress"):
            clock.advance(2)
        clock.advance(3)
    clock.advance(100)  # outside every stage: nobody's
    assert stopwatch.seconds == {"send": 4, "compress": 2}


def test_timed_counts_producing_each_item_not_the_work_between_and_returns_what_the_generator_returns():
    clock = FakeClock()

    def conversions():
        for item in ("a", "b"):
            clock.advance(1)
            yield item
        clock.advance(1)
        return "outcome"

    def encoded():
        returned = yield from timed(conversions(), "parse")
        clock.advance(5)
        yield returned

    with stopwatch_running(clock) as stopwatch:
        items = []
        for item in timed(encoded(), "encode"):
            with stage("send"):
                clock.advance(10)
            items.append(item)
    assert items == ["a", "b", "outcome"]
    assert stopwatch.seconds == {"parse": 3, "encode": 5, "send": 30}


def test_outside_a_cycle_stages_time_nothing_and_cost_nothing():
    with stage("send"):
        pass
    assert list(timed(iter([1, 2]), "parse")) == [1, 2]
    with stopwatch_running() as stopwatch:
        pass
    with stage("send"):
        pass
    assert stopwatch.seconds == {}


@pytest.mark.parametrize(
    ("kind", "stages"),
    [
        ("parseable", {"scrape", "parse", "encode", "compress", "send"}),
        ("local", {"scrape", "parse", "encode", "write"}),
    ],
)
def test_a_cycle_reports_the_seconds_of_each_stage_and_they_fit_in_its_duration(kind, stages, tmp_path, parseable):
    backend = (
        ParseableBackend(parseable.url, "admin", "admin", "raymetrics", tmp_path / "spool")
        if kind == "parseable"
        else LocalStoreBackend(tmp_path / "store", "raymetrics", 7)
    )
    with Exporter(TEXT) as ray, backend.sink() as sink:
        cycle = run_cycle([ray.target], sink)
    assert set(cycle.stage_seconds) == stages
    assert all(seconds > 0 for seconds in cycle.stage_seconds.values())
    assert sum(cycle.stage_seconds.values()) <= cycle.seconds


def test_the_materialization_metadata_carries_each_stage_s_seconds():
    stage_seconds = {"scrape": 1.23449, "parse": 4.5, "encode": 0.5, "compress": 0.0625, "send": 0.25}
    metadata = cycle_metadata(CycleResult([], ParseableDelivery(), 7.0, stage_seconds), "RAY_METRICS_TARGETS", "x")
    assert [metadata[f"{name}_seconds"] for name in stage_seconds] == [1.234, 4.5, 0.5, 0.062, 0.25]
