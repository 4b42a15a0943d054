"""Faults that once lost or doubled data, replayed against the double over real HTTP with a real spool.

Rows are counted per (series, sample time) in what the double stored: "present" is how many
distinct samples arrived, "doubled" how many arrived more than once.
"""

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import pytest

from raymetrics_pipeline.ingest import health, otlp
from raymetrics_pipeline.ingest.cycle import run_cycle
from raymetrics_pipeline.ingest.health import PREFIX, TARGET_ATTRIBUTE
from raymetrics_pipeline.ingest.prometheus import NO_LABELS, parse
from raymetrics_pipeline.parseable import client
from raymetrics_pipeline.parseable import sink as sink_module
from raymetrics_pipeline.parseable.backend import ParseableBackend
from raymetrics_pipeline.parseable.encode import DEFAULT_MAX_REQUEST_BYTES, JSON, encode
from raymetrics_pipeline.parseable.spool import SENDING_SUFFIX
from raymetrics_pipeline_tests.exporters import Exporter
from raymetrics_pipeline_tests.parseable_double import ParseableDouble
from raymetrics_pipeline_tests.scrape_fixtures import scrape_fixtures

TEXT = max(scrape_fixtures(include_shared=False), key=lambda f: f.path.stat().st_size).text()
# Parseable refuses a row that sets its own p_timestamp (docs/parseable.md): a label can do that.
REFUSED_SERIES = 'bad_metric{p_timestamp="2026-01-01"} 1\n'
_SAMPLE_COLUMNS_LEFT_OUT = {"p_timestamp", "p_user_agent", "p_src_ip", "p_format"}


def ray_samples(rows: list[dict]) -> Counter:
    """How often each Ray sample (its columns but Parseable's own) was stored."""
    return Counter(
        tuple(sorted((key, str(value)) for key, value in row.items() if key not in _SAMPLE_COLUMNS_LEFT_OUT))
        for row in rows
        if not row["metric_name"].startswith(PREFIX)
    )


def show(fault: str, expected: int, stored: Counter, **more) -> None:
    """The figures docs/reliability.md quotes (``pytest -s`` shows them)."""
    doubled = sum(1 for times in stored.values() if times > 1)
    extra = "".join(f", {name.replace('_', ' ')} {value}" for name, value in more.items())
    print(f"\nfigures: {fault}: expected {expected}, present {len(stored)}, doubled {doubled}{extra}")


def scrape_body_bytes() -> int:
    """The size of one scrape of TEXT as an OTLP/JSON body."""
    scrape = otlp.ResourceMetrics(NO_LABELS, otlp.to_metrics(parse(TEXT), 0).metrics)
    return len(next(encode([scrape], JSON, DEFAULT_MAX_REQUEST_BYTES)))


def stored_rows(double) -> list[dict]:
    try:
        return double.rows("raymetrics")
    except KeyError:  # nothing stored yet
        return []


def backend(url, spool_dir) -> ParseableBackend:
    return ParseableBackend(url, "admin", "admin", "raymetrics", spool_dir)


def cycle(url, spool_dir, targets, **options):
    with backend(url, spool_dir).sink() as sink:
        return run_cycle(targets, sink, **options)


def test_a_refused_series_is_isolated_and_everything_else_arrives_in_the_same_run(tmp_path, parseable):
    with Exporter(TEXT) as ray, Exporter(TEXT + REFUSED_SERIES) as odd:
        result = cycle(parseable.url, tmp_path, [ray.target, odd.target])
    delivery = result.delivery
    stored = ray_samples(parseable.rows("raymetrics"))
    points = result.totals()["data_points"]
    show("one refused series beside good targets", points, stored, requests=delivery.requests, rejected=1)
    assert sum(stored.values()) == len(stored) == points - 1, "all but the refused point, each once"
    assert delivery.bodies_rejected == 1 and delivery.spool_pending == 0
    (refused,) = (tmp_path / "rejected").glob("*.json.gz")
    assert b"bad_metric" in gzip.decompress(refused.read_bytes())
    reason = refused.with_name(refused.name + ".txt").read_text()
    assert "p_timestamp is a reserved field" in reason
    assert delivery.requests < 40, "halving finds the part in a few requests"


