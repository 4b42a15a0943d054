"""A real Celery cluster for tests: Debian's redis-server as the broker and dagster-celery workers, on 127.0.0.1.

The broker asks for a password, so a test can check that it never shows in events, output or logs. The workers
read the broker from CELERY_BROKER_URL (Celery's own variable, as docs/scaling.md runs them) and load the code
location from the environment they are given, like the run that sends them its steps.
"""

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

INSTALL_ADVICE = (
    "redis-server was not found: install Debian's Redis (`apt-get install --no-install-recommends redis-server`, "
    "as .ci/run does)."
)
STARTUP_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(ready, process: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start (exit {process.poll()}):\n{log.read_text(errors='replace')}")
        time.sleep(0.1)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM (Celery's warm shutdown: running tasks finish), then SIGKILL if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class RedisServer:
    """redis-server on a free loopback port, nothing saved to disk, with a password; stopped on exit."""

    password = "broker-secret-4e7"

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.log = folder / "redis.log"
        self.url = f"redis://:{self.password}@127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen | None = None

    def _answers(self) -> bool:
        try:
            with redis.Redis("127.0.0.1", self.port, password=self.password, socket_timeout=0.5) as client:
                return client.ping()
        except redis.ConnectionError:
            return False

    def __enter__(self) -> "RedisServer":
        server = shutil.which("redis-server")
        if server is None:
            raise FileNotFoundError(INSTALL_ADVICE)
        command = [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        with open(self.log, "wb") as log:
            self._process = subprocess.Popen([*command, "--requirepass", self.password], stdout=log, stderr=log)
        _wait_for(self._answers, self._process, "redis-server", self.log)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._process is not None:
            _stop(self._process)


class CeleryWorker:
    """``celery -A dagster_celery.app worker`` named ``name`` with ``concurrency`` slots, as docs/scaling.md starts
    one, with ``env`` as its whole environment; stopped on exit. ``log`` holds what it printed."""

    def __init__(self, name: str, env: dict[str, str], cwd: Path, folder: Path, concurrency: int = 1) -> None:
        self.name, self.env, self.cwd, self.concurrency = name, env, cwd, concurrency
        self.log = folder / f"{name}.log"
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> "CeleryWorker":
        command = [sys.executable, "-m", "celery", "-A", "dagster_celery.app", "worker", "--loglevel", "INFO"]
        command += ["--hostname", f"{self.name}@%h", "--concurrency", str(self.concurrency)]
        with open(self.log, "wb") as log:
            self._process = subprocess.Popen(command, env=self.env, cwd=self.cwd, stdout=log, stderr=log)
        _wait_for(lambda: " ready." in self.log.read_text(errors="replace"), self._process, self.name, self.log)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._process is not None:
            _stop(self._process)
