"""A real single-node Ray head for tests and for the fixture capture script.

    with RayHead(tmp_dir) as head:
        head.metrics_targets()      # ["127.0.0.1:<port>", ...] from Ray's own discovery
        sid = head.submit_job("python ray_workload.py", working_dir=...)
        head.wait_job(sid)

What it does, and why (all checked against Ray 2.60.0):

* ``ray start --head`` with every port Ray would otherwise take from a fixed
  default chosen as a free port >= 20000 and below the kernel's ephemeral range
  (so an outgoing connection can not grab it between our pick and Ray's bind).
  Two of those defaults are not ``ray start`` flags but environment variables:
  the autoscaler/monitor metrics port (``AUTOSCALER_METRIC_PORT``, default
  44217) and the dashboard metrics port (``DASHBOARD_METRIC_PORT``, default
  44227); without them a second cluster on the box fails to serve its metrics.
  Workers get OS-assigned ports (``--min-worker-port=0 --max-worker-port=0``),
  so two clusters never compete for Ray's 10002-19999 worker range.
* ``--node-ip-address=127.0.0.1`` is passed, but Ray 2.60 rewrites a loopback
  node address to the machine's interface address
  (``ray._private.services.resolve_ip_for_localhost``). So GCS address, node
  address and every target in the service-discovery file carry that interface
  address (e.g. ``192.0.2.2``). The metrics endpoints listen on 0.0.0.0 and
  answer on 127.0.0.1 too, which is what :meth:`RayHead.metrics_targets`
  returns. ``loopback_only=True`` sets ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``,
  which makes Ray use 127.0.0.1 everywhere (then discovery says 127.0.0.1).
* The discovery file: Ray 2.60 writes
  ``<temp_dir>/<session>/prom_metrics_service_discovery.json`` (refreshed every
  5 s by the dashboard's ReportHead) and keeps a symlink to it at
  ``<temp_dir>/prom_metrics_service_discovery.json`` (the pre-2.5x location,
  ``/tmp/ray/prom_metrics_service_discovery.json`` by default).
  ``GET <dashboard>/api/prometheus/sd`` returns the same JSON list.
* ``ray stop`` is NOT used: it kills every Ray process on the machine by
  process name (``RAY_PROCESSES`` in ``ray.autoscaler._private.constants``),
  including other people's clusters. Instead ``ray start`` runs in a new
  session (``setsid``) with a unique marker in its environment; on exit every
  process of that session, every process carrying the marker (job drivers run
  in sessions of their own but inherit the environment) and all their
  descendants get SIGKILL (the same signal as ``ray stop --force``). A tiny
  watchdog process does the same if the owning process dies without ``stop()``
  (SIGKILL, CI timeout), so a killed test run does not leak a cluster.
* Unix socket paths are limited to 107 bytes; Ray puts
  ``<temp_dir>/session_<date>_<pid>/sockets/plasma_store`` there, so a long
  ``temp_dir`` (pytest's ``tmp_path``) makes ``ray start`` fail. When
  ``<base_dir>/ray`` is too long, Ray gets a short directory under /tmp instead,
  ``<base_dir>/ray`` is a symlink to it while the cluster runs, and on exit the
  directory is moved to ``<base_dir>/ray`` (so the logs stay with the test).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import httpx

DISCOVERY_FILE_NAME = "prom_metrics_service_discovery.json"
MARKER_ENV = "RAYMETRICS_RAYHEAD_ID"
# Ray's longest socket path is <temp_dir>/session_<time>_<pid>/sockets/dash_<Module>Head; keep a margin.
_MAX_TEMP_DIR_LEN = 107 - len("/session_2026-01-01_00-00-00_000000_4194304/sockets/dash_MetricsHead") - 10
_LOG_FILES = (
    "gcs_server.out",
    "gcs_server.err",
    "raylet.out",
    "raylet.err",
    "dashboard.log",
    "dashboard.err",
    "dashboard_agent.log",
    "dashboard_agent.err",
    "monitor.log",
    "monitor.err",
)


# Runs in its own session beside the cluster: if the process that owns the
# RayHead dies without stop() (SIGKILL, CI timeout), it kills the cluster the
# same way stop() does. stop() kills the watchdog first.
_WATCHDOG = r"""
import os, sys, time, signal
owner, sid, ticks, needle = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode() + b"\0"
def stat(pid):
    try:
        raw = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    r = raw[raw.rfind(")") + 2:].split()
    return r[0], int(r[1]), int(r[3]), int(r[19])
