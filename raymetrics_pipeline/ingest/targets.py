"""Where Ray's metrics endpoints are: a static list, the dashboard, or Ray's discovery file.

Read afresh on every tick, so nodes that join and clusters that restart (new ports) are
followed without a restart of Dagster.
"""

from __future__ import annotations

import json
import os
import re
import stat
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from raymetrics_pipeline.common.urls import scrub, without_credentials

DEFAULT_DISCOVERY_FILE = "/tmp/ray/prom_metrics_service_discovery.json"
START_RAY_HINT = "ray start --head --metrics-export-port=8080"

_TARGET_RE = re.compile(r"(?:\[(?P<ipv6>[0-9a-fA-F:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>[0-9]{1,5})")


class TargetError(ValueError):
    """A setting or discovery document that names targets badly."""


@dataclass(frozen=True)
class TargetSettings:
    static_targets: str = ""  # RAY_METRICS_TARGETS
    dashboard_url: str = ""  # RAY_DASHBOARD_URL
    discovery_file: str = DEFAULT_DISCOVERY_FILE  # RAY_PROM_DISCOVERY_FILE
    host_override: str = ""  # RAY_METRICS_HOST


@dataclass(frozen=True)
class Discovery:
    targets: tuple[str, ...]
    source: str  # which setting the targets came from
    detail: str = ""  # why there are none, when there are none
    origin: str = ""  # the file or URL the targets were read from
    session: str = ""  # the Ray session the discovery file belongs to, when that can be known
    host_override: str = ""  # RAY_METRICS_HOST, when it replaced the discovered hosts
    shard: str = ""  # "i of n" when narrowed to one shard of the targets (RAYMETRICS_SCRAPE_SHARDS)

    def skip_reason(self) -> str:
        return (
            f"No Ray metrics endpoint to scrape ({self.detail}). Start Ray with metrics "
            f"(`{START_RAY_HINT}`), or set RAY_METRICS_TARGETS=host:port,..., RAY_DASHBOARD_URL="
            f"http://<head>:8265, or RAY_PROM_DISCOVERY_FILE to Ray's "
            f"prom_metrics_service_discovery.json."
        )

    def describe(self) -> str:
        """Where the targets came from, e.g. ``3 targets from RAY_PROM_DISCOVERY_FILE /tmp/ray/..., session ...``."""
        text = f"{len(self.targets)} target{'s' if len(self.targets) != 1 else ''}"
        text += f" of shard {self.shard}" if self.shard else ""
        text += f" from {self.source}"
        text += f" {self.origin}" if self.origin else ""
        text += f", session {self.session}" if self.session else ""
        return text + (f", host replaced by RAY_METRICS_HOST={self.host_override}" if self.host_override else "")

    def advice(self) -> str:
        """What to check when endpoints do not answer, for where the targets came from."""
        reach = (
            "If Ray is running but this machine cannot reach these addresses (port-forward, NAT, a container, "
            "a node that reports an interface address this machine has no route to), set RAY_METRICS_HOST to the "
            "host that reaches them."
        )
        if self.host_override:
            reach = f"Check that RAY_METRICS_HOST={self.host_override} reaches the nodes' metrics ports."
        if self.source == "RAY_METRICS_TARGETS":
            return (
                "Is Ray running on those hosts, started with --metrics-export-port (e.g. "
                f"`{START_RAY_HINT}`)? Check that RAY_METRICS_TARGETS lists their metrics host:port."
            )
        if self.source == "RAY_DASHBOARD_URL":
            return (
                "Is Ray running? The dashboard still lists these endpoints, so check that the nodes are up and "
                f"their metrics ports are open to this machine. {reach}"
            )
        return (
            "Is Ray running? `ray stop` leaves the discovery file behind, still listing the stopped session's "
            f"ports: start Ray (`{START_RAY_HINT}`) or set RAY_PROM_DISCOVERY_FILE to the running cluster's "
            f"file. {reach}"
        )

    def unreachable_reason(self, errors: Mapping[str, str], headline: str = "No Ray metrics endpoint answers") -> str:
        """Why no endpoint answers (``errors``: target → what happened) and what to check."""
        return f"{headline} ({self.describe()}: {_listing(errors)}). {self.advice()}"

    def partly_unreachable(self, errors: Mapping[str, str]) -> str:
        """Some endpoints did not answer (``errors``), the others did: which, and what to check."""
        return (
            f"{len(errors)} of {len(self.targets)} Ray metrics endpoints did not answer ({_listing(errors)}); "
            f"the others were scraped. {self.advice()}"
        )

    def sharded(self, shard: int, shards: int) -> Discovery:
        """Only the targets of shard ``shard`` of ``shards``: messages about it then speak of that shard."""
        return replace(self, targets=in_shard(self.targets, shard, shards), shard=f"{shard} of {shards}")


def shard_of(target: str, shards: int) -> int:
    """The shard (0 to ``shards`` - 1) that scrapes ``target`` (``host:port``): CRC-32 of the text, so the same
    in every process, run and machine (Python's ``hash`` of a string changes from one process to the next)."""
    return zlib.crc32(target.encode()) % shards


def in_shard(targets: Iterable[str], shard: int, shards: int) -> tuple[str, ...]:
    return tuple(target for target in targets if shard_of(target, shards) == shard)


LISTED_TARGETS = 5  # named in a message; the rest are counted


def _listing(errors: Mapping[str, str]) -> str:
    items = [f"{target} {error}" for target, error in list(errors.items())[:LISTED_TARGETS]]
    more = len(errors) - LISTED_TARGETS
    return "; ".join(items) + (f"; and {more} more" if more > 0 else "")


