"""1,000 Ray endpoints in one cycle: every point delivered, in under 15 s, under 1 GB.

Each endpoint serves one of the project's real Ray 2.60 scrapes (the metrics agent's), cut
to 600–1,100 samples by dropping whole families and given a node of its own (``NodeAddress``,
``ip`` and ``WorkerId`` values differ per endpoint; ``SessionName`` stays), from one asyncio
process with 1,000 listening sockets on 127.0.0.1 answering precomputed responses, gzipped
when asked as Ray's prometheus_client exporter does, after ``--render-ms`` (the time a real
exporter takes to render). A loopback "Parseable" in another process answers 200 to
everything and keeps each POST to ``/v1/metrics``; it decompresses and counts their data
points only after the run, so its JSON parsing does not compete with the job for the
machine's 2 cores.

The job runs as a user runs it: ``dagster job execute -m raymetrics_pipeline.definitions -j
scrape_and_ship`` under ``/usr/bin/time -v``, with a fresh Dagster home (the project's
``dagster.yaml``), ``RAY_METRICS_TARGETS`` listing the 1,000 endpoints and ``PARSEABLE_URL``
the loopback sink. Expected points are what the run's materialization reports and,
independently, what prometheus_client's parser finds in the served bodies (a histogram or
summary series is one point).

Run: ``python benchmarks/thousand_targets.py [--endpoints 1000] [--runs 3] [--render-ms 0]``;
``--smoke``: 20 endpoints, one run. The machine is shared: repeat runs and look at the spread.
"""

import argparse
import asyncio
import functools
import gzip
import hashlib
import json
import multiprocessing
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import zstandard
from isal import igzip
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from raymetrics_pipeline.ingest.health import PREFIX  # noqa: E402
from raymetrics_pipeline_tests.scrape_fixtures import scrape_fixtures  # noqa: E402

FEWEST_SAMPLES, MOST_SAMPLES = 600, 1100
FIXTURE_NODE = "192.0.2.2"  # the node address in every captured scrape (fixtures/ray-2.60/README.md)
STAGES = ("scrape", "parse", "encode", "compress", "send")
CYCLE_SECONDS_GOAL, RSS_MB_GOAL = 15.0, 1024.0
_WORKER_ID = re.compile(r'WorkerId="([0-9a-f]+)"')
_HTTP_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: %d\r\n%s\r\n"
)
_GZIP_HEADER = b"Content-Encoding: gzip\r\n"
_ACCEPTS_GZIP = re.compile(rb"^accept-encoding:[^\r\n]*\bgzip\b", re.IGNORECASE | re.MULTILINE)


# --- the endpoints' bodies ------------------------------------------------------------


def families(text: str) -> list[tuple[list[str], int]]:
    """The exposition's families in order: each one's lines (its HELP and TYPE, then its samples) and how many
    samples it has."""
    blocks: list[tuple[list[str], int]] = []
    for line in text.splitlines():
        if not blocks or (line.startswith("#") and blocks[-1][1]):
            blocks.append(([], 0))
        lines, samples = blocks[-1]
        lines.append(line)
        blocks[-1] = (lines, samples + (not line.startswith("#") and bool(line.strip())))
    return blocks


def endpoint_body(base: list[tuple[list[str], int]], index: int, samples_wanted: int) -> str:
    """A node's scrape: ``base``'s families in order, skipping those that would pass ``samples_wanted``, with
    this node's own address and worker ids."""
    lines, samples = [], 0
    for family_lines, family_samples in base:
        if samples + family_samples <= samples_wanted:
            lines += family_lines
            samples += family_samples
    node = f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"
    text = "\n".join(lines).replace(f'"{FIXTURE_NODE}"', f'"{node}"') + "\n"
    return _WORKER_ID.sub(lambda m: f'WorkerId="{_node_worker_id(index, m.group(1))}"', text)


