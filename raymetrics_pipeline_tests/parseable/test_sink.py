"""Scrape cycles into the Parseable sink end to end: real exporters, real HTTP, the double, a real spool."""

import os
import socket
from datetime import UTC, datetime
from pathlib import Path

from raymetrics_pipeline.dataset.names import SERIES_HASH
from raymetrics_pipeline.ingest import cycle as cycle_module
from raymetrics_pipeline.ingest import otlp
from raymetrics_pipeline.ingest.cycle import run_cycle
from raymetrics_pipeline.ingest.health import PREFIX, TARGET_ATTRIBUTE, UP
from raymetrics_pipeline.ingest.otlp import ResourceMetrics
from raymetrics_pipeline.ingest.prometheus import NO_LABELS, LabelSet, parse
from raymetrics_pipeline.localstore.backend import LocalStoreBackend
from raymetrics_pipeline.parseable import spool as spool_module
from raymetrics_pipeline.parseable.backend import ParseableBackend
from raymetrics_pipeline.parseable.encode import JSON, encode_protobuf
from raymetrics_pipeline.parseable.spool import Spool
from raymetrics_pipeline_tests.exporters import Exporter
from raymetrics_pipeline_tests.parseable_double import ParseableDouble
from raymetrics_pipeline_tests.scrape_fixtures import scrape_fixtures

FIXTURES = scrape_fixtures(include_shared=False)
TEXT = max(FIXTURES, key=lambda f: f.path.stat().st_size).text()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cycle(url: str, spool_dir: Path, targets: list[str], **options):
    backend = ParseableBackend(url, "admin", "admin", "raymetrics", spool_dir)
    with backend.sink() as sink:
        return run_cycle(targets, sink, **options)


def test_a_cycle_ships_every_target_and_reports_each(tmp_path, parseable):
    broken = "ok_metric 1\nbroken{ 2\n"
    with Exporter(TEXT) as ray, Exporter(broken) as odd, Exporter(status=503) as down:
        result = cycle(
            parseable.url,
            tmp_path,
            [ray.target, odd.target, down.target],
            resource_attributes=LabelSet(("cluster_id",), ("c1",)),
        )
    rows = parseable.rows("raymetrics")
    by_target = {t.target: t for t in result.targets}
    assert by_target[ray.target].samples == parse(TEXT).sample_count
    assert by_target[odd.target].parse_errors == 1 and "line 2" in by_target[odd.target].first_parse_errors[0]
    assert by_target[down.target].error == "HTTP 503"
    assert result.targets_up == 2
    ray_rows = [row for row in rows if not row["metric_name"].startswith(PREFIX)]
    assert len(ray_rows) == result.totals()["data_points"] == by_target[ray.target].data_points + 1
    assert {row["cluster_id"] for row in rows} == {"c1"}
    assert {row[TARGET_ATTRIBUTE] for row in ray_rows} == {ray.target, odd.target}

    # Each target's own figures, on its rows, at its scrape time; then the delivery's.
    up = {row[TARGET_ATTRIBUTE]: row for row in rows if row["metric_name"] == UP}
    assert {target: row["data_point_value"] for target, row in up.items()} == {
        ray.target: 1.0,
        odd.target: 1.0,
        down.target: 0.0,
    }
    ray_times = {row["time_unix_nano"] for row in ray_rows if row[TARGET_ATTRIBUTE] == ray.target}
    assert ray_times == {up[ray.target]["time_unix_nano"]}
    figures = {(row.get(TARGET_ATTRIBUTE), row["metric_name"]): row.get("data_point_value") for row in rows}
    assert figures[(odd.target, PREFIX + "scrape_parse_errors")] == 1.0
    assert figures[(ray.target, PREFIX + "scrape_samples")] == parse(TEXT).sample_count
    assert figures[(ray.target, PREFIX + "scrape_bytes")] == len(TEXT.encode())
    assert figures[(None, PREFIX + "delivery_http_status")] == 200.0
    assert figures[(None, PREFIX + "spool_bodies")] == 0.0
    delivery = result.delivery
    assert delivery.bodies_sent == 2 and delivery.http_statuses == [200] and delivery.bodies_spooled == 0
    assert delivery.delivered and delivery.failure is None
    assert delivery.bytes_compressed < delivery.bytes_raw


