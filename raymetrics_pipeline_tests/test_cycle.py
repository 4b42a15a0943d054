"""One scrape-and-ship cycle end to end: real exporters, real HTTP, the Parseable double, a real spool."""

import socket

from raymetrics_pipeline.cycle import ParseableSink, run_cycle
from raymetrics_pipeline.parseable import ParseableClient
from raymetrics_pipeline.prometheus import LabelSet, parse
from raymetrics_pipeline.spool import Spool
from raymetrics_pipeline_tests.exporters import Exporter
from raymetrics_pipeline_tests.parseable_double import ParseableDouble
from raymetrics_pipeline_tests.scrape_fixtures import scrape_fixtures

FIXTURES = scrape_fixtures(include_shared=False)
TEXT = max(FIXTURES, key=lambda f: f.path.stat().st_size).text()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_cycle_ships_every_target_and_reports_each(tmp_path):
    broken = "ok_metric 1\nbroken{ 2\n"
    with Exporter(TEXT) as ray, Exporter(broken) as odd, Exporter(status=503) as down, ParseableDouble() as parseable:
        with ParseableClient(parseable.url, "admin", "admin") as client:
            report = run_cycle(
                [ray.target, odd.target, down.target],
                ParseableSink(client, Spool(tmp_path)),
                resource_attributes=LabelSet(("cluster_id",), ("c1",)),
            )
        rows = parseable.rows("raymetrics")
    by_target = {t.target: t for t in report.targets}
    assert by_target[ray.target].samples == parse(TEXT).sample_count
    assert by_target[odd.target].parse_errors == 1 and "line 2" in by_target[odd.target].first_parse_errors[0]
    assert by_target[down.target].error == "HTTP 503"
    assert report.targets_up == 2
    assert len(rows) == report.data_points == by_target[ray.target].data_points + 1
    assert {row["cluster_id"] for row in rows} == {"c1"}
    assert report.bodies_sent == 1 and report.http_statuses == [200] and report.bodies_spooled == 0
    assert report.bytes_compressed < report.bytes_raw


def test_nothing_is_lost_while_parseable_is_down(tmp_path):
    port = free_port()
    spool = Spool(tmp_path / "spool")
    with Exporter(TEXT) as ray:
        with ParseableClient(f"http://127.0.0.1:{port}", "admin", "admin") as client:
            outage = [run_cycle([ray.target], ParseableSink(client, spool), budget_seconds=1.0) for _ in range(2)]
        assert [r.bodies_spooled for r in outage] == [1, 1] and outage[-1].spool_pending == 2
        assert all("cannot reach Parseable" in r.delivery_errors[0] for r in outage)

        with ParseableDouble(port=port) as parseable:
            with ParseableClient(parseable.url, "admin", "admin") as client:
                recovery = run_cycle([ray.target], ParseableSink(client, spool))
            rows = parseable.rows("raymetrics")
    assert recovery.bodies_sent == 1 and recovery.spooled_bodies_delivered == 2 and recovery.spool_pending == 0
    assert len(rows) == 3 * recovery.data_points
    assert len({row["time_unix_nano"] for row in rows}) == 3, "each scrape keeps its own sample time"


def test_a_body_parseable_can_never_take_is_set_aside(tmp_path):
    spool = Spool(tmp_path / "spool")
    with Exporter("m 1\n") as ray, ParseableDouble() as parseable:
        parseable.fail_next(400, body="Could not deserialize into JSON object")
        with ParseableClient(parseable.url, "admin", "admin") as client:
            report = run_cycle([ray.target], ParseableSink(client, spool))
    assert report.bodies_rejected == 1 and report.spool_pending == 0
    assert len(list((tmp_path / "spool" / "rejected").iterdir())) == 1
    assert "400" in report.delivery_errors[0]


def test_the_spool_is_bounded_oldest_first(tmp_path):
    spool = Spool(tmp_path, max_bytes=2_000)
    bodies = [bytes([i]) * 5_000 + str(i).encode() * 1000 for i in range(4)]
    dropped = [spool.put(body, "application/json") for body in bodies]
    remaining = spool.pending()
    assert sum(dropped) == len(bodies) - len(remaining) and remaining
    assert remaining[-1].read() == bodies[-1]
