"""No error, log line, metadata or event carries a password or a URL's userinfo, whatever is misconfigured.

Real `dagster` CLI runs of the real jobs, each in its own Dagster home set up like the project's (so compute logs
are captured to files), with one mistake per case and the secret wherever a user might put it; then the runs'
output and every file they left behind (event logs, run storage with its job snapshots, compute logs, the spool,
the rollups database) are searched for the secret in every form it could be kept in.
"""

import base64
import gzip
import os
import shutil
import sqlite3
import subprocess
import sys
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import duckdb
import pytest

from raymetrics_pipeline.resources import resources_from_env
from raymetrics_pipeline.sensors import ray_metrics_sensor
from raymetrics_pipeline_tests.exporters import Exporter
from raymetrics_pipeline_tests.parseable_double import ParseableDouble

ROOT = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).with_name("dagster"))
SECRET = "S3cr3t-Canary-9f2"
# A password with what needs care in URLs, headers and JSON: percent, at, colon, non-ASCII.
CAREFUL_PASSWORD = f"{SECRET}%41@:é"
SCRAPE = ("job", "execute", "-m", "raymetrics_pipeline.definitions", "-j", "scrape_and_ship")
REPORTS = ("job", "execute", "-m", "raymetrics_pipeline.definitions", "-j", "refresh_reports")
VALIDATE = ("definitions", "validate", "-m", "raymetrics_pipeline.definitions")
PARALLEL_RUNS = 4  # twice the cores: runs also wait (12 s of retries when nothing listens); more would only queue
# The settings the sensor checks itself before launching; credentials and reachability only a run can find out.
CHECKED_BY_THE_SENSOR = ("PARSEABLE_URL", "PARSEABLE_STREAM", "RAY_METRICS_TARGETS")


@dataclass(frozen=True)
class Case:
    name: str
    says: str  # in the output or the run's events when it failed (or warned) for the reason the case is about
    env: dict[str, str]
    command: tuple[str, ...] = SCRAPE
    succeeds: bool = False


def misconfigurations(parseable_url: str, exporter_target: str) -> list[Case]:
    """One mistake per case on a working setup: Ray at ``exporter_target``, the Parseable double at
    ``parseable_url`` with the user admin / ``CAREFUL_PASSWORD``. An empty value unsets a variable."""
    host = parseable_url.removeprefix("http://")
    working = {
        "RAY_METRICS_TARGETS": exporter_target,
        "PARSEABLE_URL": parseable_url,
        "PARSEABLE_USERNAME": "admin",
        "PARSEABLE_PASSWORD": CAREFUL_PASSWORD,
    }

    def case(name: str, says: str, command=SCRAPE, succeeds=False, **env: str) -> Case:
        return Case(name, says, {**working, **env}, command, succeeds)

    return [
        case("the careful password, right: the baseline", "RUN_SUCCESS", succeeds=True),
        case("userinfo and a bad scheme", "PARSEABLE_URL", PARSEABLE_URL=f"htp://admin:{SECRET}@{host}"),
        case("userinfo and a space", "PARSEABLE_URL", PARSEABLE_URL=f"http://admin:{SECRET}@127.0.0.1: 80"),
        case("userinfo in an unparsable URL", "PARSEABLE_URL", PARSEABLE_URL=f"http://admin:{SECRET}@[::1"),
        case("userinfo, nothing listening", "PARSEABLE_URL", PARSEABLE_URL=f"http://admin:{SECRET}@127.0.0.1:1"),
        case(
            "the double's own credentials as userinfo, and nowhere else",
            "PARSEABLE_URL",
            PARSEABLE_URL=f"http://admin:{quote(CAREFUL_PASSWORD, safe='')}@{host}",
            PARSEABLE_USERNAME="",
            PARSEABLE_PASSWORD="",
        ),
        case("userinfo without a scheme", "PARSEABLE_URL", PARSEABLE_URL=f"admin:{SECRET}@{host}"),
        case("userinfo with a slash in the password", "PARSEABLE_URL", PARSEABLE_URL=f"http://admin:{SECRET}/x@{host}"),
        case("a token in the query string", "PARSEABLE_URL", PARSEABLE_URL=f"{parseable_url}/?token={SECRET}"),
        case("nothing listening", "cannot reach Parseable at http://127.0.0.1:1", PARSEABLE_URL="http://127.0.0.1:1"),
        case("the careful password for the wrong user (403)", "PARSEABLE_USERNAME", PARSEABLE_USERNAME="intruder"),
        case("an invalid dataset name", "PARSEABLE_STREAM", PARSEABLE_STREAM="ray metrics"),
        case(
            "a target URL with userinfo",
            "RAY_METRICS_TARGETS",
            RAY_METRICS_TARGETS=f"http://u:{SECRET}@{exporter_target}/metrics",
        ),
        case(
            "a dashboard URL with userinfo (allowed: the dashboard may sit behind a login), nothing listening",
            "RAY_DASHBOARD_URL",
            succeeds=True,
            RAY_METRICS_TARGETS="",
            RAY_DASHBOARD_URL=f"http://u:{SECRET}@127.0.0.1:1",
        ),
        # The run succeeds; raymetrics_is_fresh does not pass, its metadata saying what to check.
        case("reports, the wrong user (403)", "PARSEABLE_USERNAME", REPORTS, succeeds=True, PARSEABLE_USERNAME="x"),
        case(
            "validate, userinfo in every URL",
            "All code locations passed validation",
            VALIDATE,
            succeeds=True,
            PARSEABLE_URL=f"http://admin:{SECRET}@{host}",
            RAY_METRICS_TARGETS=f"http://u:{SECRET}@{exporter_target}/metrics",
        ),
    ]