def session_folder(path: Path) -> Path | None:
    """The Ray session folder a discovery file belongs to: Ray 2.60 writes it as ``<temp_dir>/<session>/...`` and
    links ``<temp_dir>/prom_metrics_service_discovery.json`` to it. None when that cannot be told (a copy, say)."""
    try:
        folder = path.resolve(strict=True).parent
    except (OSError, RuntimeError):  # gone, or a symlink loop
        return None
    return folder if folder.name.startswith("session_") else None


def session_of(path: Path) -> str:
    """The name of the Ray session a discovery file belongs to; empty when that cannot be told."""
    folder = session_folder(path)
    return folder.name if folder else ""


# Ray writes a few hundred bytes per node; anything far larger is not its discovery file.
MAX_DISCOVERY_FILE_BYTES = 8 * 1024 * 1024


class DiscoveryFileRefused(Exception):
    """RAY_PROM_DISCOVERY_FILE names something that is not a discovery file Ray could have written."""


def read_discovery_file(path: Path) -> str:
    """The discovery file's text, read in bounded time and size: a FIFO, a device or a folder is refused
    without waiting on it (opened non-blocking, then checked), a file larger than Ray would write is refused."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        kind = "a named pipe" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode) else "not a file"
        raise DiscoveryFileRefused(
            f"{path} is {kind}, not Ray's discovery file: set RAY_PROM_DISCOVERY_FILE to "
            "<Ray temp dir>/prom_metrics_service_discovery.json"
        )
    with os.fdopen(descriptor, "rb") as handle:
        data = handle.read(MAX_DISCOVERY_FILE_BYTES + 1)
    if len(data) > MAX_DISCOVERY_FILE_BYTES:
        raise DiscoveryFileRefused(
            f"{path} is larger than {MAX_DISCOVERY_FILE_BYTES // 2**20} MiB, far more than Ray writes (a few hundred "
            "bytes per node): check RAY_PROM_DISCOVERY_FILE"
        )
    return data.decode("utf-8", errors="replace")


def parse_target(text: str, setting: str) -> tuple[str, int]:
    match = _TARGET_RE.fullmatch(text.strip())
    port = int(match.group("port")) if match else 0
    if not match or not 0 < port < 65536:
        raise TargetError(f"{setting}: {text!r} is not host:port (for example 10.0.0.5:8080)")
    return match.group("ipv6") or match.group("host"), port


def _format(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _targets_from_sd(document: object, setting: str) -> list[str]:
    """Targets from Prometheus' http_sd / file_sd shape: ``[{"labels":{...},"targets":[...]}]``."""
    if not isinstance(document, list) or not all(isinstance(group, dict) for group in document):
        raise TargetError(f'{setting}: expected a JSON list of {{"labels": ..., "targets": [...]}} groups')
    targets = []
    for group in document:
        for target in group.get("targets") or []:
            targets.append(_format(*parse_target(str(target), setting)))
    return targets


def _override_host(targets: list[str], host: str) -> list[str]:
    return [_format(host, parse_target(target, "discovered target")[1]) for target in targets]


def discover(settings: TargetSettings, timeout_seconds: float = 2.0) -> Discovery:
    """Static list first, else the dashboard, else the discovery file.

    Raises ``TargetError`` for a setting that is malformed (a user must fix it); returns an
    empty ``Discovery`` with the reason when there is simply nothing running.
    """
    if settings.static_targets.strip():
        targets = [
            _format(*parse_target(item, "RAY_METRICS_TARGETS"))
            for item in settings.static_targets.split(",")
            if item.strip()
        ]
        return Discovery(tuple(dict.fromkeys(targets)), "RAY_METRICS_TARGETS")

    if settings.dashboard_url.strip():
        url = settings.dashboard_url.strip().rstrip("/") + "/api/prometheus/sd"
        shown = without_credentials(url)  # httpx's errors repeat the URL as given
        try:
            response = httpx.get(url, timeout=timeout_seconds)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as error:
            reason = scrub(str(error), url)
            return Discovery((), "RAY_DASHBOARD_URL", f"GET {shown} failed: {type(error).__name__}: {reason}")
        targets = _targets_from_sd(document, f"RAY_DASHBOARD_URL ({shown})")
        source, origin, session = "RAY_DASHBOARD_URL", shown, ""
    else:
        path = Path(settings.discovery_file or DEFAULT_DISCOVERY_FILE)
        try:
            text = read_discovery_file(path)
        except FileNotFoundError:
            return Discovery((), "RAY_PROM_DISCOVERY_FILE", f"{path} does not exist")
        except OSError as error:
            return Discovery((), "RAY_PROM_DISCOVERY_FILE", f"cannot read {path}: {error}")
        except DiscoveryFileRefused as error:
            return Discovery((), "RAY_PROM_DISCOVERY_FILE", str(error))
        try:
            document = json.loads(text) if text.strip() else []
        except ValueError:
            # Ray rewrites this file in place; a torn read is retried next tick.
            return Discovery((), "RAY_PROM_DISCOVERY_FILE", f"{path} is not valid JSON (being rewritten?)")
        targets = _targets_from_sd(document, f"RAY_PROM_DISCOVERY_FILE ({path})")
        source, origin, session = "RAY_PROM_DISCOVERY_FILE", str(path), session_of(path)

    host = settings.host_override.strip()
    if host:
        parse_target(f"{host}:1", "RAY_METRICS_HOST")
        targets = _override_host(targets, host)
    detail = "" if targets else "the discovery document lists no targets"
    return Discovery(tuple(dict.fromkeys(targets)), source, detail, origin, session, host)
