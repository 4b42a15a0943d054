"""Capture the project's own Ray fixtures from a real Ray head.

    python tools/capture_fixtures.py --out raymetrics_pipeline_tests/fixtures/ray-2.60 --rounds 4

(from the repository root, with the ``dev`` extra installed: it needs Ray).

For each session (``session_a``, ``session_b``: two separate ``ray start``
runs, so two ``SessionName`` values):

1. start a :class:`RayHead` (free ports, temp dir under /tmp);
2. round 0: scrape every discovered endpoint once on the idle cluster;
3. submit ``--jobs`` jobs running ``ray_workload.py`` (concurrently);
4. keep scraping every discovered endpoint every ``--interval`` s (rounds are
   anchored to round 0: round k starts at t0 + k * interval) until at least
   ``--rounds`` rounds are done, every job has ended, and one round started at
   least ``--settle`` s after the last job ended;
5. copy Ray's discovery file beside the scrapes.

Every body is saved exactly as served (``Accept-Encoding: identity``, bytes
untouched) as ``scrape_<unix_ns>_<port>.txt``, ``unix_ns`` being the wall
clock when that response had fully arrived. ``manifest.json`` records ports,
session names, job ids and every scrape; ``README.md`` is (re)written with the
facts checked in the captured files. The script exits non-zero if a fact the
tests rely on is missing (FAILED tasks, object store bytes, FINISHED tasks,
job durations, node identity labels).

Run sessions, named ``repeat`` and ``overlap`` (to a folder of their own)::

    python tools/capture_fixtures.py --out raymetrics_pipeline_tests/fixtures/ray-2.60-runs \
        --sessions repeat,overlap --settle 22 --hold-seconds 20 --holders 8

* ``repeat``: the workload's own arguments, ``--repeat`` times, one job after
  another: the next is submitted right after the first round that starts at
  least ``--gap`` s after the previous one ended (Ray drops a gauge 20 s after
  its last report, so that round sees the ended job's series gone);
* ``overlap``: one job per ``;``-separated argument list in ``--overlap-jobs``,
  ``--stagger`` s apart, so they run at the same time.

As each job is seen ended, and once more after the last round, Ray's own
figures are saved in ``<session>/truth.json``: the Jobs API list
(``GET /api/jobs/``) and the State API task summary
(``GET /api/v0/tasks/summarize``) per job
(``?filter_keys=job_id&filter_predicates=%3D&filter_values=<job id>``) and unfiltered. Besides
the facts above, a run session must show: every job running in two scrape
rounds or more, a scrape with 6 or more ``WORKER_HEAP`` series, non-empty
summaries; in ``repeat`` one entrypoint whose ``square`` FINISHED series comes
back after an absence once per job; in ``overlap`` jobs overlapping in time,
one of them with failing tasks.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from raymetrics_pipeline_tests.ray_cluster import DISCOVERY_FILE_NAME, RayHead  # noqa: E402
from raymetrics_pipeline_tests.ray_workload import add_workload_arguments  # noqa: E402

WORKLOAD = ROOT / "raymetrics_pipeline_tests" / "ray_workload.py"
SCRAPE_RE = re.compile(r"^scrape_(\d+)_(\d+)\.txt$")
SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- capture


def scrape_round(head: RayHead, client: httpx.Client, out: Path, round_no: int) -> list[dict]:
    records = []
    for target in head.metrics_targets():  # re-read discovery every round
        port = int(target.rsplit(":", 1)[1])
        rec = {"round": round_no, "target": target, "port": port}
        try:
            r = client.get(f"http://{target}/metrics", headers={"Accept-Encoding": "identity"})
            ns = time.time_ns()
        except httpx.HTTPError as e:
            rec["error"] = repr(e)
            log(f"  round {round_no}: {target} failed: {e!r}")
            records.append(rec)
            continue
        rec.update(status=r.status_code, content_type=r.headers.get("content-type"), unix_ns=ns)
        if r.status_code == 200:
            name = f"scrape_{ns}_{port}.txt"
            (out / name).write_bytes(r.content)
            rec.update(file=name, bytes=len(r.content))
        else:
            log(f"  round {round_no}: {target} HTTP {r.status_code}")
        records.append(rec)
    log(
        f"  round {round_no}: "
        + ", ".join(f"{x['port']}:{x.get('bytes', x.get('error', x.get('status')))}" for x in records)
    )
    return records


def workload_entrypoint(args) -> str:
    """``python ray_workload.py ...`` with the workload knobs in ``args`` (holders only when asked for)."""
    entry = (
        f"python {WORKLOAD.name} --tasks {args.tasks} --failing {args.failing} --actor-calls {args.actor_calls} "
        f"--objects {args.objects} --object-mb {args.object_mb} --hold-seconds {args.hold_seconds}"
    )
    if args.holders:
        entry += (
            f" --holders {args.holders} --holder-mb {args.holder_mb} --holder-objects {args.holder_objects}"
            f" --holder-kib {args.holder_kib}"
        )
    return entry


def head_facts(head: RayHead) -> dict:
    return {
        "session_name": head.session_name,
        "node_ip": head.node_ip,
        "gcs_address": head.address,
        "startup_seconds": round(head.startup_seconds, 1),
        "ports": {
            "gcs": head.gcs_port,
            "dashboard": head.dashboard_port,
            "metrics_export": head.metrics_export_port,
            "autoscaler_metrics": head.autoscaler_metrics_port,
            "dashboard_metrics": head.dashboard_metrics_port,
        },
        "discovery_file_path_in_ray": str(head.discovery_file.relative_to(head.temp_dir.parent)),
    }


def session_kind(name: str) -> str:
    """``repeat`` and ``overlap`` are the run sessions; any other name is the original concurrent kind."""
    return name if name in RUN_KINDS else "concurrent"


def capture_session(args, name: str, out_dir: Path) -> dict:
    out = out_dir / name
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("scrape_*.txt")) + [out / DISCOVERY_FILE_NAME]:
        old.unlink(missing_ok=True)

    work = Path(tempfile.mkdtemp(prefix="rhcap-", dir="/tmp"))
    wl_dir = work / "workload"
    wl_dir.mkdir()
    shutil.copy(WORKLOAD, wl_dir / WORKLOAD.name)
    entry = workload_entrypoint(args)
    info: dict = {"folder": name}
    try:
        with RayHead(work / "head", startup_timeout=180) as head:
            log(f"{name}: {head} up in {head.startup_seconds:.1f} s; discovery {head.discovered_targets()}")
            info.update(head_facts(head), entrypoint=entry, scrapes=[], jobs=[])
            client = httpx.Client(timeout=15.0, trust_env=False)
            t0 = time.monotonic()
            info["scrapes"] += scrape_round(head, client, out, 0)
            subs = [head.submit_job(entry, working_dir=wl_dir) for _ in range(args.jobs)]
            submitted_ns = time.time_ns()
            log(f"{name}: submitted {subs}")
            ended_at: float | None = None
            k = 0
            while True:
                statuses = [head.job_status(s) for s in subs]
                if ended_at is None and all(s in ("SUCCEEDED", "FAILED", "STOPPED") for s in statuses):
                    ended_at = time.monotonic()
                    log(f"{name}: jobs ended {statuses} at +{ended_at - t0:.1f} s")
                done = (
                    k + 1 >= args.rounds and ended_at is not None and (t0 + k * args.interval) - ended_at >= args.settle
                )
                if done:
                    break
                if k + 1 >= args.rounds + args.max_extra_rounds:
                    raise RuntimeError(f"jobs {statuses} not done after {k + 1} rounds")
                k += 1
                delay = t0 + k * args.interval - time.monotonic()
                # check job status while waiting, so `ended_at` is accurate
                while delay > 0:
                    time.sleep(min(1.0, delay))
                    if ended_at is None and all(head.job_status(s) in ("SUCCEEDED", "FAILED", "STOPPED") for s in subs):
                        ended_at = time.monotonic()
                        log(f"{name}: jobs ended at +{ended_at - t0:.1f} s")
                    delay = t0 + k * args.interval - time.monotonic()
                info["scrapes"] += scrape_round(head, client, out, k)
            client.close()
            for s in subs:
                status = head.wait_job(s, timeout=60, check=False)
                ji = head.job_info(s)
                logs = head.job_logs(s)
                result = None
                for line in logs.splitlines():
                    if line.startswith("{") and '"job_id"' in line:
                        result = json.loads(line)
                info["jobs"].append(
                    {
                        "submission_id": s,
                        "job_id": ji.job_id,
                        "status": status,
                        "start_time_ms": ji.start_time,
                        "end_time_ms": ji.end_time,
                        "result": result,
                    }
                )
                if status != "SUCCEEDED":
                    raise RuntimeError(f"job {s} {status}:\n{logs[-3000:]}")
            info["submitted_unix_ns"] = submitted_ns
            info["jobs_ended_after_round0_s"] = round(ended_at - t0, 1)
            shutil.copyfile(head.discovery_file, out / DISCOVERY_FILE_NAME)
            info["sd_endpoint"] = head.service_discovery_http()
            info["discovery_file"] = json.loads((out / DISCOVERY_FILE_NAME).read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return info


# --------------------------------------------------------------------------- run sessions (repeat, overlap)

RUN_KINDS = ("repeat", "overlap")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
TRUTH_FILE = "truth.json"
JOBS_PATH = "/api/jobs/"
TASK_SUMMARY_PATH = "/api/v0/tasks/summarize"
DEFAULT_OVERLAP_JOBS = (
    "--tasks 300 --failing 30 --actor-calls 60 --objects 6 --object-mb 20 --hold-seconds 45 --holders 6;"
    "--tasks 120 --failing 0 --actor-calls 20 --objects 2 --object-mb 10 --hold-seconds 15;"
    "--tasks 80 --failing 8 --actor-calls 10 --objects 2 --object-mb 10 --hold-seconds 20"
)


def job_filter(job_id: str) -> dict[str, str]:
    """Query parameters that restrict a State API call to one job (Ray 2.60).

    ``ray/dashboard/state_api_utils.py`` (``_get_filters_from_req``) reads the repeated
    ``filter_keys`` / ``filter_predicates`` / ``filter_values``; ``ray/util/state/state_manager.py``
    (``_build_task_events_request``) turns ``job_id`` with ``=`` into the GCS's own job filter.
    """
    return {"filter_keys": "job_id", "filter_predicates": "=", "filter_values": job_id}


def dashboard_json(client: httpx.Client, head: RayHead, path: str, params: dict | None = None):
    """``GET <dashboard><path>``, the body parsed as JSON (nothing else changed)."""
    r = client.get(head.dashboard_url + path, params=params, timeout=60.0)
    r.raise_for_status()
    return r.json()


def truth_snapshot(client: httpx.Client, head: RayHead, last_round: int, job_ids: list[str]) -> dict:
    """What Ray says now: the Jobs API list, the task summary per job and unfiltered."""
    snap = {"taken_unix_ns": time.time_ns(), "last_round_before": last_round}
    snap["jobs"] = dashboard_json(client, head, JOBS_PATH)
    snap["tasks_summary_by_job"] = {j: dashboard_json(client, head, TASK_SUMMARY_PATH, job_filter(j)) for j in job_ids}
    snap["tasks_summary_all"] = dashboard_json(client, head, TASK_SUMMARY_PATH)
    return snap


def run_entrypoints(args, kind: str) -> list[str]:
    if kind == "repeat":
        return [workload_entrypoint(args)] * args.repeat
    return [f"python {WORKLOAD.name} {a.strip()}" for a in args.overlap_jobs.split(";") if a.strip()]


def capture_run_session(args, name: str, out_dir: Path) -> dict:
    """One ``ray start`` with several jobs, submitted as the session's kind says:

    * ``repeat``: ``--repeat`` times the same entrypoint; the first right after round 0, each next one right
      after the first round that starts at least ``--gap`` s after the previous job ended;
    * ``overlap``: the ``--overlap-jobs`` entrypoints, the first right after round 0, job ``i`` ``i * --stagger`` s
      after it.

    Rounds as in :func:`capture_session`; as soon as a job is seen ended (polled about every 0.5 s), Ray's own
    figures are taken (:func:`truth_snapshot`), and once more after the last round; all go to ``truth.json``.
    """
    kind = session_kind(name)
    out = out_dir / name
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("scrape_*.txt")) + [out / DISCOVERY_FILE_NAME, out / TRUTH_FILE]:
        old.unlink(missing_ok=True)

    work = Path(tempfile.mkdtemp(prefix="rhcap-", dir="/tmp"))
    wl_dir = work / "workload"
    wl_dir.mkdir()
    shutil.copy(WORKLOAD, wl_dir / WORKLOAD.name)
    jobs: list[dict] = [{"entrypoint": e} for e in run_entrypoints(args, kind)]
    if not jobs:
        raise ValueError(f"{name}: no jobs to run")
    info: dict = {"folder": name, "kind": kind}
    truth: dict = {
        "session": name,
        "kind": kind,
        "requests": {
            "jobs": f"GET <dashboard>{JOBS_PATH}",
            "tasks_summary_by_job": f"GET <dashboard>{TASK_SUMMARY_PATH}?"
            + "&".join(f"{k}={v}" for k, v in job_filter("<job_id>").items()),
            "tasks_summary_all": f"GET <dashboard>{TASK_SUMMARY_PATH}",
        },
        "after_job_end": [],
    }
    try:
        with RayHead(work / "head", startup_timeout=180) as head:
            log(f"{name}: {head} up in {head.startup_seconds:.1f} s; discovery {head.discovered_targets()}")
            info.update(head_facts(head), entrypoint=jobs[0]["entrypoint"], scrapes=[], jobs=[])
            truth.update(session_name=head.session_name, dashboard_port=head.dashboard_port)
            client = httpx.Client(timeout=15.0, trust_env=False)
            k = 0

            def submit(i: int) -> None:
                j = jobs[i]
                j["submission_id"] = head.submit_job(j["entrypoint"], working_dir=wl_dir)
                j.update(submitted_unix_ns=time.time_ns(), submitted_mono=time.monotonic(), submitted_after_round=k)
                log(f"{name}: submitted job {i} {j['submission_id']} at +{j['submitted_mono'] - t0:.1f} s")

            def poll() -> None:
                for j in jobs:
                    if "submission_id" in j and "ended_mono" not in j:
                        status = head.job_status(j["submission_id"])
                        if status in TERMINAL:
                            j.update(ended_mono=time.monotonic(), ended_unix_ns=time.time_ns(), status=status)
                            j["job_id"] = head.job_info(j["submission_id"]).job_id
                            snap = truth_snapshot(client, head, k, [j["job_id"]] if j["job_id"] else [])
                            truth["after_job_end"].append({"submission_id": j["submission_id"], **snap})
                            seen = j["ended_mono"] - t0
                            log(f"{name}: {j['submission_id']} ({j['job_id']}) {status} at +{seen:.1f} s")
                if kind == "overlap":
                    for i, j in enumerate(jobs):
                        if (
                            "submission_id" not in j
                            and time.monotonic() >= jobs[0]["submitted_mono"] + i * args.stagger
                        ):
                            submit(i)

            t0 = time.monotonic()
            info["scrapes"] += scrape_round(head, client, out, 0)
            submit(0)
            max_rounds = args.rounds + args.max_extra_rounds * len(jobs)
            while True:
                poll()
                ended = [j["ended_mono"] for j in jobs if "ended_mono" in j]
                if (
                    k + 1 >= args.rounds
                    and len(ended) == len(jobs)
                    and (t0 + k * args.interval) - max(ended) >= args.settle
                ):
                    break
                if k + 1 >= max_rounds:
                    raise RuntimeError(f"{name}: jobs not done after {k + 1} rounds: {jobs}")
                k += 1
                while (delay := t0 + k * args.interval - time.monotonic()) > 0:
                    time.sleep(min(0.5, delay))
                    poll()
                info["scrapes"] += scrape_round(head, client, out, k)
                if kind == "repeat":
                    i = next((i for i, j in enumerate(jobs) if "submission_id" not in j), None)
                    prev = jobs[i - 1] if i else None
                    if prev and "ended_mono" in prev and t0 + k * args.interval - prev["ended_mono"] >= args.gap:
                        submit(i)
            job_ids = [j["job_id"] for j in jobs if j.get("job_id")]
            final = truth_snapshot(client, head, k, job_ids)
            listed = sorted({x["job_id"] for x in final["jobs"] if x.get("job_id")} - set(job_ids))
            for job_id in listed:  # e.g. the dashboard's own driver, if the Jobs API lists it
                final["tasks_summary_by_job"][job_id] = dashboard_json(
                    client, head, TASK_SUMMARY_PATH, job_filter(job_id)
                )
            truth["final"] = final
            client.close()
            for j in jobs:
                logs = head.job_logs(j["submission_id"])
                ji = head.job_info(j["submission_id"])
                result = None
                for line in logs.splitlines():
                    if line.startswith("{") and '"job_id"' in line:
                        result = json.loads(line)
                info["jobs"].append(
                    {
                        "submission_id": j["submission_id"],
                        "job_id": ji.job_id,
                        "entrypoint": j["entrypoint"],
                        "status": j["status"],
                        "start_time_ms": ji.start_time,
                        "end_time_ms": ji.end_time,
                        "submitted_unix_ns": j["submitted_unix_ns"],
                        "submitted_after_round": j["submitted_after_round"],
                        "submitted_after_round0_s": round(j["submitted_mono"] - t0, 1),
                        "seen_ended_unix_ns": j["ended_unix_ns"],
                        "seen_ended_after_round0_s": round(j["ended_mono"] - t0, 1),
                        "result": result,
                    }
                )
                if j["status"] != "SUCCEEDED":
                    raise RuntimeError(f"job {j['submission_id']} {j['status']}:\n{logs[-3000:]}")
            info["jobs_ended_after_round0_s"] = round(max(j["ended_mono"] for j in jobs) - t0, 1)
            shutil.copyfile(head.discovery_file, out / DISCOVERY_FILE_NAME)
            info["sd_endpoint"] = head.service_discovery_http()
            info["discovery_file"] = json.loads((out / DISCOVERY_FILE_NAME).read_text())
            info["truth_file"] = TRUTH_FILE
            (out / TRUTH_FILE).write_text(json.dumps(truth, indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return info


# --------------------------------------------------------------------------- facts


def parse_body(text: str):
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        if not m:
            continue
        labels = dict(LABEL_RE.findall(m.group(2) or ""))
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        yield m.group(1), labels, value


def check_facts(out_dir: Path, sessions: list[str]) -> tuple[dict, list[str]]:
    facts: dict = {"sessions": {}}
    problems: list[str] = []
    for name in sessions:
        d = out_dir / name
        f: dict = defaultdict(set)
        rounds_with_objects = 0
        rounds_with_failed = 0
        rounds_with_finished = 0
        by_ts = sorted((int(m.group(1)), int(m.group(2)), p) for p in d.iterdir() if (m := SCRAPE_RE.match(p.name)))
        max_object_bytes = 0.0
        tasks_series: list[int] = []
        names_per_round: list[int] = []
        heap_series: list[int] = []  # ray_object_store_memory{Location="WORKER_HEAP"} series per agent scrape
        heap_nonzero: list[int] = []
        bytes_by_location: list[dict[str, float]] = []  # ray_object_store_memory summed by Location per agent scrape
        square_finished: list[float | None] = []  # ray_tasks{Name="square",State="FINISHED"} per agent scrape
        for _ns, port, p in by_ts:
            text = p.read_text()
            obj = 0.0
            n_tasks = 0
            failed = finished = False
            samples = list(parse_body(text))
            agent = any(m.startswith("ray_node_") for m, _, _ in samples)
            for metric, labels, value in samples:
                if agent:
                    if metric == "target_info":
                        f["target_info"].add(port)
                    elif not (
                        "otel_scope_name" in labels
                        and labels.get("otel_scope_version") == ""
                        and labels.get("otel_scope_schema_url") == ""
                    ):
                        f["agent_series_without_otel_scope"].add(metric)
                if any(v == "" for v in labels.values()):
                    f["empty_label_keys"].update(k for k, v in labels.items() if v == "")
                f["ports"].add(port)
                if "SessionName" in labels:
                    f["session_names"].add(labels["SessionName"])
                if "JobId" in labels:
                    f["job_ids"].add(labels["JobId"])
                if metric.startswith("ray_node_"):
                    f["ray_node_label_keys"].update(labels)
                    if "ip" in labels:
                        f["ray_node_ip"].add(labels["ip"])
                if metric in ("ray_tasks", "ray_object_store_memory") and "NodeAddress" in labels:
                    f["node_address"].add(labels["NodeAddress"])
                if metric == "ray_tasks":
                    n_tasks += 1
                if metric == "ray_tasks" and value > 0:
                    f["task_states"].add(labels.get("State", ""))
                    failed |= labels.get("State") == "FAILED"
                    finished |= labels.get("State") == "FINISHED"
                if metric == "ray_object_store_memory":
                    obj += value
                if metric == "ray_job_duration_s":
                    f["job_duration_job_ids"].add(labels.get("JobId", ""))
                if metric.startswith("autoscaler_"):
                    f["autoscaler_port"].add(port)
                if metric.startswith("ray_dashboard_"):
                    f["dashboard_port"].add(port)
            max_object_bytes = max(max_object_bytes, obj)
            if agent:
                tasks_series.append(n_tasks)
                names_per_round.append(len({m for m, _, _ in samples}))
                heap = [
                    v for m, lb, v in samples if m == "ray_object_store_memory" and lb.get("Location") == "WORKER_HEAP"
                ]
                heap_series.append(len(heap))
                heap_nonzero.append(sum(v > 0 for v in heap))
                by_loc: dict[str, float] = defaultdict(float)
                for m, lb, v in samples:
                    if m == "ray_object_store_memory":
                        by_loc[lb.get("Location", "")] += v
                bytes_by_location.append(dict(sorted(by_loc.items())))
                sq = [
                    v
                    for m, lb, v in samples
                    if m == "ray_tasks" and lb.get("Name") == "square" and lb.get("State") == "FINISHED"
                ]
                square_finished.append(sum(sq) if sq else None)
            rounds_with_objects += obj >= 100 * 1024 * 1024
            rounds_with_failed += failed
            rounds_with_finished += finished
        files = [p for _, _, p in by_ts]
        s = {k: sorted(v) for k, v in f.items()}
        s.update(
            files=len(files),
            bytes=sum(p.stat().st_size for p in files),
            scrapes_with_object_store_ge_100MiB=rounds_with_objects,
            max_object_store_memory_bytes=int(max_object_bytes),
            scrapes_with_failed_tasks=rounds_with_failed,
            scrapes_with_finished_tasks=rounds_with_finished,
            ray_tasks_series_per_round=tasks_series,
            agent_metric_names_per_round=names_per_round,
            worker_heap_series_per_round=heap_series,
            worker_heap_nonzero_series_per_round=heap_nonzero,
            object_store_bytes_by_location_per_round=bytes_by_location,
            square_finished_per_round=square_finished,
        )
        facts["sessions"][name] = s
        for cond, msg in [
            (files, "no scrape files"),
            ((d / DISCOVERY_FILE_NAME).exists(), "no discovery file"),
            (len(s.get("session_names", [])) == 1, f"SessionName values {s.get('session_names')}"),
            (rounds_with_failed, 'no ray_tasks{State="FAILED"} > 0'),
            (rounds_with_finished, 'no ray_tasks{State="FINISHED"} > 0'),
            (rounds_with_objects, "no scrape with >= 100 MiB in ray_object_store_memory"),
            (s.get("job_duration_job_ids"), "no ray_job_duration_s"),
            ("ip" in s.get("ray_node_label_keys", []), "ray_node_* without ip label"),
            (s.get("node_address"), "no NodeAddress on ray_tasks/ray_object_store_memory"),
            (s.get("autoscaler_port"), "no autoscaler_* metrics"),
            (s.get("dashboard_port"), "no ray_dashboard_* metrics"),
            (s.get("target_info"), "no target_info on the metrics-agent port"),
            (
                not [m for m in s.get("agent_series_without_otel_scope", []) if m.startswith("ray_")],
                f"ray_* series without otel_scope_*: {s.get('agent_series_without_otel_scope')}",
            ),
            ({"JobId", "WorkerId"} <= set(s.get("empty_label_keys", [])), "no empty JobId/WorkerId labels"),
        ]:
            if not cond:
                problems.append(f"{name}: {msg}")
    return facts, problems


def summary_counts(resp: dict | None) -> dict[str, dict]:
    """``{name: {"type": ..., "state_counts": {...}}}`` from a raw ``/api/v0/tasks/summarize`` answer."""
    out: dict[str, dict] = {}
    if not resp:
        return out
    for node in resp["data"]["result"]["result"]["node_id_to_summary"].values():
        for key, x in node["summary"].items():
            out[key] = {"type": x["type"], "state_counts": dict(x["state_counts"])}
    return out


def run_rounds(out_dir: Path, name: str, sess: dict) -> list[dict]:
    """Per scrape round of a run session: who answered, and what the metrics-agent scrape shows."""
    agent_port = sess["ports"]["metrics_export"]
    by_round: dict[int, list[dict]] = defaultdict(list)
    for x in sess["scrapes"]:
        by_round[x["round"]].append(x)
    t0 = min(x["unix_ns"] for x in sess["scrapes"] if "unix_ns" in x)
    rows = []
    for k in sorted(by_round):
        recs = by_round[k]
        row: dict = {
            "round": k,
            "answered": sorted(x["port"] for x in recs if x.get("file")),
            "failed": sorted(f"{x['port']}: {x.get('error', x.get('status'))}" for x in recs if not x.get("file")),
        }
        times = [x["unix_ns"] for x in recs if "unix_ns" in x]
        row["t_s"] = round((min(times) - t0) / 1e9, 1) if times else None
        row["jobs_running"] = [
            j["job_id"]
            for j in sess["jobs"]
            if times
            and j["start_time_ms"] * 1_000_000 <= min(times)
            and (j["end_time_ms"] or 0) * 1_000_000 >= min(times)
        ]
        agent = next((x for x in recs if x["port"] == agent_port and x.get("file")), None)
        if agent is not None:
            samples = list(parse_body((out_dir / name / agent["file"]).read_text()))
            heap = [v for m, lb, v in samples if m == "ray_object_store_memory" and lb.get("Location") == "WORKER_HEAP"]
            by_loc: dict[str, float] = defaultdict(float)
            for m, lb, v in samples:
                if m == "ray_object_store_memory":
                    by_loc[lb.get("Location", "")] += v
            terminal = {
                (lb.get("Name", ""), lb["State"]): v
                for m, lb, v in samples
                if m == "ray_tasks" and lb.get("State") in ("FINISHED", "FAILED")
            }
            row.update(
                ray_tasks_series=sum(m == "ray_tasks" for m, _, _ in samples),
                worker_heap_series=len(heap),
                worker_heap_nonzero=sum(v > 0 for v in heap),
                object_store_bytes_by_location=dict(sorted(by_loc.items())),
                square_finished=terminal.get(("square", "FINISHED")),
                fail_failed=terminal.get(("fail", "FAILED")),
            )
        rows.append(row)
    return rows


def check_run_facts(out_dir: Path, name: str, sess: dict, rows: list[dict]) -> list[str]:
    """What the tests rely on in a run session; one message per missing fact."""
    problems = []
    jobs = sess["jobs"]
    truth_path = out_dir / name / TRUTH_FILE
    if not truth_path.exists():
        return [f"{name}: no {TRUTH_FILE}"]
    truth = json.loads(truth_path.read_text())
    final = truth.get("final") or {}
    listed = {x.get("submission_id") for x in final.get("jobs", [])}
    for j in jobs:
        if j["submission_id"] not in listed:
            problems.append(f"{name}: {j['submission_id']} not in the final Jobs API list")
        if not summary_counts(final["tasks_summary_by_job"].get(j["job_id"])):
            problems.append(f"{name}: empty task summary for {j['job_id']}")
        running = [r for r in rows if j["job_id"] in r["jobs_running"] and r.get("ray_tasks_series") is not None]
        if len(running) < 2:
            problems.append(f"{name}: job {j['job_id']} running in {len(running)} scrape rounds (< 2)")
    if len(truth["after_job_end"]) != len(jobs):
        problems.append(f"{name}: {len(truth['after_job_end'])} after-job-end snapshots for {len(jobs)} jobs")
    if max((r.get("worker_heap_series") or 0) for r in rows) < 6:
        problems.append(f"{name}: no scrape with >= 6 WORKER_HEAP series")
    if sess["kind"] == "repeat":
        if len({j["entrypoint"] for j in jobs}) != 1 or len(jobs) < 2:
            problems.append(f"{name}: not one entrypoint run several times")
        sq = [r.get("square_finished") for r in rows if "ray_tasks_series" in r]
        present = [v is not None for v in sq]
        returns = sum(
            1 for a, b in zip(present, present[1:], strict=False) if not a and b
        )  # absent, then present again
        if returns < len(jobs):
            problems.append(f"{name}: square FINISHED appears {returns} times from absence (want {len(jobs)})")
    else:
        spans = sorted((j["start_time_ms"], j["end_time_ms"]) for j in jobs)
        if not any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False)):
            problems.append(f"{name}: no two jobs overlap in time")
        if not any((j["result"] or {}).get("tasks_failed") for j in jobs):
            problems.append(f"{name}: no job with failing tasks")
    return problems


# --------------------------------------------------------------------------- README


def quoted(values) -> str:
    return ", ".join(f"`{json.dumps(x)}`" for x in values)


def write_readme(out_dir: Path, args, manifest: dict, facts: dict) -> None:
    import ray

    sess = manifest["sessions"]
    total_mb = sum(s["bytes"] for s in facts["sessions"].values()) / 1e6
    content_types = sorted({x["content_type"] for s in sess.values() for x in s["scrapes"] if x.get("content_type")})
    sd_same = all(x.get("sd_endpoint") == x.get("discovery_file") for x in sess.values())
    no_scope = sorted({m for f in facts["sessions"].values() for m in f.get("agent_series_without_otel_scope", [])})
    lines = [
        f"# Real Ray {ray.__version__} scrapes (the project's own fixtures)",
        "",
        "Made by `tools/capture_fixtures.py` against a real single-node Ray head started by",
        "`raymetrics_pipeline_tests/ray_cluster.py` (`RayHead`). Bodies are byte-for-byte what Ray served;",
        "nothing was edited.",
        "",
        "Command:",
        "",
        "```",
        manifest["command"],
        "```",
        "",
        f"Captured {manifest['captured_at']} with Ray {ray.__version__}, Python {sys.version.split()[0]}, on a "
        f"{manifest['cpus']}-core Linux machine; total {total_mb:.1f} MB.",
        "",
        "## Layout",
        "",
        "- `session_a/`, `session_b/`: two cluster lifetimes (two `ray start`, so two `SessionName` values).",
        "  - `scrape_<unix_ns>_<port>.txt`: body of `GET http://127.0.0.1:<port>/metrics` for every target in Ray's",
        "    discovery; `<unix_ns>` is the wall-clock time at which that response had fully arrived, so the",
        "    files of one round have slightly different timestamps (a few ms apart; rounds are",
        f"    {args.interval:g} s apart). Requests were sent with `Accept-Encoding: identity`; response",
        "    `Content-Type`: " + ", ".join(f"`{c}`" for c in content_types) + ".",
        "  - `prom_metrics_service_discovery.json`: Ray's own Prometheus file-SD file, copied at the end of the",
        "    session.",
        "    Ray 2.60 writes it to `<temp-dir>/session_<name>/prom_metrics_service_discovery.json` (and symlinks",
        "    `<temp-dir>/prom_metrics_service_discovery.json` to it). Its hosts are the machine's interface address",
        "    (Ray turns `--node-ip-address=127.0.0.1` into it), the endpoints also answer on 127.0.0.1.",
        "    `GET <dashboard>/api/prometheus/sd` returned "
        + ("the same list" if sd_same else "A DIFFERENT list")
        + " (both are in `manifest.json`).",
        "- `manifest.json`: per session the ports, `SessionName`, job submission ids/JobIds/status, and every scrape",
        "  (round, port, unix_ns, bytes).",
        "",
        "## Cluster",
        "",
        "`ray start --head --node-ip-address=127.0.0.1 --dashboard-host=127.0.0.1 --include-dashboard=true",
        "--num-cpus=2 --temp-dir=<tmp>/ray --port=<free> --dashboard-port=<free> --metrics-export-port=<free> ...`",
        "with every other port free too, `AUTOSCALER_METRIC_PORT`/`DASHBOARD_METRIC_PORT` set to free ports (Ray's",
        "defaults are 44217 and 44227) and `RAY_USAGE_STATS_ENABLED=0`. Ports are random per run, so they differ",
        "between the sessions:",
        "",
        "| session | SessionName | node address | metrics agent (`ray_*`, `ray_node_*`) "
        "| autoscaler (`autoscaler_*`) | dashboard (`ray_dashboard_*`, `ray_component_*`) | rounds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in sess.items():
        p = s["ports"]
        rounds = len({x["round"] for x in s["scrapes"]})
        lines.append(
            f"| `{name}` | `{s['session_name']}` | `{s['node_ip']}` | {p['metrics_export']} | "
            f"{p['autoscaler_metrics']} | {p['dashboard_metrics']} | {rounds} |"
        )
    first = next(iter(sess.values()))
    lines += [
        "",
        "## Workload",
        "",
        f"Round 0 is scraped on the idle cluster; right after it, {args.jobs} jobs are submitted at once through the",
        f"dashboard's job API, each running `{first['entrypoint']}`",
        f"(`ray_workload.py`): {args.tasks} short tasks that succeed, {args.failing} tasks that raise",
        f"(`max_retries=0`), one actor with {args.actor_calls} method calls, and {args.objects} objects of",
        f"{args.object_mb} MiB put in the object store and kept referenced for {args.hold_seconds:g} s.",
        "Scraping goes on",
        f"every {args.interval:g} s until at least {args.rounds} rounds are done and one round started at least",
        f"{args.settle:g} s after both jobs ended.",
        "",
        "| session | submission id | JobId | status | driver result |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, s in sess.items():
        for j in s["jobs"]:
            r = j["result"] or {}
            lines.append(
                f"| `{name}` | `{j['submission_id']}` | `{j['job_id']}` | {j['status']} | "
                f"{r.get('tasks_ok')} ok, {r.get('tasks_failed')} failed, {r.get('actor_calls')} actor calls, "
                f"{r.get('seconds')} s |"
            )
    lines += ["", "## Facts (checked by the capture script in these files)", ""]
    for name, f in facts["sessions"].items():
        lines += [
            f"### `{name}`",
            "",
            f"- {f['files']} files, {f['bytes'] / 1e6:.2f} MB; ports {f.get('ports')}. Distinct sample names "
            f"per round on the metrics-agent port: {f['agent_metric_names_per_round']} (a scrape right after "
            "start can lack families, "
            "e.g. the GCS's, that Ray has not exported yet).",
            f"- `SessionName`: {', '.join(f'`{x}`' for x in f.get('session_names', []))}.",
            f"- `JobId` values: {quoted(f.get('job_ids', []))} "
            '(`""` on `ray_tasks{Source="owner"}`, `ray_actors{Source="gcs"}` and `ray_owned_objects*`; '
            "`01000000` is the dashboard's own driver, the `JobSupervisor` actors' tasks carry it; the submitted "
            "jobs are the next ones).",
            f"- `ray_job_duration_s` for JobIds {quoted(f.get('job_duration_job_ids', []))}.",
            f"- `ray_tasks` states with a value > 0: {', '.join(f'`{x}`' for x in f.get('task_states', []))}; "
            f'`State="FAILED"` > 0 in {f["scrapes_with_failed_tasks"]} scrapes, `FINISHED` > 0 in '
            f"{f['scrapes_with_finished_tasks']}. Number of `ray_tasks` series per round on the metrics-agent port: "
            f"{f['ray_tasks_series_per_round']} (none on the idle cluster; many go once the jobs' processes exit).",
            f"- `ray_object_store_memory` summed over series: max {f['max_object_store_memory_bytes']} bytes; "
            f">= 100 MiB in {f['scrapes_with_object_store_ge_100MiB']} scrapes.",
            f"- Node identity: `ray_node_*` series carry label `ip` = {f.get('ray_node_ip')} (label keys "
            f"{f.get('ray_node_label_keys')}); `ray_tasks` / `ray_object_store_memory` carry `NodeAddress` = "
            f"{f.get('node_address')}.",
            "",
        ]
    lines += [
        'Also true here (checked): labels with empty values are common (`JobId=""`,',
        '`WorkerId=""`); on the metrics-agent port every `ray_*` series carries `otel_scope_name`,',
        '`otel_scope_version=""`, `otel_scope_schema_url=""`, and there is a `target_info` gauge, but the',
        "Python client's own series there do not: "
        + ", ".join(f"`{m}`" for m in no_scope)
        + ". `ray_tasks` is a gauge (tasks currently in a state), not a counter of events.",
        "",
    ]
    (out_dir / "README.md").write_text("\n".join(lines))


def fmt_bytes(v: float) -> str:
    return f"{v / 1024 / 1024:.1f} MiB" if v >= 1024 * 1024 else f"{v / 1024:.1f} KiB" if v >= 1024 else f"{v:g} B"


def write_runs_readme(out_dir: Path, args, manifest: dict, facts: dict, rows: dict[str, list[dict]]) -> None:
    import ray

    sess = {name: manifest["sessions"][name] for name in rows}  # in capture order
    total_mb = sum(s["bytes"] for s in facts["sessions"].values()) / 1e6
    truth_kb = sum((out_dir / n / TRUTH_FILE).stat().st_size for n in sess) / 1e3
    lines = [
        f"# Real Ray {ray.__version__} runs: one job three times, and overlapping jobs, with Ray's own figures",
        "",
        "Made by `tools/capture_fixtures.py` against a real single-node Ray head started by",
        "`raymetrics_pipeline_tests/ray_cluster.py` (`RayHead`). Bodies are byte-for-byte what Ray served;",
        "nothing was edited. Beside them, `truth.json` holds what Ray itself said about the same jobs.",
        "",
        "Command:",
        "",
        "```",
        manifest["command"],
        "```",
        "",
        f"Captured {manifest['captured_at']} with Ray {ray.__version__}, Python {sys.version.split()[0]}, on a "
        f"{manifest['cpus']}-core Linux machine (shared); scrapes {total_mb:.1f} MB, `truth.json` files "
        f"{truth_kb:.0f} KB.",
        "",
        "## Layout",
        "",
        "- " + ", ".join(f"`{n}/`" for n in sess) + ": one cluster lifetime each (a `ray start` each, so a",
        "  `SessionName` each), with:",
        "  - `scrape_<unix_ns>_<port>.txt`: body of `GET http://127.0.0.1:<port>/metrics` for every target in Ray's",
        "    discovery, re-read every round; `<unix_ns>` is the wall-clock time at which that response had fully",
        f"    arrived. Rounds are anchored {args.interval:g} s apart (round k starts at round 0 + k x "
        f"{args.interval:g} s;",
        "    the product's own cadence); a round's files are a few ms apart.",
        "  - `prom_metrics_service_discovery.json`: Ray's file-SD file, copied at the end of the session.",
        f"  - `{TRUTH_FILE}`: Ray's own figures (below).",
        "- `manifest.json`: per session its kind, ports, `SessionName`, the jobs (submission id, JobId, entrypoint,",
        "  when submitted and seen ended, Jobs API start and end, the driver's printed result) and every scrape",
        "  (round, target, port, unix_ns, bytes, or the error: which targets answered each round).",
        "",
        "## Sessions",
        "",
        "Round 0 is scraped on the idle cluster, before any job. Scraping goes on every "
        f"{args.interval:g} s until at least {args.rounds} rounds are done and a round has started at least "
        f"{args.settle:g} s after the last job ended (so the last job's `ray_tasks` series are seen gone).",
        "",
        f"- `repeat`: the same entrypoint {args.repeat} times, one after another. The first job is submitted right",
        "  after round 0; each next one right after the first round that starts at least "
        f"{args.gap:g} s after the previous",
        "  job ended. Ray's agent keeps a gauge's last value for 2 report intervals (20 s) after its emitter stops",
        "  (`OpenTelemetryMetricRecorder`, `_gauge_metric_ttl_s`), so that round sees the previous job's series gone.",
        f"- `overlap`: {len(args.overlap_jobs.split(';'))} jobs with different arguments, the first right after "
        f"round 0, job i {args.stagger:g} x i s after it,",
        "  so their runs overlap. They share task names (`square`, `fail`, `Counter.add`, ...).",
        "",
        "The workload is `raymetrics_pipeline_tests/ray_workload.py` (its docstring says what each argument makes);",
        "`--holders N` starts N actors that each hold objects in their own worker process (a",
        '`ray_object_store_memory{Location="WORKER_HEAP"}` series each, with about holder-objects x holder-kib KiB)',
        "and a `--holder-mb` MiB `ray.put` in shared memory.",
        "",
        "| session | job | submission id | JobId | arguments | submitted (s after round 0, after round) "
        "| seen ended (s) | Jobs API duration (s) | status | driver result |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in sess.items():
        for i, j in enumerate(s["jobs"]):
            r = j["result"] or {}
            lines.append(
                f"| `{name}` | {i} | `{j['submission_id']}` | `{j['job_id']}` | "
                f"`{j['entrypoint'].split(' ', 2)[2]}` | "
                f"{j['submitted_after_round0_s']}, {j['submitted_after_round']} | "
                f"{j['seen_ended_after_round0_s']} | {(j['end_time_ms'] - j['start_time_ms']) / 1000:.1f} | "
                f"{j['status']} | {r.get('tasks_ok')} ok, {r.get('tasks_failed')} failed, "
                f"{r.get('actor_calls')} actor calls, {r.get('holders', 0)} holders |"
            )
    lines += [
        "",
        "## Scrape rounds",
        "",
        "Per round, from the files (agent = the metrics-agent port, where `ray_tasks` and",
        "`ray_object_store_memory` are): seconds after round 0, the jobs running then by the Jobs API's start and",
        '`end_time`, the `ray_tasks{Name="square",State="FINISHED"}` and `{Name="fail",State="FAILED"}` values',
        "(- = no such series), `WORKER_HEAP` series (non-zero) and `ray_object_store_memory` summed by `Location`.",
        "",
    ]
    for name, rs in rows.items():
        s = sess[name]
        p = s["ports"]
        lines += [
            f"### `{name}`: `{s['session_name']}`, metrics agent {p['metrics_export']}, autoscaler "
            f"{p['autoscaler_metrics']}, dashboard {p['dashboard_metrics']}",
            "",
            "| round | s | answered | failed | jobs running | square FINISHED | fail FAILED | ray_tasks series "
            "| WORKER_HEAP series (non-zero) | object store bytes by Location |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in rs:

            def val(v):
                return "-" if v is None else f"{v:g}"

            locs = ", ".join(f"{k} {fmt_bytes(v)}" for k, v in r.get("object_store_bytes_by_location", {}).items())
            lines.append(
                f"| {r['round']} | {r['t_s']} | {len(r['answered'])} | {'; '.join(r['failed']) or '-'} | "
                f"{', '.join(r['jobs_running']) or '-'} | {val(r.get('square_finished'))} | "
                f"{val(r.get('fail_failed'))} | {r.get('ray_tasks_series', '-')} | "
                f"{r.get('worker_heap_series', '-')} ({r.get('worker_heap_nonzero', '-')}) | "
                f"{locs or '-'} |"
            )
        lines.append("")
    lines += [
        f"## `{TRUTH_FILE}`: Ray's own figures",
        "",
        "Taken from the dashboard as each job was seen ended (within about a second; `after_job_end`, one entry per",
        "job, in the order they ended) and once more after the last round (`final`). Each entry holds, parsed from the",
        "answers as they came (`json.loads`, nothing dropped):",
        "",
        f"- `jobs`: `GET <dashboard>{JOBS_PATH}` (the Jobs API list: `submission_id`, `job_id`, `entrypoint`,",
        "  `status`, `start_time` and `end_time` in ms, ...);",
        f"- `tasks_summary_by_job`: `{{job_id: GET <dashboard>{TASK_SUMMARY_PATH}?filter_keys=job_id&"
        "filter_predicates=%3D&filter_values=<job_id>}`",
        "  (the State API task summary of one job; the parameters are those read by `_get_filters_from_req`",
        "  in `ray/dashboard/state_api_utils.py`, and `job_id` is filtered in the GCS, see",
        "  `_build_task_events_request` in `ray/util/state/state_manager.py`). After each job: that job; `final`:",
        "  every submitted job, plus any other JobId the Jobs API lists;",
        f"- `tasks_summary_all`: `GET <dashboard>{TASK_SUMMARY_PATH}`, unfiltered.",
        "",
        "No summary counts the `JobSupervisor` actors' tasks (`JobSupervisor.run`, `.ping`,",
        "`_ray_internal_job_actor_<submission id>:JobSupervisor.__init__`): Ray's job manager creates those actors",
        "with `enable_task_events=False` (`ray/dashboard/modules/job/job_manager.py`), so the GCS never hears of",
        "their tasks, while `ray_tasks` counts them (their owner is the dashboard, JobId `01000000`, which the",
        "Jobs API does not list). Ray has no exact figure for them; expect one `__init__` and one `run` per job.",
        "",
        "A summary counts every task attempt Ray's GCS still holds (drivers excluded), by name and state, under",
        "`data.result.result.node_id_to_summary.cluster.summary.<name>.state_counts`. Final unfiltered counts:",
        "",
    ]
    for name in sess:
        truth = json.loads((out_dir / name / TRUTH_FILE).read_text())
        counts = summary_counts(truth["final"]["tasks_summary_all"])
        lines += [f"### `{name}`", "", "| name | type | state counts |", "| --- | --- | --- |"]
        for key in sorted(counts):
            c = counts[key]
            states = ", ".join(f"{k} {v}" for k, v in sorted(c["state_counts"].items()))
            lines.append(f"| `{key}` | {c['type']} | {states} |")
        lines.append("")
    lines += [
        "## How Ray 2.60 reports these (read in its source, seen here)",
        "",
        '- `ray_tasks{State="FINISHED"|"FAILED"}` carries `JobId=""` and counts, per owner process (the driver for',
        "  the tasks it submits, an actor for the calls it makes, the dashboard for the `JobSupervisor` calls), the",
        "  tasks it has seen end since it started. The agent drops `WorkerId` and sums the owners' values into one",
        "  series per name and state (`HIGH_CARDINALITY_GAUGE_AGGREGATION` in",
        "  `ray/_private/telemetry/metric_cardinality.py`). An owner that exits stops reporting; 20 s later its part",
        "  is gone: the series falls by it, or disappears when it was the only one.",
        "- So in `repeat` each job's series start again from 0 and vanish between jobs; in `overlap` the jobs'",
        "  counts are summed while they run together and the series falls when one of them ends while another",
        "  still runs.",
        '- `ray_object_store_memory{Location="WORKER_HEAP"}` has one series per worker process (`WorkerId`), idle',
        "  ones included (value 0); `MMAP_SHM`, `MMAP_DISK` and `SPILLED` come from the raylet, one per",
        "  `ObjectState`. A node's bytes at a scrape are the sum over the series.",
        "- Every figure lags: emitters report every 10 s, so a job can be missing from the rounds just after it",
        "  started (compare `jobs running` with the `square` column), and an exited owner's or worker's last values",
        "  (task counts, `WORKER_HEAP` bytes) stay up to 20 s after it is gone.",
        "",
    ]
    (out_dir / "README.md").write_text("\n".join(lines))


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--rounds", type=int, default=4, help="minimum scrape rounds per session (round 0 = idle)")
    p.add_argument("--interval", type=float, default=15.0)
    p.add_argument(
        "--sessions",
        default="session_a,session_b",
        help="session folders; `repeat` and `overlap` are the run kinds, any other name runs --jobs jobs at once",
    )
    p.add_argument("--jobs", type=int, default=2, help="jobs submitted at once (concurrent sessions)")
    p.add_argument("--settle", type=float, default=8.0, help="last round starts >= this long after the jobs ended")
    p.add_argument(
        "--max-extra-rounds", type=int, default=8, help="rounds allowed beyond --rounds (per job in run sessions)"
    )
    p.add_argument("--repeat", type=int, default=3, help="`repeat` session: times the same job runs")
    p.add_argument(
        "--gap",
        type=float,
        default=25.0,
        help="`repeat` session: the next job follows the first round starting >= this long after the previous ended",
    )
    p.add_argument(
        "--overlap-jobs",
        default=DEFAULT_OVERLAP_JOBS,
        help="`overlap` session: workload arguments of each job, separated by ';'",
    )
    p.add_argument("--stagger", type=float, default=10.0, help="`overlap` session: s between job submissions")
    add_workload_arguments(p)
    p.add_argument(
        "--readme-only", action="store_true", help="re-check facts and rewrite README.md from existing files"
    )
    args = p.parse_args(argv)

    import os

    import ray

    out_dir = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    sessions = [s for s in args.sessions.split(",") if s]
    kinds = {session_kind(s) == "concurrent" for s in sessions}
    if len(kinds) > 1:
        p.error("run sessions (repeat, overlap) and concurrent ones go to different --out folders")
    manifest = {
        "ray_version": ray.__version__,
        "command": shlex.join(["python", "tools/capture_fixtures.py", *(argv if argv is not None else sys.argv[1:])]),
        "captured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "sessions": {},
    }
    if args.readme_only:
        manifest = json.loads((out_dir / "manifest.json").read_text())
        args = argparse.Namespace(**{**vars(args), **manifest["args"]})
        sessions = [s for s in args.sessions.split(",") if s]  # the captured order (manifest keys are sorted)
    else:
        manifest["args"] = {k: v for k, v in vars(args).items() if k not in ("out", "readme_only")}
        for name in sessions:
            log(f"=== {name}")
            capture = capture_session if session_kind(name) == "concurrent" else capture_run_session
            manifest["sessions"][name] = capture(args, name, out_dir)
        (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    facts, problems = check_facts(out_dir, sessions)
    run_sessions = [s for s in sessions if session_kind(s) != "concurrent"]
    if run_sessions:
        rows = {s: run_rounds(out_dir, s, manifest["sessions"][s]) for s in run_sessions}
        for s in run_sessions:
            problems += check_run_facts(out_dir, s, manifest["sessions"][s], rows[s])
        write_runs_readme(out_dir, args, manifest, facts, rows)
    else:
        write_readme(out_dir, args, manifest, facts)
    log(json.dumps(facts, indent=1, sort_keys=True))
    if problems:
        log("MISSING FACTS:\n  " + "\n  ".join(problems))
        return 1
    log(f"ok: {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
