"""One very large endpoint (about 55 MB, 1 M series) beside a small one: delivered in full, and at what memory.

A loopback "Parseable" that only decompresses, counts data points and answers 200 takes what
the real scrape cycle (``ingest.cycle.run_cycle`` into the real Parseable sink) sends. Each
cycle runs in a child process so its peak RSS is its own. The baseline, in the same run,
is the cycle as it was before bodies were streamed: every target converted, then every body
encoded into a list, then sent (what peaked at 1.12 GB and delivered nothing in 12 s).

Run: ``python benchmarks/large_target.py [--series N] [--cycles N]``. The machine is shared:
compare ratios.
"""

import argparse
import gzip
import json
import multiprocessing
import resource
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from raymetrics_pipeline.ingest.cycle import convert, run_cycle  # noqa: E402
from raymetrics_pipeline.ingest.health import PREFIX  # noqa: E402
from raymetrics_pipeline.ingest.prometheus import NO_LABELS  # noqa: E402
from raymetrics_pipeline.ingest.scrape import scrape_all  # noqa: E402
from raymetrics_pipeline.parseable.backend import ParseableBackend  # noqa: E402
from raymetrics_pipeline.parseable.encode import DEFAULT_MAX_REQUEST_BYTES, JSON, encode  # noqa: E402
from raymetrics_pipeline_tests.exporters import Exporter  # noqa: E402

SMALL = '# TYPE ray_node_cpu_utilization gauge\nray_node_cpu_utilization{NodeAddress="127.0.0.1"} 12.5\n'


def large_exposition(series: int) -> str:
    """Ray-like families: a gauge, a counter and a histogram, ``series`` samples in all, about 55 bytes each."""
    third = series // 3
    lines = ["# HELP ray_tasks Tasks by state.", "# TYPE ray_tasks gauge"]
    lines += [f'ray_tasks{{Name="task_{i}",State="FINISHED",JobId="{i % 97:08x}"}} {i % 13}' for i in range(third)]
    lines += ["# HELP ray_object_store_bytes Bytes.", "# TYPE ray_object_store_bytes counter"]
    lines += [f'ray_object_store_bytes_total{{ObjectId="{i:012x}",Loc="MMAP"}} {i * 7}' for i in range(third)]
    lines += ["# HELP ray_task_latency Seconds.", "# TYPE ray_task_latency histogram"]
    histograms = (series - 2 * third) // 4
    for i in range(histograms):
        labels = f'Name="t{i}"'
        lines += [f'ray_task_latency_bucket{{{labels},le="{bound}"}} {n}' for bound, n in (("0.1", 1), ("+Inf", 2))]
        lines += [f"ray_task_latency_sum{{{labels}}} 0.3", f"ray_task_latency_count{{{labels}}} 2"]
    return "\n".join(lines) + "\n"


class CountingParseable(ThreadingHTTPServer):
    """Takes OTLP/JSON on /v1/metrics, counts Ray's data points, answers 200."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _CountingHandler)
        self.lock = threading.Lock()
        self.points = 0
        self.requests = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _CountingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CountingParseable

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        points = 0
        for resource_metrics in json.loads(body)["resourceMetrics"]:
            for metric in resource_metrics["scopeMetrics"][0]["metrics"]:
                if metric["name"].startswith(PREFIX):
                    continue  # the pipeline's own figures
                kind = next(k for k in ("gauge", "sum", "histogram", "summary") if k in metric)
                points += len(metric[kind]["dataPoints"])
        with self.server.lock:
            self.server.points += points
            self.server.requests += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def streamed_cycle(url: str, targets: list[str], spool: str, queue) -> None:
    before = peak_rss_mb()  # the interpreter and the imports
    backend = ParseableBackend(url, "admin", "admin", "raymetrics", Path(spool))
    with backend.sink() as sink:
        cycle = run_cycle(targets, sink, budget_seconds=12.0)
    queue.put(
        {
            "seconds": cycle.seconds,
            "data_points": cycle.totals()["data_points"],
            "bodies_sent": cycle.delivery.bodies_sent,
            "bodies_spooled": cycle.delivery.bodies_spooled,
            "spooled_bodies_delivered": cycle.delivery.spooled_bodies_delivered,
            "spool_pending": cycle.delivery.spool_pending,
            "peak_rss_mb": peak_rss_mb(),
            "cycle_mb": peak_rss_mb() - before,
        }
    )


def baseline_cycle(url: str, targets: list[str], spool: str, queue) -> None:
    """Before streaming: convert every target, encode every body into a list, then send them."""
    before = peak_rss_mb()
    started = time.monotonic()
    converted = [convert(result, NO_LABELS) for result in scrape_all(targets, 5.0)]
    bodies = list(encode([metrics for _, metrics in converted], JSON, DEFAULT_MAX_REQUEST_BYTES))
    backend = ParseableBackend(url, "admin", "admin", "raymetrics", Path(spool))
    with backend.sink() as sink:
        for body in bodies:
            sink.client.post(body, started + 60)
    queue.put(
        {
            "seconds": time.monotonic() - started,
            "data_points": sum(outcome.data_points for outcome, _ in converted),
            "peak_rss_mb": peak_rss_mb(),
            "cycle_mb": peak_rss_mb() - before,
        }
    )


def in_child(function, *args) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=function, args=(*args, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=1_000_000)
    parser.add_argument("--cycles", type=int, default=3)
    args = parser.parse_args()
    text = large_exposition(args.series)
    print(f"large endpoint: {len(text) / 1e6:.1f} MB, {args.series:,} samples; plus one small endpoint")
    counting = CountingParseable()
    threading.Thread(target=counting.serve_forever, daemon=True).start()
    with Exporter(text) as large, Exporter(SMALL) as small, tempfile.TemporaryDirectory() as spool:
        targets = [large.target, small.target]
        expected = 0
        for number in range(1, args.cycles + 1):
            figures = in_child(streamed_cycle, counting.url, targets, spool)
            expected += figures["data_points"]
            print(
                f"streamed cycle {number}: {figures['seconds']:.1f} s, peak RSS {figures['peak_rss_mb']:.0f} MB "
                f"({figures['cycle_mb']:.0f} MB above the imports), "
                f"{figures['bodies_sent']} bodies sent, {figures['bodies_spooled']} spooled, "
                f"{figures['spool_pending']} waiting; delivered so far {counting.points:,} of {expected:,} points"
            )
        streamed = figures
        baseline = in_child(baseline_cycle, counting.url, targets, spool)
        print(
            f"baseline (convert all, encode all, then send): {baseline['seconds']:.1f} s, "
            f"peak RSS {baseline['peak_rss_mb']:.0f} MB ({baseline['cycle_mb']:.0f} MB above the imports)"
        )
    print(
        f"streamed / baseline: peak RSS {streamed['peak_rss_mb'] / baseline['peak_rss_mb']:.2f}, "
        f"above the imports {streamed['cycle_mb'] / baseline['cycle_mb']:.2f}"
    )
    counting.shutdown()


if __name__ == "__main__":
    main()