def alive(pid):
    st = stat(pid)
    return st is not None and st[0] != "Z"
while alive(owner):
    time.sleep(1)
me = os.getpid()
for _ in range(50):
    stats = {int(d): stat(int(d)) for d in os.listdir("/proc") if d.isdigit()}
    ours = set()
    for pid, st in stats.items():
        if st is None or pid == me:
            continue
        if st[2] == sid and st[3] >= ticks:
            ours.add(pid)
        else:
            try:
                if needle in open(f"/proc/{pid}/environ", "rb").read():
                    ours.add(pid)
            except OSError:
                pass
    grew = True
    while grew:
        grew = False
        for pid, st in stats.items():
            if st and pid not in ours and pid != me and st[1] in ours:
                ours.add(pid); grew = True
    ours = [p for p in ours if stats[p] and stats[p][0] != "Z"]
    if not ours:
        break
    for pid in ours:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.2)
"""


class RayHeadError(RuntimeError):
    """Ray did not start (or a job failed); the message carries log tails."""


# --------------------------------------------------------------------------- ports


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_is_free(port: int) -> bool:
    for host in ("0.0.0.0", "127.0.0.1"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def pick_free_ports(n: int, low: int = 20000, high: int | None = None, exclude: Iterable[int] = ()) -> list[int]:
    """``n`` distinct ports in ``[low, high]`` that can be bound right now.

    ``high`` defaults to just below the ephemeral range (32767 on Linux).
    Random picks, so concurrent harnesses rarely race for the same one.
    """
    if high is None:
        high = _ephemeral_low() - 1
        if high - low < 1000:  # odd ephemeral range: fall back to a wide window
            high = 65000
    taken = set(exclude)
    ports: list[int] = []
    for _ in range(50 * n + 1000):
        if len(ports) == n:
            break
        p = random.randint(low, high)
        if p in taken or (10002 <= p <= 19999):
            continue
        taken.add(p)
        if _port_is_free(p):
            ports.append(p)
    if len(ports) < n:
        raise RayHeadError(f"could not find {n} free ports in {low}-{high}")
    return ports


# --------------------------------------------------------------------------- /proc


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, session id, start time in clock ticks) or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    rest = raw[raw.rfind(")") + 2 :].split()
    # fields after comm: state ppid pgrp session tty_nr tpgid flags minflt cminflt
    # majflt cmajflt utime stime cutime cstime priority nice num_threads itrealvalue starttime
    try:
        return rest[0], int(rest[1]), int(rest[3]), int(rest[19])
    except (IndexError, ValueError):
        return None


def _all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _environ_has(pid: int, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return needle in f.read()
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _ray_cli() -> list[str]:
    sibling = Path(sys.executable).with_name("ray")
    if sibling.exists():
        return [str(sibling)]
    found = shutil.which("ray")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.exit(main())"]


def _tail(path: Path, lines: int) -> str:
    try:
        data = path.read_bytes()[-64 * 1024 :].decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


# --------------------------------------------------------------------------- RayHead


class RayHead:
    """One single-node Ray cluster (head only) owned by this process.

    Parameters
    ----------
    base_dir:
        Directory for this cluster's files; Ray's temp dir is ``<base_dir>/ray``.
    num_cpus:
        ``--num-cpus`` (default 2).
    startup_timeout:
        Seconds for ``ray start`` plus readiness, after which
        :class:`RayHeadError` (with log tails) is raised and everything is killed.
    wait_for_metrics:
        Metric names that must appear in some target's body before the head
        counts as ready. Each Ray component reports through the metrics agent
        on its own schedule, seconds after the endpoints first answer, so the
        default waits for one metric of each: the node agent, GCS and raylet.
        Empty to skip.
    object_store_memory:
        ``--object-store-memory`` in bytes, or None for Ray's default.
    loopback_only:
        Make Ray use 127.0.0.1 as node address everywhere (see module doc).
    extra_env / extra_args:
        Added to the ``ray start`` environment / command line.

    Attributes after start: ``temp_dir``, ``session_dir``, ``session_name``,
    ``address``, ``node_ip``, ``dashboard_url``, ``discovery_file``, the ports
    (``gcs_port``, ``dashboard_port``, ``metrics_export_port``,
    ``autoscaler_metrics_port``, ``dashboard_metrics_port``, ...),
    ``startup_seconds``.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike,
        *,
        num_cpus: int = 2,
        startup_timeout: float = 120.0,
        wait_for_metrics: Sequence[str] = (
            "ray_node_cpu_utilization",
            "ray_gcs_placement_group_count",
            "ray_object_store_available_memory",
        ),
        object_store_memory: int | None = None,
        loopback_only: bool = False,
        extra_env: dict[str, str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.num_cpus = num_cpus
        self.startup_timeout = startup_timeout
        self.wait_for_metrics = tuple(wait_for_metrics)
        self.object_store_memory = object_store_memory
        self.loopback_only = loopback_only
        self.extra_env = dict(extra_env or {})
        self.extra_args = list(extra_args)

        self.marker = uuid.uuid4().hex
        self.temp_dir: Path = self.base_dir / "ray"
        self._short_temp_dir: Path | None = None
        self.session_dir: Path | None = None
        self.session_name: str | None = None
        self.address: str | None = None
        self.node_ip: str | None = None
        self.startup_seconds: float | None = None
        self._sid: int | None = None
        self._start_ticks: int | None = None
        self._start_log: Path = self.base_dir / "ray-start.log"
        self._started = False
        self._job_client = None
        self._watchdog: subprocess.Popen | None = None

        (
            self.gcs_port,
            self.dashboard_port,
            self.metrics_export_port,
            self.autoscaler_metrics_port,
            self.dashboard_metrics_port,
            self.ray_client_server_port,
            self.dashboard_agent_listen_port,
            self.dashboard_agent_grpc_port,
            self.runtime_env_agent_port,
            self.node_manager_port,
            self.object_manager_port,
        ) = pick_free_ports(11)

    # ------------------------------------------------------------------ basics

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def local_address(self) -> str:
        """GCS address on loopback (GCS listens on all interfaces)."""
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def discovery_file(self) -> Path:
        """Ray's Prometheus file-SD file (inside the session dir)."""
        if self.session_dir is None:
            raise RayHeadError("cluster not started")
        return self.session_dir / DISCOVERY_FILE_NAME

    @property
    def legacy_discovery_file(self) -> Path:
        """Ray's backward-compatible symlink ``<temp_dir>/prom_metrics_service_discovery.json``."""
        return self.temp_dir / DISCOVERY_FILE_NAME

    @property
    def logs_dir(self) -> Path:
        if self.session_dir is None:
            raise RayHeadError("cluster not started")
        return self.session_dir / "logs"

    @property
    def expected_ports(self) -> set[int]:
        """The metrics ports we configured and expect in discovery."""
        return {self.metrics_export_port, self.autoscaler_metrics_port, self.dashboard_metrics_port}

    def env(self) -> dict[str, str]:
        """Environment for ``ray`` commands aimed at this cluster."""
        env = dict(os.environ)
        for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
            env.pop(k, None)
        env.update(
            {
                "RAY_USAGE_STATS_ENABLED": "0",
                "AUTOSCALER_METRIC_PORT": str(self.autoscaler_metrics_port),
                "DASHBOARD_METRIC_PORT": str(self.dashboard_metrics_port),
                MARKER_ENV: self.marker,
                # `python` in job entrypoints must be this interpreter.
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            }
        )
        if self.loopback_only:
            env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        env.update(self.extra_env)
        return env

    def start_command(self) -> list[str]:
        cmd = _ray_cli() + [
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            "--include-dashboard=true",
            f"--num-cpus={self.num_cpus}",
            f"--temp-dir={self.temp_dir if self._short_temp_dir is None else self._short_temp_dir}",
            f"--port={self.gcs_port}",
            f"--dashboard-port={self.dashboard_port}",
            f"--metrics-export-port={self.metrics_export_port}",
            f"--ray-client-server-port={self.ray_client_server_port}",
            f"--dashboard-agent-listen-port={self.dashboard_agent_listen_port}",
            f"--dashboard-agent-grpc-port={self.dashboard_agent_grpc_port}",
            f"--runtime-env-agent-port={self.runtime_env_agent_port}",
            f"--node-manager-port={self.node_manager_port}",
            f"--object-manager-port={self.object_manager_port}",
            "--min-worker-port=0",
            "--max-worker-port=0",
            "--disable-usage-stats",
            "--log-style=record",
            "--log-color=false",
        ]
        if self.object_store_memory:
            cmd.append(f"--object-store-memory={int(self.object_store_memory)}")
        return cmd + self.extra_args

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> RayHead:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> RayHead:
        if self._started:
            raise RayHeadError("already started")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if len(str(self.temp_dir)) > _MAX_TEMP_DIR_LEN:
            self._short_temp_dir = Path(tempfile.mkdtemp(prefix="rayhead-", dir="/tmp"))
            if self.temp_dir.is_symlink() or self.temp_dir.exists():
                raise RayHeadError(f"{self.temp_dir} already exists")
            self.temp_dir.symlink_to(self._short_temp_dir)
        else:
            self.temp_dir.mkdir(parents=True, exist_ok=True)
        self._started = True
        t0 = time.monotonic()
        try:
            self._run_ray_start(deadline=t0 + self.startup_timeout)
            self._wait_ready(deadline=t0 + self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    @property
    def _ray_temp_dir(self) -> Path:
        return self._short_temp_dir or self.temp_dir

    def _run_ray_start(self, deadline: float) -> None:
        with open(self._start_log, "wb") as log:
            proc = subprocess.Popen(
                self.start_command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
                cwd=self.base_dir,
                start_new_session=True,
            )
            self._sid = proc.pid
            st = _proc_stat(proc.pid)
            self._start_ticks = st[3] if st else None
            self._start_watchdog()
            try:
                rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise RayHeadError("`ray start` did not return in time\n" + self.log_tail()) from None
        if rc != 0:
            raise RayHeadError(f"`ray start` exited with {rc}\n" + self.log_tail())
        latest = self._ray_temp_dir / "session_latest"
        if not latest.exists():
            raise RayHeadError(f"{latest} missing after `ray start`\n" + self.log_tail())
        self.session_dir = Path(os.path.realpath(latest))
        self.session_name = self.session_dir.name
        current = self._ray_temp_dir / "ray_current_cluster"
        try:
            self.address = current.read_text().strip()
        except OSError:
            self.address = None
        if not self.address:
            self.address = self.local_address
        self.node_ip = self.address.rsplit(":", 1)[0]

    def _wait_ready(self, deadline: float) -> None:
        """Discovery lists our 3 metrics ports, each answers 200, dashboard answers."""
        last_problem = "nothing checked yet"
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            while True:
                problem = self._readiness_problem(client)
                if problem is None:
                    return
                last_problem = problem
                if time.monotonic() > deadline:
                    raise RayHeadError(
                        f"Ray head not ready after {self.startup_timeout:.0f} s: {last_problem}\n" + self.log_tail()
                    )
                time.sleep(0.5)

    def _readiness_problem(self, client: httpx.Client) -> str | None:
        try:
            targets = self.metrics_targets()
        except (OSError, ValueError) as e:
            return f"discovery file {self.discovery_file} not readable: {e!r}"
        ports = {int(t.rsplit(":", 1)[1]) for t in targets}
        missing = self.expected_ports - ports
        if missing:
            return f"discovery {targets} lacks ports {sorted(missing)}"
        wanted = set(self.wait_for_metrics)
        for target in targets:
            try:
                r = client.get(f"http://{target}/metrics", headers={"Accept-Encoding": "identity"})
            except httpx.HTTPError as e:
                return f"{target}/metrics: {e!r}"
            if r.status_code != 200:
                return f"{target}/metrics: HTTP {r.status_code}"
            wanted = {m for m in wanted if m not in r.text}
        if wanted:
            return f"metrics {sorted(wanted)} not served yet"
        try:
            r = client.get(f"{self.dashboard_url}/api/version")
        except httpx.HTTPError as e:
            return f"dashboard: {e!r}"
        if r.status_code != 200:
            return f"dashboard /api/version: HTTP {r.status_code}"
        return None

    def _start_watchdog(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != MARKER_ENV}
        self._watchdog = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WATCHDOG,
                str(os.getpid()),
                str(self._sid),
                str(self._start_ticks or 0),
                f"{MARKER_ENV}={self.marker}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None

    def pids(self) -> list[int]:
        """Live (non-zombie) processes that belong to this cluster."""
        if self._sid is None:
            return []
        needle = f"{MARKER_ENV}={self.marker}\0".encode()
        me = os.getpid()
        stats: dict[int, tuple[str, int, int, int]] = {}
        for pid in _all_pids():
            st = _proc_stat(pid)
            if st is not None:
                stats[pid] = st
        ours: set[int] = set()
        for pid, (_state, _ppid, sid, ticks) in stats.items():
            if pid == me:
                continue
            if sid == self._sid and (self._start_ticks is None or ticks >= self._start_ticks):
                ours.add(pid)
            elif _environ_has(pid, needle):
                ours.add(pid)
        changed = True
        while changed:  # descendants
            changed = False
            for pid, (_state, ppid, _sid, _ticks) in stats.items():
                if pid not in ours and ppid in ours and pid != me:
                    ours.add(pid)
                    changed = True
        return sorted(p for p in ours if stats[p][0] != "Z")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGKILL every process of this cluster (only this one) and wait until gone."""
        if not self._started:
            return
        self._job_client = None
        self._stop_watchdog()
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids:
                break
            if time.monotonic() > deadline:
                raise RayHeadError(
                    "Ray processes survived SIGKILL: " + "; ".join(f"{p} {_cmdline(p)[:120]}" for p in pids)
                )
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                except PermissionError:
                    pass
            time.sleep(0.2)
        self._wait_zombies_reaped(seconds=5.0)
        self._started = False
        self._restore_temp_dir()

    def _wait_zombies_reaped(self, seconds: float) -> None:
        """Killed processes were re-parented to init; give it a moment to reap them
        so `ps` right after shows nothing (cosmetic, best effort)."""
        if self._sid is None:
            return
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not any((st := _proc_stat(p)) is not None and st[2] == self._sid for p in _all_pids()):
                return
            time.sleep(0.2)

    def _restore_temp_dir(self) -> None:
        short = self._short_temp_dir
        if short is None:
            return
        self._short_temp_dir = None
        try:
            if self.temp_dir.is_symlink():
                self.temp_dir.unlink()
            try:
                os.rename(short, self.temp_dir)
            except OSError:
                shutil.copytree(short, self.temp_dir, symlinks=True, ignore=shutil.ignore_patterns("sockets"))
                shutil.rmtree(short, ignore_errors=True)
        except (OSError, shutil.Error):
            shutil.rmtree(short, ignore_errors=True)
        # Ray's own absolute symlinks (session_latest, the discovery file) pointed into the short dir.
        for link in (self.temp_dir / "session_latest", self.temp_dir / DISCOVERY_FILE_NAME):
            try:
                target = os.readlink(link)
            except OSError:
                continue
            if target.startswith(str(short)):
                link.unlink()
                link.symlink_to(os.path.relpath(target, str(short)))
        # session_dir pointed into the short dir
        if self.session_name:
            self.session_dir = self.temp_dir / self.session_name

    # ------------------------------------------------------------------ discovery / metrics

    def read_discovery(self) -> list[dict]:
        """Ray's discovery file as written: ``[{"labels": {"job": "ray"}, "targets": [...]}]``."""
        return json.loads(self.discovery_file.read_text())

    def discovered_targets(self) -> list[str]:
        """``host:port`` exactly as Ray wrote them (host = node address)."""
        return [t for group in self.read_discovery() for t in group.get("targets", [])]

    def metrics_targets(self) -> list[str]:
        """Discovered ``host:port`` targets with the host replaced by 127.0.0.1."""
        return [f"127.0.0.1:{t.rsplit(':', 1)[1]}" for t in self.discovered_targets()]

    def service_discovery_http(self) -> list[dict]:
        """``GET {dashboard_url}/api/prometheus/sd`` (same shape as the file)."""
        r = httpx.get(f"{self.dashboard_url}/api/prometheus/sd", timeout=10.0, trust_env=False)
        r.raise_for_status()
        return r.json()

    def scrape(self, target: str, client: httpx.Client | None = None) -> httpx.Response:
        """GET http://<target>/metrics uncompressed (as curl would)."""
        own = client is None
        client = client or httpx.Client(timeout=10.0, trust_env=False)
        try:
            return client.get(f"http://{target}/metrics", headers={"Accept-Encoding": "identity"})
        finally:
            if own:
                client.close()

    # ------------------------------------------------------------------ jobs

    @property
    def job_client(self):
        if self._job_client is None:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            from ray.job_submission import JobSubmissionClient

            self._job_client = JobSubmissionClient(self.dashboard_url)
        return self._job_client

    def submit_job(
        self,
        entrypoint: str,
        working_dir: str | os.PathLike | None = None,
        *,
        submission_id: str | None = None,
        runtime_env: dict | None = None,
        entrypoint_num_cpus: float | None = None,
    ) -> str:
        """Submit a job through the dashboard; returns its submission id.

        ``working_dir`` is uploaded by Ray. It must not contain a directory
        called ``ray`` (it would shadow the ``ray`` package in the job).
        ``python`` in the entrypoint is this process' interpreter (PATH).
        """
        env = dict(runtime_env or {})
        if working_dir is not None:
            env["working_dir"] = str(working_dir)
        kwargs = {}
        if entrypoint_num_cpus is not None:
            kwargs["entrypoint_num_cpus"] = entrypoint_num_cpus
        return self.job_client.submit_job(
            entrypoint=entrypoint, runtime_env=env or None, submission_id=submission_id, **kwargs
        )

    def job_status(self, submission_id: str) -> str:
        return str(self.job_client.get_job_status(submission_id).value)

    def job_info(self, submission_id: str):
        return self.job_client.get_job_info(submission_id)

    def job_logs(self, submission_id: str) -> str:
        return self.job_client.get_job_logs(submission_id)

    def wait_job(self, submission_id: str, timeout: float = 300.0, poll: float = 1.0, check: bool = True) -> str:
        """Wait until the job is terminal; returns the status (``SUCCEEDED`` ...).

        With ``check`` a non-SUCCEEDED end raises :class:`RayHeadError` with the job's logs.
        """
        deadline = time.monotonic() + timeout
        while True:
            status = self.job_status(submission_id)
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                break
            if time.monotonic() > deadline:
                raise RayHeadError(
                    f"job {submission_id} still {status} after {timeout} s\n{self.job_logs(submission_id)[-4000:]}"
                )
            time.sleep(poll)
        if check and status != "SUCCEEDED":
            raise RayHeadError(f"job {submission_id} ended {status}\n{self.job_logs(submission_id)[-4000:]}")
        return status

    # ------------------------------------------------------------------ diagnostics

    def log_tail(self, lines: int = 25) -> str:
        parts = [f"--- {self._start_log} ---\n{_tail(self._start_log, lines)}"]
        logs = None
        if self.session_dir is not None:
            logs = self.session_dir / "logs"
        else:
            latest = self._ray_temp_dir / "session_latest"
            if latest.exists():
                logs = latest / "logs"
        if logs is not None:
            for name in _LOG_FILES:
                text = _tail(logs / name, lines)
                if text.strip():
                    parts.append(f"--- {logs / name} ---\n{text}")
        return "\n".join(parts)

    def __repr__(self) -> str:
        return (
            f"RayHead(session={self.session_name!r}, address={self.address!r}, "
            f"dashboard={self.dashboard_url!r}, metrics_export_port={self.metrics_export_port})"
        )


def leftover_ray_pids(marker: str | None = None) -> list[int]:
    """Processes carrying a RayHead marker in their environment (any, or one marker)."""
    needle = f"{MARKER_ENV}={marker}\0".encode() if marker else f"{MARKER_ENV}=".encode()
    return [p for p in _all_pids() if p != os.getpid() and _environ_has(p, needle)]


if __name__ == "__main__":  # manual check: python -m raymetrics_pipeline_tests.ray_cluster
    with tempfile.TemporaryDirectory(prefix="rh") as d, RayHead(d) as head:
        print(head)
        print("startup", round(head.startup_seconds, 1), "s")
        print("discovery file", head.discovery_file, head.read_discovery())
        print("sd endpoint", head.service_discovery_http())
        print("targets", head.metrics_targets())