def test_nothing_is_lost_while_parseable_is_down(tmp_path):
    port = free_port()
    with Exporter(TEXT) as ray:
        outage = [
            cycle(f"http://127.0.0.1:{port}", tmp_path, [ray.target], budget_seconds=1.0).delivery for _ in range(2)
        ]
        # Each cycle spools its scrape and its own delivery figures.
        assert [d.bodies_spooled for d in outage] == [2, 2] and outage[-1].spool_pending == 4
        assert outage[-1].last_http_status == 0 and outage[-1].spool_oldest_age_seconds > 0
        assert all("cannot reach Parseable" in d.errors[0] for d in outage)
        assert "kept in the spool" in outage[-1].failure and not outage[-1].delivered

        with ParseableDouble(port=port) as parseable:
            recovery = cycle(parseable.url, tmp_path, [ray.target])
            rows = parseable.rows("raymetrics")
    delivered = recovery.delivery
    assert delivered.bodies_sent == 2 and delivered.spooled_bodies_delivered == 4 and delivered.spool_pending == 0
    ray_rows = [row for row in rows if not row["metric_name"].startswith(PREFIX)]
    assert len(ray_rows) == 3 * recovery.totals()["data_points"]
    assert len({row["time_unix_nano"] for row in ray_rows}) == 3, "each scrape keeps its own sample time"
    spooled = [row["data_point_value"] for row in rows if row["metric_name"] == PREFIX + "spool_bodies"]
    assert sorted(spooled) == [0.0, 1.0, 3.0], "the outage shows in the spool's depth, then its recovery"


def test_the_spool_is_bounded_oldest_first(tmp_path):
    spool = Spool(tmp_path, max_bytes=2_000)
    bodies = [bytes([i]) * 5_000 + str(i).encode() * 1000 for i in range(4)]
    dropped = [spool.put(body, JSON) for body in bodies]
    remaining = spool.pending()
    assert sum(dropped) == len(bodies) - len(remaining) and remaining
    assert spool.claim(remaining[-1]) == bodies[-1]


def test_a_body_another_run_took_or_dropped_is_skipped_not_an_error(tmp_path):
    # Scrape shards share one spool: a body listed by one run may be resent or dropped by another before
    # this run stats or claims it.
    spool = Spool(tmp_path / "spool")
    spool.put(b"first", JSON)
    listed = spool.pending()
    assert spool.claim(listed[0]) == b"first"  # now marked as being sent, not pending
    assert spool.claim(listed[0]) is None
    assert spool.depth(0).bodies == 0
    spool.put(b"second", JSON)
    spool.put(b"third", JSON)
    stale_listing = spool.pending()
    stale_listing[0].path.unlink()  # taken by another run after this one listed the spool
    assert spool_module._drop_oldest(stale_listing, 0) == 1  # only "third" was still there to drop
    assert spool.pending() == []


def test_refused_bodies_are_kept_for_a_look_but_bounded_and_the_drops_counted(tmp_path, parseable):
    spool = Spool(tmp_path, max_rejected_bytes=2_000)
    bodies = [os.urandom(1_500) for _ in range(3)]  # incompressible: each takes its size on disk
    dropped = [spool.reject(body, JSON, "Parseable answered 400") for body in bodies]
    (kept,) = (tmp_path / "rejected").glob("*.json.gz")
    assert dropped == [0, 1, 1] and kept.read_bytes() and (tmp_path / "rejected" / f"{kept.name}.txt").exists()
    assert len(list((tmp_path / "rejected").iterdir())) == 2, "the dropped bodies' reasons went with them"
    with Exporter("m 1\n") as ray:
        parseable.fail_next(400, count=3, body="Could not deserialize into JSON object")
        backend = ParseableBackend(parseable.url, "admin", "admin", "raymetrics", tmp_path)
        backend.spool.max_rejected_bytes = 0
        with backend.sink() as sink:
            delivery = run_cycle([ray.target], sink).delivery
    assert delivery.bodies_rejected == 1 and delivery.rejected_dropped == 2
    figures = {row["metric_name"]: row.get("data_point_value") for row in parseable.rows("raymetrics")}
    assert figures[PREFIX + "rejected_dropped"] == 2.0 and figures[PREFIX + "spool_dropped"] == 0.0


def test_upkeep_clears_what_a_killed_run_left_half_written(tmp_path):
    backend = ParseableBackend("http://127.0.0.1:9", "admin", "admin", "raymetrics", tmp_path)
    backend.spool.put(b"{}", JSON)
    stale, fresh = tmp_path / ".00001.json.gz.tmp", tmp_path / ".00002.json.gz.tmp"
    for path in (stale, fresh):
        path.write_bytes(b"half")
    old = stale.stat().st_mtime - 3600
    os.utime(stale, (old, old))
    upkeep = backend.maintain(datetime.now(UTC))
    assert upkeep.stale_temporaries_removed == 1 and upkeep.spool_pending == 1
    assert not stale.exists() and fresh.exists()


