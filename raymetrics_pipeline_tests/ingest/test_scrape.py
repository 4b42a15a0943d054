import socket
import time
from contextlib import ExitStack

from raymetrics_pipeline.ingest.scrape import probe_all, scrape_all
from raymetrics_pipeline_tests.exporters import Exporter


def test_one_bad_target_does_not_stop_the_others():
    with (
        Exporter("m 1\n") as good,
        Exporter("oops", status=500) as failing,
        Exporter(behaviour="drip") as dripping,
        Exporter("\x00garbage{{{\n") as garbage,
    ):
        started = time.monotonic()
        results = {
            r.target: r
            for r in scrape_all(
                [good.target, failing.target, dripping.target, garbage.target, "127.0.0.1:9"], timeout_seconds=1.5
            )
        }
        elapsed = time.monotonic() - started
    assert elapsed < 4, "targets must be scraped concurrently and cut off at the total deadline"
    assert results[good.target].ok and results[good.target].body == "m 1\n" and results[good.target].status == 200
    assert results[failing.target].error == "HTTP 500" and results[failing.target].status == 500
    assert "within 1.5 s" in results[dripping.target].error, "a target that drips bytes is cut off"
    assert results[garbage.target].ok, "a scrape that parses badly is still delivered to the parser"
    assert results["127.0.0.1:9"].error.startswith("ConnectError")
    assert all(r.scrape_time_unix_nano > 0 and r.duration_seconds >= 0 for r in results.values())


def closed_port(stack: ExitStack) -> str:
    """A loopback port bound (so nothing else takes it) but not listening: a connection is refused."""
    sock = stack.enter_context(socket.socket())
    sock.bind(("127.0.0.1", 0))
    return f"127.0.0.1:{sock.getsockname()[1]}"


def silent_port(stack: ExitStack) -> str:
    """A loopback listener whose accept queue is full: a new connection gets no answer at all (SYNs dropped)."""
    listener = stack.enter_context(socket.socket())
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    for _ in range(3):
        client = stack.enter_context(socket.socket())
        client.setblocking(False)
        client.connect_ex(listener.getsockname())
    time.sleep(0.05)
    return f"127.0.0.1:{listener.getsockname()[1]}"


def test_the_probe_tells_answering_endpoints_from_refused_and_silent_ones():
    with ExitStack() as stack:
        exporter = stack.enter_context(Exporter("m 1\n"))
        refused, silent = closed_port(stack), silent_port(stack)
        started = time.monotonic()
        probes = {p.target: p for p in probe_all([exporter.target, refused, silent], timeout_seconds=0.3)}
        elapsed = time.monotonic() - started
    assert probes[exporter.target].answers and probes[exporter.target].error == ""
    assert probes[refused].error == "connection refused" and not probes[refused].answers
    assert probes[silent].error == "no answer within 0.3 s" and not probes[silent].answers
    assert elapsed < 0.9, "bounded by the timeout, whatever the targets do"
    assert exporter.hits == 0, "a probe opens a connection only: no HTTP request reaches the endpoint"


def test_many_dead_targets_are_probed_at_once_within_the_bound():
    with ExitStack() as stack:
        targets = [closed_port(stack) for _ in range(40)] + [silent_port(stack) for _ in range(10)]
        started = time.monotonic()
        probes = probe_all(targets, timeout_seconds=0.4)
        elapsed = time.monotonic() - started
    assert [p.target for p in probes] == targets, "one result per target, in order"
    assert not any(p.answers for p in probes)
    assert elapsed < 1.0


def test_a_probe_says_why_a_target_did_not_answer():
    if socket.has_ipv6:
        (ipv6,) = probe_all(["[::1]:1"], timeout_seconds=0.5)
        assert ipv6.error == "connection refused"
    started = time.monotonic()
    (unknown,) = probe_all(["nosuchhost.invalid:8080"], timeout_seconds=0.5)
    # Offline, the lookup fails at once; with a slow resolver it is cut off at the bound like any other target.
    assert unknown.error.startswith(("unknown host", "no answer within 0.5 s")), unknown.error
    assert time.monotonic() - started < 1.0


def test_nothing_to_probe_is_nothing_probed():
    assert probe_all([]) == []