def secret_forms(secret: str = SECRET) -> list[bytes]:
    """The secret as it can appear in bytes: every text form (JSON escapes, repr, percent-encoding) keeps its
    ASCII core as is; base64 (Basic auth: ``user:password``) does not, so also its three base64 alignments."""
    raw = secret.encode()
    forms = [raw]
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + raw + bytes(2))
        forms.append(encoded[-(-8 * shift // 6) : 8 * (shift + len(raw)) // 6])  # the characters only it decides
    return forms


def sqlite_tables(path: Path) -> Iterator[tuple[str, bytes]]:
    """Every table's values, zlib blobs (Dagster's job snapshots) also decompressed."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as database:
        tables = [name for (name,) in database.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            values = [value for row in database.execute(f'SELECT * FROM "{table}"') for value in row]
            blobs = [value for value in values if isinstance(value, bytes)]
            yield f"table {table}", repr(values).encode() + b"".join(blobs)
            for blob in blobs:
                with suppress(zlib.error):
                    yield f"table {table}, zlib", zlib.decompress(blob)


def duckdb_tables(path: Path) -> bytes:
    with duckdb.connect(str(path), read_only=True) as database:
        tables = database.execute("SELECT table_schema, table_name FROM information_schema.tables").fetchall()
        rows = [database.execute(f'SELECT * FROM "{schema}"."{name}"').fetchall() for schema, name in tables]
    return repr(rows).encode()


def contents(path: Path) -> Iterator[tuple[str, bytes]]:
    """A file's bytes, then what they hold decoded: gzip (the spool), SQLite (Dagster's runs, event logs and
    snapshots), DuckDB (the rollups)."""
    data = path.read_bytes()
    yield "bytes", data
    if data.startswith(b"\x1f\x8b"):
        yield "gunzipped", gzip.decompress(data)
    elif data.startswith(b"SQLite format 3\0"):
        yield from sqlite_tables(path)
    elif data[8:12] == b"DUCK":
        yield "rows", duckdb_tables(path)


def kept(outputs: dict[str, str], folder: Path) -> list[tuple[str, bytes]]:
    """Everything a run left, by where: its ``outputs`` (name → text), then every file under ``folder``."""
    places = [(name, text.encode()) for name, text in outputs.items()]
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        places += [(f"{path.relative_to(folder)} ({how})", data) for how, data in contents(path)]
    return places


def holding_the_secret(places: list[tuple[str, bytes]]) -> list[str]:
    return list(dict.fromkeys(where for where, data in places if any(form in data for form in secret_forms())))


def environment(env: dict[str, str], home: Path) -> dict[str, str]:
    """This process's environment without the project's settings, then ``env``, in Dagster home ``home``."""
    kept_here = {k: v for k, v in os.environ.items() if not k.startswith(("PARSEABLE_", "RAY_", "RAYMETRICS_"))}
    return {**kept_here, **{k: v for k, v in env.items() if v}, "DAGSTER_HOME": str(home)}


def run(case: Case, home: Path) -> subprocess.CompletedProcess:
    home.mkdir()
    shutil.copy(ROOT / ".dagster_home" / "dagster.yaml", home)
    return subprocess.run(
        [DAGSTER, *case.command], cwd=ROOT, env=environment(case.env, home), capture_output=True, text=True, timeout=120
    )


def problems_with(case: Case, result: subprocess.CompletedProcess, home: Path) -> list[str]:
    places = kept({"stdout": result.stdout, "stderr": result.stderr}, home)
    problems = [f"the secret is in {where}" for where in holding_the_secret(places)]
    if (result.returncode == 0) != case.succeeds or not any(case.says.encode() in data for _, data in places):
        problems.append(f"exit {result.returncode}, nothing says {case.says!r}:\n{result.stderr[-3000:]}")
    if case.command != VALIDATE and not list(home.rglob("compute_logs/*.err")):
        problems.append("no compute logs captured: the run never reached its step")
    return problems


@pytest.fixture
def ray_and_parseable():
    """A Ray-like metrics endpoint and the Parseable double whose user is admin / ``CAREFUL_PASSWORD``."""
    with (
        Exporter('ray_node_cpu_utilization{ip="127.0.0.1"} 12.5\n') as ray,
        ParseableDouble(password=CAREFUL_PASSWORD) as parseable,
    ):
        yield ray, parseable


def test_no_run_leaves_the_secret_anywhere_whatever_is_misconfigured(ray_and_parseable, tmp_path):
    ray, parseable = ray_and_parseable
    cases = misconfigurations(parseable.url, ray.target)
    homes = [tmp_path / f"home{index}" for index in range(len(cases))]
    with ThreadPoolExecutor(PARALLEL_RUNS) as pool:
        results = list(pool.map(run, cases, homes))
    problems = {
        case.name: problem
        for case, result, home in zip(cases, results, homes, strict=True)
        if (problem := problems_with(case, result, home))
    }
    assert problems == {}
    assert parseable.rows("raymetrics"), "the baseline delivered with the careful password"


def test_the_sensor_never_says_the_secret(ray_and_parseable, instance, monkeypatch, tmp_path):
    """The sensor judges the same settings before any run; its skip reasons reach the UI and the tick history,
    the dataset's location the asset's metadata."""
    ray, parseable = ray_and_parseable
    for case in misconfigurations(parseable.url, ray.target):
        for name in ("PARSEABLE_USERNAME", "PARSEABLE_PASSWORD", "RAY_DASHBOARD_URL"):  # resolved as EnvVar
            monkeypatch.setenv(name, case.env.get(name, ""))
        resources = resources_from_env(environment(case.env, tmp_path))
        result = ray_metrics_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources))
        said = f"{result.skip_message} {result.run_requests} {resources['backend'].location}".encode()
        assert not holding_the_secret([("sensor", said)]), (case.name, said)
        if case.says in CHECKED_BY_THE_SENSOR:
            assert case.says in (result.skip_message or ""), (case.name, result.skip_message)


def test_the_search_finds_the_secret_in_each_form_it_is_kept_in(tmp_path):
    """Not vacuous: the secret escaped in JSON, gzipped, in a zlib blob in SQLite, and in a Basic auth header."""
    (tmp_path / "event.json").write_text(repr({"message": CAREFUL_PASSWORD.encode("unicode_escape").decode()}))
    (tmp_path / "spool.json.gz").write_bytes(gzip.compress(SECRET.encode()))
    with closing(sqlite3.connect(tmp_path / "runs.db")) as database, database:
        database.execute("CREATE TABLE snapshots (body BLOB)")
        database.execute("INSERT INTO snapshots VALUES (?)", (zlib.compress(f'{{"url": "{SECRET}"}}'.encode()),))
    header = base64.b64encode(f"intruder:{CAREFUL_PASSWORD}".encode()).decode()
    found = holding_the_secret(kept({"stderr": f"Authorization: Basic {header}"}, tmp_path))
    assert found == ["stderr", "event.json (bytes)", "runs.db (table snapshots, zlib)", "spool.json.gz (gunzipped)"]