def test_a_refusal_of_the_whole_body_sets_it_aside_after_three_requests(tmp_path, parseable):
    with Exporter("m 1\n") as ray:
        parseable.fail_next(400, count=3, body="Ingestion is not allowed to stream raymetrics")
        delivery = cycle(parseable.url, tmp_path, [ray.target]).delivery
    assert delivery.bodies_rejected == 1 and delivery.http_statuses == [200, 400]
    assert delivery.requests == 4, "the body, its two halves, then the cycle's own figures"
    (refused,) = (tmp_path / "rejected").glob("*.json.gz")
    assert "Ingestion is not allowed" in refused.with_name(refused.name + ".txt").read_text()
    assert "1 refused for good" in delivery.failure


def test_a_413_split_whose_later_half_fails_spools_only_that_half(tmp_path):
    """Once, the accepted half was spooled with the rest and stored twice."""
    one_scrape = scrape_body_bytes()
    with ParseableDouble(max_payload_bytes=int(one_scrape * 0.7)) as small, Exporter(TEXT) as ray:
        small.fail_after_next_store(503, headers={"Retry-After": "30"})  # down after the first half is stored
        first = cycle(small.url, tmp_path, [ray.target])
        second = cycle(small.url, tmp_path, [ray.target])
        rows = small.rows("raymetrics")
    assert 413 in first.delivery.http_statuses and first.delivery.bodies_spooled >= 1
    assert second.delivery.spooled_bodies_delivered >= 1 and second.delivery.spool_pending == 0
    stored = ray_samples(rows)
    show("413 then Parseable down between halves", first.totals()["data_points"] * 2, stored)
    assert max(stored.values()) == 1, "nothing stored twice"
    assert len(stored) == first.totals()["data_points"] + second.totals()["data_points"], "nothing lost"


def test_a_slow_answer_past_the_deadline_is_waited_for_not_resent(tmp_path, parseable):
    """Once, a request cut off at the run's deadline was spooled and resent though Parseable had stored it."""
    with Exporter(TEXT) as ray:
        parseable.delay_next(3.0)
        started = time.monotonic()
        result = cycle(parseable.url, tmp_path, [ray.target], budget_seconds=1)
        took = time.monotonic() - started
        assert result.delivery.failure is None and result.delivery.spool_pending == 0
        cycle(parseable.url, tmp_path, [ray.target])
    stored = ray_samples(parseable.rows("raymetrics"))
    show("answer 3 s after a 1 s budget", 2 * result.totals()["data_points"], stored, run_seconds=round(took, 1))
    assert 3.0 <= took < 10 and max(stored.values()) == 1
    assert len(stored) == 2 * result.totals()["data_points"], "two scrapes, each sample once"


def test_a_request_never_answered_is_counted_ambiguous_and_sent_again(tmp_path, parseable, monkeypatch):
    monkeypatch.setattr(client, "ANSWER_TIMEOUT_SECONDS", 1.0)
    with Exporter("m 1\n") as ray:
        parseable.delay_next(2.0)
        first = cycle(parseable.url, tmp_path, [ray.target]).delivery
        second = cycle(parseable.url, tmp_path, [ray.target]).delivery
    assert first.ambiguous_requests == 1 and first.bodies_spooled >= 1 and "no answer came" in first.errors[0]
    assert second.spooled_bodies_delivered >= 1 and second.spool_pending == 0
    figures = [
        row for row in parseable.rows("raymetrics") if row["metric_name"] == PREFIX + "delivery_ambiguous_requests"
    ]
    assert sorted(row["data_point_value"] for row in figures) == [0.0, 1.0]


_RESEND_IN_A_CHILD = textwrap.dedent(
    """
    import sys, time
    from raymetrics_pipeline.ingest import health, otlp
    from raymetrics_pipeline.ingest.prometheus import NO_LABELS, parse
    from raymetrics_pipeline.parseable.backend import ParseableBackend

    backend = ParseableBackend(sys.argv[1], "admin", "admin", "raymetrics", sys.argv[2])
    with backend.sink() as sink:
        sink.ship([], time.monotonic() + 12, health.reporter(NO_LABELS, time.time_ns()))
    """
)


