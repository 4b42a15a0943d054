"""What one scrape run costs beside a trivial one-op Dagster run in the same instance.

Both go through ``dagster job execute`` in one fresh Dagster home (the project's
``dagster.yaml``), interleaved ``--repeat`` times: the trivial job (one op that does nothing,
written to a temporary file) and ``scrape_and_ship`` against three loopback endpoints serving
the project's captured Ray scrapes, once into the local store (which needs PyArrow to write
Parquet) and once to Parseable (the project's test double on loopback, which stands in for a
Parseable server: none can run here). For each, the CPU (user + system) and
peak RSS from ``/usr/bin/time -v``, and the Dagster storage the run added (the home without the
local store), and of it the bytes of the run's own events in the event log (what Dagster recorded
about the run, without SQLite's pages and indexes, the run's row and its captured stderr). Prints
medians and the scrape/trivial ratios; the machine is shared, so compare ratios.

Run: ``python benchmarks/scrape_run_cost.py [--repeat 3] [--smoke]`` (``--smoke``: one of each).
"""

import argparse
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from raymetrics_pipeline_tests.exporters import Exporter  # noqa: E402
from raymetrics_pipeline_tests.parseable_double import ParseableDouble  # noqa: E402
from raymetrics_pipeline_tests.scrape_fixtures import rounds, scrape_fixtures  # noqa: E402

TRIVIAL_JOB = """
import dagster as dg


@dg.op
def nothing():
    pass


@dg.job(executor_def=dg.in_process_executor)
def trivial():
    nothing()
"""


def dagster_bytes(home: Path) -> int:
    """Bytes of Dagster's own storage: everything in the home but the pipeline's data folder."""
    return sum(p.stat().st_size for p in home.rglob("*") if p.is_file() and "raymetrics" not in p.parts)


def newest_run_event_bytes(home: Path) -> int:
    """Bytes of the newest run's events, as the project's ``dagster.yaml`` keeps them (one SQLite event log)."""
    # Closed at once: an open reader keeps the databases' write-ahead logs from being folded in and removed
    # when Dagster's next run closes them, and they would count as that run's storage.
    with closing(sqlite3.connect(home / "history" / "runs.db")) as runs:
        (run_id,) = runs.execute("SELECT run_id FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    with closing(sqlite3.connect(home / "event_log.db")) as events:
        query = "SELECT SUM(LENGTH(event)) FROM event_logs WHERE run_id = ?"
        return events.execute(query, (run_id,)).fetchone()[0]


def timed_run(command: list[str], env: dict, home: Path) -> dict[str, float]:
    before = dagster_bytes(home)
    done = subprocess.run(["/usr/bin/time", "-v", *command], env=env, capture_output=True, text=True, cwd=ROOT)
    if "RUN_SUCCESS" not in done.stdout + done.stderr:
        raise SystemExit(f"{' '.join(command)} did not succeed:\n{done.stderr[-2000:]}")

    def figure(label: str) -> float:
        return float(re.search(rf"{label}: ([0-9.]+)", done.stderr).group(1))

    return {
        "cpu_s": figure(r"User time \(seconds\)") + figure(r"System time \(seconds\)"),
        "rss_mb": figure(r"Maximum resident set size \(kbytes\)") / 1024,
        "storage_kb": (dagster_bytes(home) - before) / 1024,
        "events_kb": newest_run_event_bytes(home) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="one run of each: does it all run")
    args = parser.parse_args()
    args.repeat = 1 if args.smoke else args.repeat
    work = Path(tempfile.mkdtemp(prefix="run-cost-"))
    home = work / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    trivial_file = work / "trivial.py"
    trivial_file.write_text(TRIVIAL_JOB)
    scrape_round = next(r for r in rounds(scrape_fixtures(include_shared=False)) if len(r) == 3)
    exporters = [Exporter(fixture.text()) for fixture in scrape_round]
    parseable = ParseableDouble()
    for server in (*exporters, parseable):
        server.__enter__()
    try:
        local = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "RAY_METRICS_TARGETS": ",".join(exporter.target for exporter in exporters),
        }
        local.pop("PARSEABLE_URL", None)
        to_parseable = {**local, "PARSEABLE_URL": parseable.url, "PARSEABLE_USERNAME": "admin"}
        to_parseable["PARSEABLE_PASSWORD"] = "admin"
        dagster = str(Path(sys.executable).with_name("dagster"))
        scrape = [dagster, "job", "execute", "-m", "raymetrics_pipeline.definitions", "-j", "scrape_and_ship"]
        commands = {
            "trivial one-op run": ([dagster, "job", "execute", "-f", str(trivial_file), "-j", "trivial"], local),
            "scrape_and_ship, 3 endpoints, to Parseable": (scrape, to_parseable),
            "scrape_and_ship, 3 endpoints, into the local store": (scrape, local),
        }
        figures: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
        for _ in range(args.repeat):
            for name, (command, env) in commands.items():
                figures[name].append(timed_run(command, env, home))
    finally:
        for server in (*exporters, parseable):
            server.__exit__(None, None, None)
        shutil.rmtree(work, ignore_errors=True)
    medians = {
        name: {key: statistics.median(run[key] for run in runs) for key in runs[0]} for name, runs in figures.items()
    }
    for name, median in medians.items():
        print(
            f"{name}: {median['cpu_s']:.2f} CPU-s, peak RSS {median['rss_mb']:.0f} MB, "
            f"{median['storage_kb']:.0f} KB of Dagster storage, {median['events_kb']:.1f} KB of it the run's events "
            f"(medians of {args.repeat})"
        )
    trivial = medians.pop("trivial one-op run")
    for name, scrape in medians.items():
        ratios = ", ".join(f"{key} {scrape[key] / trivial[key]:.2f}" for key in scrape)
        print(f"{name} / trivial: {ratios}")


if __name__ == "__main__":
    main()
