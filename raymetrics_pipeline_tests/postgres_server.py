"""A real PostgreSQL server for tests, from Debian's `postgresql` package, on 127.0.0.1 and a free port.

PostgreSQL refuses to run as root, and CI runs as root: the server then runs as the package's `postgres`
user, in a temporary folder that user owns. Its database is made as docs/deploy.md makes it: owned by a login
role with a password.
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BINARIES_GLOB = "/usr/lib/postgresql/*/bin"
INSTALL_ADVICE = (
    "PostgreSQL's server binaries were not found under /usr/lib/postgresql/*/bin: install Debian's PostgreSQL "
    "(`apt-get install --no-install-recommends postgresql`, as .ci/run does)."
)


def server_binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder, or None."""
    found = [Path(path) for path in glob.glob(BINARIES_GLOB) if (Path(path) / "initdb").exists()]
    return max(found, key=lambda path: int(path.parent.name), default=None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """Starts a throwaway cluster with a login role ``user`` (password ``password``) owning database ``database``;
    stops it and deletes its files on exit."""

    user, password, database = "raymetrics", "test-pg-password-5d1", "raymetrics_dagster"
    host = "127.0.0.1"
    timezone = "Asia/Tokyo"  # UTC+9 all year

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.port = free_port()
        # As root, run the server as `postgres`; as anyone else, as oneself.
        self._as_server_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.folder = Path(tempfile.mkdtemp(prefix="raymetrics-pg-"))
        self.data = self.folder / "data"
        self._log = open(self.folder / "server.log", "wb")  # closed in __exit__
        self._server: subprocess.Popen | None = None

    def environment(self) -> dict[str, str]:
        """The settings tools/deploy/dagster.yaml reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.database,
        }

    def _run(self, program: str, *arguments: str) -> str:
        command = [*self._as_server_user, str(self.binaries / program), *arguments]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=self.folder)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done.stdout

    def psql(self, sql: str) -> str:
        """``sql`` as the superuser, over the cluster's own unix socket (peer authentication)."""
        return self._run("psql", "-h", str(self.folder), "-p", str(self.port), "-d", "postgres", "-qAt", "-c", sql)

    def __enter__(self) -> "PostgresServer":
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        if self._as_server_user:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "--auth-local=peer", "--auth-host=scram-sha-256", "--no-sync")
        # Our own child (not daemonized by pg_ctl), so this process reaps it. A throwaway server needs no
        # durability: without fsync it starts and writes faster. It runs on UTC+9, as Debian's does on a machine
        # set to a local time zone, so a client that relies on the server's zone fails here.
        self._server = subprocess.Popen(
            [*self._as_server_user, str(self.binaries / "postgres"), "-D", str(self.data)]
            + ["-h", self.host, "-p", str(self.port), "-k", str(self.folder)]
            + ["-c", "fsync=off", "-c", f"timezone={self.timezone}"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
        )
        self._wait_until_ready()
        self.psql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
        self.psql(f"CREATE DATABASE {self.database} OWNER {self.user}")

    def _wait_until_ready(self, timeout_seconds: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self._server.poll() is not None:
                raise RuntimeError(f"postgres exited with {self._server.returncode}:\n{self.log()}")
            ready = subprocess.run([str(self.binaries / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port)])
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"postgres did not accept connections within {timeout_seconds:g} s:\n{self.log()}")

    def log(self) -> str:
        return (self.folder / "server.log").read_text(errors="replace")

    def __exit__(self, *exc_info) -> None:
        try:
            if self._server is not None:
                # pg_ctl signals the server itself (a signal to runuser would end it with SIGKILL after 2 s).
                if self._server.poll() is None:
                    self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
                self._server.wait(timeout=30)
        finally:
            self._log.close()
            shutil.rmtree(self.folder, ignore_errors=True)