def test_one_target_serving_an_infinite_bound_costs_that_sample_only(tmp_path, parseable):
    """Once, a `le="-Inf"` bucket made the body invalid JSON: Parseable refused every target's data for the cycle."""
    hostile = '# TYPE h histogram\nh_bucket{le="-Inf"} 0\nh_bucket{le="+Inf"} 1\nh_count 1\nh_sum 2\n'
    with Exporter(TEXT) as ray, Exporter(hostile) as odd:
        result = cycle(parseable.url, tmp_path, [ray.target, odd.target])
    delivery = result.delivery
    assert delivery.bodies_rejected == 0 and delivery.failure is None
    by_target = {t.target: t for t in result.targets}
    assert by_target[odd.target].parse_errors == 1 and "line 2" in by_target[odd.target].first_parse_errors[0]
    rows = parseable.rows("raymetrics")
    assert {row["metric_name"] for row in rows if row.get(TARGET_ATTRIBUTE) == odd.target} >= {"h", UP}
    assert len([row for row in rows if row.get(TARGET_ATTRIBUTE) == ray.target]) > 600


def test_a_sample_with_an_impossible_timestamp_costs_that_sample_only(tmp_path, parseable):
    """A timestamp of 99999999999999999999 once crashed the run on the local store (and on protobuf)."""
    hostile = "ok 1\nfar 2 99999999999999999999\n"
    backends = [
        ParseableBackend(parseable.url, "admin", "admin", "raymetrics", tmp_path / "spool"),
        LocalStoreBackend(tmp_path / "store", "raymetrics", 7),
    ]
    with Exporter(TEXT) as ray, Exporter(hostile) as odd:
        for backend in backends:
            with backend.sink() as sink:
                result = run_cycle([ray.target, odd.target], sink)
            assert result.delivery.delivered and result.delivery.failure is None
            assert {t.target: t.parse_errors for t in result.targets} == {ray.target: 0, odd.target: 1}
    scrapes = [ResourceMetrics(NO_LABELS, otlp.to_metrics(parse(hostile), 0).metrics)]
    assert list(encode_protobuf(scrapes)), "protobuf takes what is left"


def test_a_large_answer_converted_in_pieces_arrives_as_it_would_whole(tmp_path, monkeypatch):
    """A large answer is parsed, converted and sent a piece at a time, so memory holds one piece (ingest/cycle.py)."""

    def rows_after_a_cycle(piece_chars: int) -> tuple[int, list]:
        monkeypatch.setattr(cycle_module, "PIECE_CHARS", piece_chars)
        with ParseableDouble() as double, Exporter(TEXT) as ray:
            result = cycle(double.url, tmp_path / str(piece_chars), [ray.target])
            rows = double.rows("raymetrics")
        ray_rows = [row for row in rows if not row["metric_name"].startswith(PREFIX)]
        varying = {"time_unix_nano", TARGET_ATTRIBUTE, SERIES_HASH}  # each cycle scrapes anew, from its own port
        comparable = sorted(
            repr(sorted((k, v) for k, v in row.items() if not k.startswith("p_") and k not in varying))
            for row in ray_rows
        )
        return result.totals()["data_points"], comparable

    whole_points, whole = rows_after_a_cycle(len(TEXT) + 1)
    cut_points, cut = rows_after_a_cycle(3_000)
    assert cut_points == whole_points == len(whole) and cut == whole


def test_a_target_too_slow_to_convert_stops_at_its_time_bound_and_the_others_arrive(tmp_path, parseable, monkeypatch):
    monkeypatch.setattr(cycle_module, "TARGET_CONVERT_SECONDS", 0.05)
    monkeypatch.setattr(cycle_module, "PIECE_CHARS", 100_000)
    huge = "".join(f'g{{i="{i}"}} {i}\n' for i in range(300_000))
    with Exporter("small 1\n") as small, Exporter(huge) as large:
        result = cycle(parseable.url, tmp_path, [large.target, small.target])
    by_target = {outcome.target: outcome for outcome in result.targets}
    assert by_target[small.target].samples == 1 and by_target[small.target].parse_errors == 0
    slow = by_target[large.target]
    assert slow.samples < 300_000 and slow.parse_errors == 1 and "time bound" in slow.first_parse_errors[0]
    stored = [row for row in parseable.rows("raymetrics") if row["metric_name"] in ("small", "g")]
    assert len(stored) == 1 + slow.samples, "what was converted in time is delivered"
