"""What the scrape lane costs under ``dagster dev`` on a real Ray head: CPU, storage growth, cadence.

Starts a Ray head on 127.0.0.1 and ``dagster dev`` on a fresh Dagster home (the project's
``dagster.yaml``, the local store, ``RAY_METRICS_TARGETS`` listing the head's endpoints), lets
the sensor run for a warm-up minute, then for ``--minutes`` measures:

* the CPU of every process under ``dagster dev`` (webserver, daemon, code server, run workers),
  as a share of one core; from ``/proc``, sampled twice a second, reaped children included;
* the growth of the Dagster home per day: Dagster's own storage (with the runs and the bytes of
  their events by job), and the local store as it settles once the hourly compaction has folded its
  cycle files (measured on a compacted copy), and the rollups database by the rows it gained (its file
  grows and shrinks in blocks as each refresh rewrites the current hour);
* the start-to-start gaps of each target's scrapes, from the ``raymetrics_pipeline_up`` rows.

``--project DIR`` runs the code of another checkout (``git worktree add /tmp/before <commit>``),
so two designs can be compared on the same machine in one sitting; the machine is shared, so
compare ratios.

Run: ``python benchmarks/scrape_lane.py [--minutes 10] [--project DIR] [--smoke]``.
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.compute as pc
from dagster import DagsterInstance
from dagster._serdes import serialize_value

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from raymetrics_pipeline.ingest.health import TARGET_ATTRIBUTE, UP  # noqa: E402
from raymetrics_pipeline.localstore.arrow import files_dataset  # noqa: E402
from raymetrics_pipeline.localstore.store import LocalStore  # noqa: E402
from raymetrics_pipeline_tests.ray_cluster import RayHead  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of ``root`` and its descendants, live ones by their own time, ended ones through the
    process that reaped them (``cutime``/``cstime``)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, parent = int(entry.name), int(fields[1])
        stats[pid] = fields
        children.setdefault(parent, []).append(pid)
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        if pid in stats:
            total += sum(int(value) for value in stats[pid][11:15])  # utime stime cutime cstime
        pending += children.get(pid, [])
    return total / TICKS


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def sizes_by_part(home: Path) -> dict[str, int]:
    """Bytes under ``home`` by where they go: the pipeline's folders, each Dagster storage file or folder."""
    parts: dict[str, int] = {}
    for path in home.rglob("*"):
        if path.is_file():
            relative = path.relative_to(home).parts
            part = "/".join(relative[:2] if relative[0] in ("history", "raymetrics") else relative[:1])
            parts[part] = parts.get(part, 0) + path.stat().st_size
    return parts


def dagster_bytes(home: Path) -> int:
    """Dagster's own storage: the home but the pipeline's folder."""
    return folder_bytes(home) - folder_bytes(home / "raymetrics")


def compacted_bytes(store: Path) -> int:
    """Bytes of the local store once every hour is folded into one file, as ``maintain_storage`` leaves it."""
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "store"
        shutil.copytree(store, copy)
        LocalStore(copy).compact(now=datetime.now(UTC) + timedelta(hours=1))
        return folder_bytes(copy)


def rollup_rows(database: Path) -> tuple[int, int]:
    """Rows in every table of the rollups database and their bytes compressed (each table as zstd Parquet, about
    what DuckDB's own columnar storage keeps; the file itself grows in 256 KB blocks), read from a copy
    (Dagster's runs may hold the file)."""
    if not database.exists():
        return 0, 0
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / database.name
        shutil.copy(database, copy)
        rows = size = 0
        with duckdb.connect(str(copy), read_only=True) as connection:
            for (name,) in connection.execute("SELECT table_name FROM duckdb_tables()").fetchall():
                rows += connection.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
                export = Path(scratch) / f"{name}.parquet"
                connection.execute(f"COPY \"{name}\" TO '{export}' (FORMAT parquet, COMPRESSION zstd)")
                size += export.stat().st_size
        return rows, size