def _node_worker_id(index: int, worker_id: str) -> str:
    return hashlib.blake2b(f"{index}:{worker_id}".encode(), digest_size=len(worker_id) // 2).hexdigest()


def endpoint_bodies(count: int, seed: int = 11) -> list[str]:
    """``count`` endpoints' bodies from the committed metrics-agent scrapes (those with at least 600 samples),
    each cut to a size drawn from 600–1,100 samples."""
    bases = [families(fixture.text()) for fixture in scrape_fixtures(include_shared=False)]
    bases = [base for base in bases if sum(samples for _, samples in base) >= FEWEST_SAMPLES]
    sizes = random.Random(seed)
    return [
        endpoint_body(bases[index % len(bases)], index, sizes.randint(FEWEST_SAMPLES, MOST_SAMPLES))
        for index in range(count)
    ]


def otlp_points(body: str) -> tuple[int, int]:
    """Samples and the OTLP data points they make, by prometheus_client's parser: one per counter, gauge or
    untyped sample, one per histogram or summary series (its buckets or quantiles, sum and count)."""
    samples = points = 0
    for family in text_string_to_metric_families(body):
        samples += len(family.samples)
        if family.type in ("histogram", "summary"):
            series_labels = {
                tuple(sorted((k, v) for k, v in sample.labels.items() if k not in ("le", "quantile")))
                for sample in family.samples
            }
            points += len(series_labels)
        else:
            points += len(family.samples)
    return samples, points


# --- 1,000 endpoints in one process -----------------------------------------------------


class _Endpoint(asyncio.Protocol):
    """Answers each request on a connection (keep-alive or not) as prometheus_client's exporter (Ray's) does:
    gzip-compressed when the request accepts gzip, ``delay`` seconds after it (the time an exporter takes to
    render its metrics). The answers are made once, before the first request."""

    def __init__(self, plain: bytes, gzipped: bytes, delay: float) -> None:
        self.plain, self.gzipped, self.delay, self.received = plain, gzipped, delay, b""

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data
        while b"\r\n\r\n" in self.received:
            head, self.received = self.received.split(b"\r\n\r\n", 1)
            response = self.gzipped if _ACCEPTS_GZIP.search(head) else self.plain
            asyncio.get_running_loop().call_later(self.delay, self._answer, response)

    def _answer(self, response: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(response)


def _responses(body: str) -> tuple[bytes, bytes]:
    """The whole HTTP answer for ``body``: plain, and gzip-compressed."""
    payload = body.encode()
    gzipped = igzip.compress(payload, 1)
    return _HTTP_HEAD % (len(payload), b"") + payload, _HTTP_HEAD % (len(gzipped), _GZIP_HEADER) + gzipped


def serve_endpoints(bodies: list[str], delay: float, ports) -> None:
    """Child process: listen on a loopback port per body; send the ports, then serve until killed."""
    files, most_files = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = len(bodies) + 256  # a listening socket per endpoint, and the job's connections
    if files != resource.RLIM_INFINITY and files < wanted:
        allowed = wanted if most_files == resource.RLIM_INFINITY else min(wanted, most_files)
        resource.setrlimit(resource.RLIMIT_NOFILE, (allowed, most_files))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        servers = []
        for body in bodies:
            endpoint = functools.partial(_Endpoint, *_responses(body), delay)
            servers.append(await loop.create_server(endpoint, "127.0.0.1", 0, backlog=64))
        ports.send([server.sockets[0].getsockname()[1] for server in servers])
        await asyncio.Event().wait()

    asyncio.run(main())


# --- the loopback Parseable -------------------------------------------------------------


class KeepingParseable(ThreadingHTTPServer):
    """Answers 200 to whatever is asked; keeps the bodies POSTed to /v1/metrics until counted."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _KeepingHandler)
        self.lock = threading.Lock()
        self.kept: list[tuple[str, bytes]] = []


class _KeepingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: KeepingParseable

    def _answer(self, body: bytes = b"") -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/v1/metrics":
            with self.server.lock:
                self.server.kept.append((self.headers.get("Content-Encoding", ""), body))
        self._answer()

    def do_GET(self) -> None:
        if self.path == "/benchmark/count":  # the benchmark's own question, asked after each run
            with self.server.lock:
                kept, self.server.kept = self.server.kept, []
            self._answer(json.dumps(count_points(kept)).encode())
        else:
            self._answer(b"{}")

    do_PUT = do_HEAD = do_POST

    def log_message(self, *args) -> None:
        pass


def count_points(kept: list[tuple[str, bytes]]) -> dict:
    """Decompress each request and count its data points: Ray's, and the pipeline's own figures."""
    counted = Counter(requests=len(kept))
    for encoding, payload in kept:
        counted["bytes_compressed"] += len(payload)
        body = {"gzip": gzip.decompress, "zstd": zstandard.decompress}.get(encoding, bytes)(payload)
        counted["bytes_raw"] += len(body)
        for resource_metrics in json.loads(body)["resourceMetrics"]:
            for scope_metrics in resource_metrics["scopeMetrics"]:
                for metric in scope_metrics["metrics"]:
                    kind = next(k for k in ("gauge", "sum", "histogram", "summary") if k in metric)
                    own = metric["name"].startswith(PREFIX)
                    counted["own_points" if own else "points"] += len(metric[kind]["dataPoints"])
    return dict(counted)


def serve_sink(urls) -> None:
    """Child process: the loopback Parseable; sends its URL, then serves until killed."""
    sink = KeepingParseable()
    urls.send(f"http://127.0.0.1:{sink.server_address[1]}")
    sink.serve_forever()


def in_child(function, *args) -> tuple[multiprocessing.Process, object]:
    """Start ``function(*args, pipe)`` in a forked process; return it and the first thing it sends."""
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(target=function, args=(*args, theirs), daemon=True)
    child.start()
    return child, ours.recv()


# --- the job, as a user runs it -----------------------------------------------------------


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def rss_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) if match else 0


class TreeRss(threading.Thread):
    """The peak of the summed RSS of a process's descendants, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kb, self.most_processes = pid, 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            pids = descendants(self.pid)
            self.most_processes = max(self.most_processes, len(pids))
            self.peak_kb = max(self.peak_kb, sum(map(rss_kb, pids)))


def run_job(env: dict) -> dict:
    """One ``scrape_and_ship`` run: its cost (``/usr/bin/time -v`` and the summed RSS of its processes) and its
    materialization's metadata."""
    dagster = str(Path(sys.executable).with_name("dagster"))
    command = ["/usr/bin/time", "-v", dagster, "job", "execute", "-m", "raymetrics_pipeline.definitions"]
    started = time.monotonic()
    job = subprocess.Popen(
        [*command, "-j", "scrape_and_ship"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    tree = TreeRss(job.pid)
    tree.start()
    stdout, stderr = (out.decode(errors="replace") for out in job.communicate())
    tree.done.set()
    tree.join()
    wall = time.monotonic() - started
    if job.returncode != 0 or "RUN_SUCCESS" not in stdout + stderr:
        raise SystemExit(f"the scrape_and_ship run failed ({job.returncode}):\n{stderr[-3000:]}")

    def figure(label: str) -> float:
        return float(re.search(rf"{label}: ([0-9.]+)", stderr).group(1))

    return {
        "metadata": run_metadata(),
        "wall_s": wall,
        "cpu_s": figure(r"User time \(seconds\)") + figure(r"System time \(seconds\)"),
        "time_rss_mb": figure(r"Maximum resident set size \(kbytes\)") / 1024,
        "tree_rss_mb": tree.peak_kb / 1024,
        "processes": tree.most_processes,
    }


def run_metadata() -> dict:
    """The newest run's ``raymetrics`` materializations (one, or one per shard with RAYMETRICS_SCRAPE_SHARDS) as
    one: counts and stage seconds summed, the longest cycle's duration."""
    import dagster as dg  # here: the benchmark's own process stays small while the endpoints are forked

    with dg.DagsterInstance.get() as instance:
        run = instance.get_runs(limit=1)[0]
        events = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    cycles = [{key: value.value for key, value in event.asset_materialization.metadata.items()} for event in events]
    summed = ("data_points", "targets", "targets_up", *(f"{stage}_seconds" for stage in STAGES))
    return {
        **{key: sum(cycle.get(key, 0) for cycle in cycles) for key in summed},
        "duration_seconds": max(cycle["duration_seconds"] for cycle in cycles),
        "materializations": len(cycles),
    }


# --- the benchmark ---------------------------------------------------------------------------


def job_environment(home: Path, targets: list[str], parseable_url: str) -> dict:
    """The settings a user would set (README, Settings), and none of this shell's."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RAY_", "PARSEABLE_", "RAYMETRICS_", "DAGSTER_"))
    }
    return {
        **env,
        "DAGSTER_HOME": str(home),
        "RAY_METRICS_TARGETS": ",".join(targets),
        "PARSEABLE_URL": parseable_url,
        "PARSEABLE_USERNAME": "benchmark",
        "PARSEABLE_PASSWORD": "benchmark",
    }


def spread(values: list[float], unit: str = "", digits: int = 1) -> str:
    text = f"{statistics.median(values):.{digits}f}{unit}"
    return text if len(values) == 1 else f"{text} (min {min(values):.{digits}f}, max {max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--render-ms", type=float, default=0.0, help="each endpoint answers this long after a request (Ray's own time)"
    )
    parser.add_argument("--smoke", action="store_true", help="20 endpoints, one run: a few seconds")
    args = parser.parse_args()
    if args.smoke:
        args.endpoints, args.runs = 20, 1
    bodies = endpoint_bodies(args.endpoints)
    endpoints, ports = in_child(serve_endpoints, bodies, args.render_ms / 1000)
    sink, sink_url = in_child(serve_sink)
    counted_at = time.monotonic()
    with multiprocessing.get_context("fork").Pool() as pool:  # about 50 ms a body
        counts = pool.map(otlp_points, bodies, chunksize=16)
    sizes = [samples for samples, _ in counts]
    independent = sum(points for _, points in counts)
    print(
        f"{len(bodies)} endpoints on 127.0.0.1: {sum(map(len, bodies)) / 1e6:.0f} MB, {sum(sizes):,} samples; "
        f"samples per endpoint min {min(sizes)}, median {statistics.median(sizes):.0f}, max {max(sizes)}; "
        f"by hundreds: {dict(sorted(Counter(size // 100 * 100 for size in sizes).items()))}"
    )
    print(
        f"independent count (prometheus_client's parser, {time.monotonic() - counted_at:.1f} s): "
        f"{independent:,} OTLP data points per cycle"
    )
    del bodies, counts

    home = Path(tempfile.mkdtemp(prefix="thousand-targets-"))
    shutil.copy(ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)  # where run_metadata reads the runs
    env = job_environment(home, [f"127.0.0.1:{port}" for port in ports], sink_url)
    runs, failures = [], []
    try:
        for number in range(1, args.runs + 1):
            run = run_job(env)
            delivered = httpx.get(f"{sink_url}/benchmark/count", timeout=600).json()
            metadata = run["metadata"]
            run.update(delivered=delivered.get("points", 0), expected=metadata["data_points"])
            runs.append(run)
            stages = ", ".join(f"{stage} {metadata.get(f'{stage}_seconds', 0.0):.2f}" for stage in STAGES)
            print(
                f"run {number}: expected {run['expected']:,} data points (materialization), {independent:,} "
                f"(independent); delivered {run['delivered']:,} in {delivered.get('requests', 0)} requests "
                f"({delivered.get('bytes_raw', 0) / 1e6:.0f} MB raw, {delivered.get('bytes_compressed', 0) / 1e6:.0f}"
                f" MB compressed); cycle {metadata['duration_seconds']:.2f} s (the whole run {run['wall_s']:.1f} s); "
                f"peak RSS {run['tree_rss_mb']:.0f} MB summed over {run['processes']} process(es) "
                f"(/usr/bin/time: {run['time_rss_mb']:.0f} MB); CPU {run['cpu_s']:.1f} s; "
                f"targets up {metadata['targets_up']}/{metadata['targets']}; stage seconds: {stages}"
            )
            if not run["delivered"] == run["expected"] == independent:
                failures.append(f"run {number}: delivered {run['delivered']:,} of {run['expected']:,}")
    finally:
        endpoints.kill()
        sink.kill()
        shutil.rmtree(home, ignore_errors=True)

    cycle = [run["metadata"]["duration_seconds"] for run in runs]
    rss = [max(run["tree_rss_mb"], run["time_rss_mb"]) for run in runs]
    print(
        f"over {len(runs)} run(s): cycle {spread(cycle, ' s', 2)} (goal < {CYCLE_SECONDS_GOAL:g} s), "
        f"peak RSS {spread(rss, ' MB', 0)} (goal < {RSS_MB_GOAL:g} MB), CPU {spread([r['cpu_s'] for r in runs], ' s')}"
    )
    print(
        "stage seconds (median): "
        + ", ".join(
            f"{stage} {statistics.median(run['metadata'].get(f'{stage}_seconds', 0.0) for run in runs):.2f}"
            for stage in STAGES
        )
    )
    if failures:
        raise SystemExit("not every point was delivered: " + "; ".join(failures))


if __name__ == "__main__":
    main()