def test_kill_9_while_a_spooled_body_is_resent_leaves_that_body_alone_ambiguous(tmp_path, parseable):
    """Once, a run killed mid-resend left every body it had sent in the spool: 572 rows stored twice."""
    with Exporter(TEXT) as ray:  # Parseable down: each cycle's bodies are spooled
        cycle("http://127.0.0.1:9", tmp_path, [ray.target], budget_seconds=0.5)
        cycle("http://127.0.0.1:9", tmp_path, [ray.target], budget_seconds=0.5)
    spooled = sorted(tmp_path.glob("*.json.gz"))
    assert len(spooled) >= 2
    parseable.delay_next(60.0)  # the first resend is stored, then its answer hangs
    child = subprocess.Popen([sys.executable, "-c", _RESEND_IN_A_CHILD, parseable.url, str(tmp_path)])
    try:
        waited = time.monotonic()
        while not stored_rows(parseable) and time.monotonic() - waited < 30:
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert len(list(tmp_path.glob(f"*{SENDING_SUFFIX}"))) == 1, "exactly the body in flight is marked"
    with backend(parseable.url, tmp_path).sink() as sink:
        delivery = sink.ship([], time.monotonic() + 12, health.reporter(NO_LABELS, time.time_ns()))
    assert delivery.interrupted_resends == 1 and delivery.spool_pending == 0
    stored = ray_samples(parseable.rows("raymetrics"))
    show("kill -9 while a spooled body is resent", len(stored), stored, interrupted_resends=1)
    doubled = [sample for sample, times in stored.items() if times > 1]
    first_body_points = len(stored) // 2  # two cycles' worth of samples, one body each
    assert len(doubled) == first_body_points, "only the interrupted body was stored twice"
    assert max(stored.values()) == 2


def test_bodies_another_shard_dropped_do_not_count_as_this_runs_resends(tmp_path, parseable, monkeypatch):
    """Past its deadline a run still resends MIN_RESENDS_PER_RUN bodies, so the spool drains; bodies another
    shard's run dropped (spool bound, age bound) between this run's listing and its claim are not among them."""
    spool_backend = backend(parseable.url, tmp_path)
    for _ in range(4):
        spool_backend.spool.put(b'{"resourceMetrics":[]}', JSON)
    listed = spool_backend.spool.pending()
    for dropped in listed[:2]:
        dropped.path.unlink()  # by the other shard's run, after this one listed the spool
    monkeypatch.setattr(spool_backend.spool, "pending", lambda: listed)
    with spool_backend.sink() as sink:
        delivery = sink.ship([], time.monotonic() - 1, health.reporter(NO_LABELS, time.time_ns()))
    assert delivery.spooled_bodies_delivered == sink_module.MIN_RESENDS_PER_RUN == 2


def test_spooled_bodies_past_the_age_bound_are_dropped_and_counted(tmp_path, parseable):
    spool_backend = backend(parseable.url, tmp_path)
    spool_backend.spool.put(b'{"resourceMetrics":[]}', JSON)
    spool_backend.spool.max_age_seconds = 0
    time.sleep(0.01)
    with spool_backend.sink() as sink:
        delivery = sink.ship([], time.monotonic() + 5, health.reporter(NO_LABELS, time.time_ns()))
    assert delivery.spool_expired == 1 and delivery.spool_pending == 0
    expired = [row for row in parseable.rows("raymetrics") if row["metric_name"] == PREFIX + "spool_expired"]
    assert [row["data_point_value"] for row in expired] == [1.0]


def test_the_spool_drains_while_every_cycle_is_busy(tmp_path, parseable):
    """A cycle with no time left still resends two spooled bodies, so the backlog shrinks."""
    with Exporter("m 1\n") as ray:
        for _ in range(6):  # Parseable down: each cycle spools its data and its figures
            cycle("http://127.0.0.1:9", tmp_path, [ray.target], budget_seconds=0.5)
        depths = [
            cycle(parseable.url, tmp_path, [ray.target], budget_seconds=0).delivery.spool_pending for _ in range(6)
        ]
    assert depths == [10, 8, 6, 4, 2, 0]
    rows = parseable.rows("raymetrics")
    assert {row[TARGET_ATTRIBUTE] for row in rows if row["metric_name"] == "m"} == {ray.target}
    assert max(ray_samples(rows).values()) == 1