def runs_by_job(home: Path) -> dict[str, tuple[int, int]]:
    """Runs and the serialized bytes of their events, by job, read through Dagster from the stopped home."""
    os.environ["DAGSTER_HOME"] = str(home)  # the instance's settings refer to it
    with DagsterInstance.from_config(str(home)) as instance:
        by_job: dict[str, tuple[int, int]] = {}
        for run in instance.get_runs():
            runs, size = by_job.get(run.job_name, (0, 0))
            events = sum(len(serialize_value(record)) for record in instance.all_logs(run.run_id))
            by_job[run.job_name] = (runs + 1, size + events)
        return by_job


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape_gaps(store: Path) -> list[float]:
    """Seconds between consecutive scrapes of each target, from the rows the local store holds."""
    columns = ["metric_name", TARGET_ATTRIBUTE, "time_unix_nano"]
    table = files_dataset(LocalStore(store).files()).to_table(columns=columns)
    table = table.filter(pc.equal(table["metric_name"], UP))
    gaps = []
    for target in set(table[TARGET_ATTRIBUTE].to_pylist()):
        times = sorted(table.filter(pc.equal(table[TARGET_ATTRIBUTE], target))["time_unix_nano"].to_pylist())
        gaps += [(later - earlier).total_seconds() for earlier, later in zip(times, times[1:], strict=False)]
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warm-up", type=float, default=60.0, help="seconds before measuring")
    parser.add_argument("--project", type=Path, default=ROOT, help="the checkout whose code dagster dev runs")
    parser.add_argument("--smoke", action="store_true", help="30 s after a 30 s warm-up: does it all run")
    args = parser.parse_args()
    if args.smoke:
        args.minutes, args.warm_up = 0.5, 30.0
    work = Path(tempfile.mkdtemp(prefix="scrape-lane-"))
    home = work / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    with RayHead(work / "ray", loopback_only=True) as head:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "PYTHONPATH": str(args.project),
            "RAY_METRICS_TARGETS": ",".join(head.metrics_targets()),
        }
        env.pop("PARSEABLE_URL", None)
        dagster = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(free_port())],
            cwd=args.project,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            time.sleep(args.warm_up)
            rollups = home / "raymetrics" / "rollups.duckdb"
            if not args.smoke:  # steady state: after the first refresh_rollups (every 10 minutes) made the file
                deadline = time.monotonic() + 660
                while not rollups.exists() and time.monotonic() < deadline:
                    time.sleep(5)
                time.sleep(30)
            cpu_before, started = tree_cpu_seconds(dagster.pid), time.monotonic()
            store = home / "raymetrics" / "store"
            dagster_before = dagster_bytes(home)
            rows_before, _ = rollup_rows(rollups)
            compacted_before = compacted_bytes(store)
            parts_before = sizes_by_part(home)
            cpu = cpu_before
            while time.monotonic() - started < args.minutes * 60:
                time.sleep(0.5)
                cpu = max(cpu, tree_cpu_seconds(dagster.pid))
            elapsed = time.monotonic() - started
            dagster_growth = dagster_bytes(home) - dagster_before
            rows_after, rollups_bytes = rollup_rows(rollups)
            pipeline_growth = (rows_after - rows_before) * rollups_bytes / max(rows_after, 1)  # bytes a row
            rollups_file = rollups.stat().st_size if rollups.exists() else 0  # none yet in a smoke run
            store_growth = compacted_bytes(store) - compacted_before
            parts_after = sizes_by_part(home)
        finally:
            os.killpg(dagster.pid, signal.SIGTERM)
            try:
                dagster.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(dagster.pid, signal.SIGKILL)
    gaps = scrape_gaps(store)
    quantiles = statistics.quantiles(gaps, n=20) if len(gaps) > 1 else [float("nan")] * 19
    print(f"project: {args.project}; {args.minutes:g} min measured after a {args.warm_up:g} s warm-up")
    print(f"CPU of everything under dagster dev: {100 * (cpu - cpu_before) / elapsed:.1f} % of one core")
    grown = {
        "Dagster's own storage": dagster_growth,
        "the local store (compacted)": store_growth,
        "the rollups (rows gained, at their compressed bytes a row)": pipeline_growth,
    }
    for what, growth in grown.items():
        per_day = growth / elapsed * 86400 / 1e6
        print(f"growth of {what}: {growth / 1e6:.2f} MB in {elapsed / 60:.1f} min = {per_day:.0f} MB/day")
    total = sum(grown.values()) / elapsed * 86400 / 1e6
    print(f"growth of the whole home at steady state: {total:.0f} MB/day")
    print(f"rollups.duckdb at the end: {rollups_file / 1e6:.1f} MB (rewritten in place at each refresh)")
    print("files that grew:")
    for part in sorted(parts_after, key=lambda part: parts_before.get(part, 0) - parts_after[part])[:6]:
        print(f"  {part}: +{(parts_after[part] - parts_before.get(part, 0)) / 1e3:.0f} kB")
    print("runs since dagster dev started, and their events:")
    for job, (runs, size) in sorted(runs_by_job(home).items()):
        print(f"  {job}: {runs} runs, {size / 1e3:.0f} kB of events")
    print(
        f"scrape start-to-start gaps: {len(gaps)}, median {statistics.median(gaps):.1f} s, p95 {quantiles[18]:.1f} s, "
        f"max {max(gaps):.1f} s"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
