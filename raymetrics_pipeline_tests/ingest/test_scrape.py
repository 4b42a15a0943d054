import time

from raymetrics_pipeline.ingest.scrape import scrape_all
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
