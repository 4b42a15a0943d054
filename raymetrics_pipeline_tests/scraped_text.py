"""The captured scrapes read with plain string handling, independent of the project's parser,
and served by real exporters to real ``scrape_and_ship`` runs that fill both backends."""

from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import dagster as dg

from raymetrics_pipeline.jobs import scrape_and_ship
from raymetrics_pipeline.resources import RayMetricsSource
from raymetrics_pipeline_tests.backends import local_backend, parseable_backend
from raymetrics_pipeline_tests.exporters import Exporter
from raymetrics_pipeline_tests.parseable_double import ParseableDouble
from raymetrics_pipeline_tests.scrape_fixtures import ScrapeFixture, rounds


def stamped(text: str, time_ms: int) -> str:
    """The exposition with every sample carrying ``time_ms`` as its timestamp, as Prometheus text allows."""
    return "\n".join(
        f"{line} {time_ms}" if line.strip() and not line.startswith("#") else line for line in text.split("\n")
    )


def labels_and_value(line: str) -> tuple[dict[str, str], float]:
    """Ray's lines carry no escapes or commas inside values, so a split is an independent reading."""
    inside = line[line.index("{") + 1 : line.rindex("}")]
    labels = dict(pair.split("=", 1) for pair in inside.split('",') if pair)
    return {k: v.strip('"') for k, v in labels.items()}, float(line.rsplit(" ", 1)[1])


def lines_of(fixtures: list[ScrapeFixture], *metrics: str):
    """``(fixture, metric, labels, value)`` for every sample of ``metrics``."""
    for fixture in fixtures:
        for line in fixture.text().splitlines():
            name = line.split("{", 1)[0]
            if name in metrics and "{" in line:
                yield fixture, name, *labels_and_value(line)


def minute_of(time_ns: int, shift: timedelta = timedelta(0)) -> str:
    moment = datetime.fromtimestamp(time_ns // 10**9, UTC) + shift
    return moment.strftime("%Y-%m-%dT%H:%M:00")


def load_by_scrape_runs(
    stack: ExitStack,
    fixtures: list[ScrapeFixture],
    parseable: ParseableDouble,
    data_dir,
    shift: timedelta = timedelta(0),
    parseable_lag: timedelta | None = None,
    stream: str = "raymetrics",
) -> None:
    """Every fixture round scraped by two real job runs, one into ``parseable``, one into the local store.

    Samples are stamped with their fixture time plus ``shift``; with ``parseable_lag`` the double's
    clock reads sample time plus that lag, as when points are replayed after an outage.
    """
    exporters = {port: stack.enter_context(Exporter()) for port in sorted({f.port for f in fixtures})}
    instance = stack.enter_context(dg.instance_for_test())
    backends = [parseable_backend(parseable, data_dir, stream), local_backend(data_dir, stream)]
    for scrape_round in rounds(fixtures):
        for fixture in scrape_round:
            sample_ms = fixture.scrape_time_unix_nano // 10**6 + int(shift.total_seconds() * 1000)
            exporters[fixture.port].body = stamped(fixture.text(), sample_ms)
        if parseable_lag is not None:
            sampled = datetime.fromtimestamp(scrape_round[0].scrape_time_unix_nano / 1e9, UTC) + shift
            parseable.set_now(sampled + parseable_lag)
        targets = ",".join(exporters[f.port].target for f in scrape_round)
        for backend in backends:
            resources = {"ray_metrics": RayMetricsSource(targets=targets), "backend": backend}
            assert scrape_and_ship.execute_in_process(resources=resources, instance=instance).success