_CYCLE_IN_A_CHILD = textwrap.dedent(
    """
    import json, sys
    from raymetrics_pipeline.ingest.cycle import run_cycle
    from raymetrics_pipeline.parseable.backend import ParseableBackend

    backend = ParseableBackend(sys.argv[1], "admin", "admin", "raymetrics", sys.argv[2])
    with backend.sink() as sink:
        result = run_cycle([sys.argv[3]], sink, budget_seconds=float(sys.argv[4]))
    delivery = result.delivery
    print(json.dumps({
        "data_points": result.totals()["data_points"],
        "maybe_twice": delivery.ambiguous_requests + delivery.interrupted_resends,
        "spool_pending": delivery.spool_pending,
    }))
    """
)
FAULTS = ("none", "503", "slow", "kill", "kill in flight", "down")


def chaos(tmp_path, cycles: int, seed: int) -> dict:
    """``cycles`` scrape runs in child processes, each meeting a random fault, against a Parseable that also
    halves every body (its payload limit is below one scrape); then clean runs until the spool is empty.
    Returns expected / present / doubled samples and how many bodies the runs said may arrive twice."""
    rng = random.Random(seed)
    one_scrape = scrape_body_bytes()
    expected, maybe_twice, faults = 0, 0, Counter()
    with ParseableDouble(max_payload_bytes=int(one_scrape * 0.6)) as double, Exporter(TEXT) as ray:

        def run(fault: str) -> dict | None:
            url = "http://127.0.0.1:9" if fault == "down" else double.url
            if fault == "503":
                double.fail_next(503, count=rng.randint(1, 4), headers={"Retry-After": "1"})
            if fault == "slow":
                double.delay_next(rng.uniform(0.5, 3.0))
            if fault == "kill in flight":
                double.delay_next(30.0, count=100)  # every request is stored, then its answer hangs
            stored_before = len(stored_rows(double))
            child = subprocess.Popen(
                [sys.executable, "-c", _CYCLE_IN_A_CHILD, url, str(tmp_path), ray.target, "2"],
                stdout=subprocess.PIPE,
                text=True,
            )
            if fault == "kill":  # at a random moment: starting, scraping, converting or sending
                time.sleep(rng.uniform(0.5, 3.0))
                child.kill()
            if fault == "kill in flight":  # a request (new data or a spooled body) is stored but not answered
                waited = time.monotonic()
                while len(stored_rows(double)) == stored_before and time.monotonic() - waited < 60:
                    time.sleep(0.02)
                child.kill()
            out, _ = child.communicate(timeout=120)
            double.clear_faults()
            return json.loads(out) if child.returncode == 0 else None

        for _ in range(cycles):
            fault = rng.choice(FAULTS)
            faults[fault] += 1
            figures = run(fault)
            if figures:  # a killed run's scrape is lost with it, unless it was sent before the kill
                expected += figures["data_points"]
                maybe_twice += figures["maybe_twice"]
        recovery_runs = 0
        while True:  # Parseable stays up: the spool drains
            recovery_runs += 1
            figures = run("none")
            expected += figures["data_points"]
            maybe_twice += figures["maybe_twice"]
            if figures["spool_pending"] == 0:
                break
        stored = ray_samples(double.rows("raymetrics"))
    return {
        "faults": dict(faults),
        "expected": expected,
        "present": len(stored),
        "doubled": sum(1 for times in stored.values() if times > 1),
        "maybe_twice": maybe_twice,
        "recovery_runs": recovery_runs,
    }


def check_chaos(figures: dict) -> None:
    print(f"\nfigures: random faults: {figures}")
    # Present may exceed expected by what killed runs sent before they died.
    assert figures["present"] >= figures["expected"], "nothing a finished run handled is lost"
    if figures["doubled"]:
        assert figures["maybe_twice"] > 0, "a sample stored twice only where a run said it might be"


def test_random_faults_lose_nothing_and_double_only_what_was_counted(tmp_path):
    check_chaos(chaos(tmp_path, cycles=6, seed=10))


@pytest.mark.long
def test_random_faults_over_many_runs(tmp_path):
    check_chaos(chaos(tmp_path, cycles=120, seed=11))
