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
"""

from __future__ import annotations

import argparse
import json
import re
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


def capture_session(args, name: str, out_dir: Path) -> dict:
    out = out_dir / name
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("scrape_*.txt")) + [out / DISCOVERY_FILE_NAME]:
        old.unlink(missing_ok=True)

    work = Path(tempfile.mkdtemp(prefix="rhcap-", dir="/tmp"))
    wl_dir = work / "workload"
    wl_dir.mkdir()
    shutil.copy(WORKLOAD, wl_dir / WORKLOAD.name)
    entry = (
        f"python {WORKLOAD.name} --tasks {args.tasks} --failing {args.failing} --actor-calls {args.actor_calls} "
        f"--objects {args.objects} --object-mb {args.object_mb} --hold-seconds {args.hold_seconds}"
    )
    info: dict = {"folder": name}
    try:
        with RayHead(work / "head", startup_timeout=180) as head:
            log(f"{name}: {head} up in {head.startup_seconds:.1f} s; discovery {head.discovered_targets()}")
            info.update(
                session_name=head.session_name,
                node_ip=head.node_ip,
                gcs_address=head.address,
                startup_seconds=round(head.startup_seconds, 1),
                ports={
                    "gcs": head.gcs_port,
                    "dashboard": head.dashboard_port,
                    "metrics_export": head.metrics_export_port,
                    "autoscaler_metrics": head.autoscaler_metrics_port,
                    "dashboard_metrics": head.dashboard_metrics_port,
                },
                discovery_file_path_in_ray=str(head.discovery_file.relative_to(head.temp_dir.parent)),
                entrypoint=entry,
                scrapes=[],
                jobs=[],
            )
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


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--rounds", type=int, default=4, help="minimum scrape rounds per session (round 0 = idle)")
    p.add_argument("--interval", type=float, default=15.0)
    p.add_argument("--sessions", default="session_a,session_b")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--settle", type=float, default=8.0, help="last round starts >= this long after the jobs ended")
    p.add_argument("--max-extra-rounds", type=int, default=8)
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
    manifest = {
        "ray_version": ray.__version__,
        "command": "python tools/capture_fixtures.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "captured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "sessions": {},
    }
    if args.readme_only:
        manifest = json.loads((out_dir / "manifest.json").read_text())
        args = argparse.Namespace(**{**vars(args), **manifest["args"]})
    else:
        manifest["args"] = {k: v for k, v in vars(args).items() if k not in ("out", "readme_only")}
        for name in sessions:
            log(f"=== {name}")
            manifest["sessions"][name] = capture_session(args, name, out_dir)
        (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    facts, problems = check_facts(out_dir, sessions)
    write_readme(out_dir, args, manifest, facts)
    log(json.dumps(facts, indent=1, sort_keys=True))
    if problems:
        log("MISSING FACTS:\n  " + "\n  ".join(problems))
        return 1
    log(f"ok: {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
