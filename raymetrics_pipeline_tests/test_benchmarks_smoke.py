"""The benchmarks still run: each one's --smoke, a few seconds, checked for correctness (never for timings)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_thousand_targets_smoke_delivers_every_point_it_expects():
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "thousand_targets.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = re.search(
        r"expected ([\d,]+) data points \(materialization\), ([\d,]+) \(independent\); delivered ([\d,]+)",
        done.stdout,
    )
    assert figures, done.stdout
    expected, independent, delivered = (int(figure.replace(",", "")) for figure in figures.groups())
    assert delivered == expected == independent > 0


def smoke(script: str, *arguments: str, timeout: float = 240) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *arguments], capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_large_target_smoke_delivers_every_point_of_a_large_answer():
    output = smoke("large_target.py", "--series", "200000", "--cycles", "1")
    delivered, expected = re.search(r"delivered so far ([\d,]+) of ([\d,]+) points", output).groups()
    assert delivered == expected != "0", output
    assert "streamed / baseline: peak RSS" in output


def test_local_store_smoke_stores_and_queries_a_few_cycles():
    output = smoke("local_store.py", "--cycles", "8", "--repeat", "1")
    assert re.search(r"8 cycles of one node: 8 files, [\d,]+ rows", output), output
    assert "rollup of one hourly partition" in output


def test_scrape_run_cost_smoke_runs_both_jobs_side_by_side():
    output = smoke("scrape_run_cost.py", "--smoke")
    assert "to Parseable / trivial: cpu_s" in output and "into the local store / trivial: cpu_s" in output, output
    assert "KB of it the run's events" in output, output


@pytest.mark.ray
def test_scrape_lane_smoke_scrapes_a_real_ray_head_under_dagster_dev():
    output = smoke("scrape_lane.py", "--smoke", timeout=300)
    gaps = re.search(r"scrape start-to-start gaps: (\d+), median ([\d.]+) s", output)
    assert gaps and int(gaps.group(1)) > 0 and 14 < float(gaps.group(2)) < 16, output
    assert "scrape_and_ship: 1 runs" in output


def test_encode_throughput_smoke_prints_every_figure_and_ratio():
    output = smoke("encode_throughput.py", "--smoke")
    assert re.search(r"baseline \(.+\)\s+[\d,]+ samples/s", output), output
    for variant in (
        "OTLP/JSON + gzip, steady state",
        "OTLP/JSON + zstd, steady state",
        "OTLP/protobuf + gzip, steady state",
        "OTLP/JSON + gzip, a run's first cycle",
    ):
        assert re.search(rf"{re.escape(variant)}\s+[\d,]+ samples/s\s+[\d.]+x baseline", output), output
