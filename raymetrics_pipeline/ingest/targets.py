"""Where Ray's metrics endpoints are: a static list, the dashboard, or Ray's discovery file.

Read afresh on every tick, so nodes that join and clusters that restart (new ports) are
followed without a restart of Dagster.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import httpx

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

    def skip_reason(self) -> str:
        return (
            f"No Ray metrics endpoint to scrape ({self.detail}). Start Ray with metrics "
            f"(`{START_RAY_HINT}`), or set RAY_METRICS_TARGETS=host:port,..., RAY_DASHBOARD_URL="
            f"http://<head>:8265, or RAY_PROM_DISCOVERY_FILE to Ray's "
            f"prom_metrics_service_discovery.json."
        )


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
        try:
            response = httpx.get(url, timeout=timeout_seconds)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as error:
            return Discovery((), "RAY_DASHBOARD_URL", f"GET {url} failed: {type(error).__name__}: {error}")
        targets = _targets_from_sd(document, f"RAY_DASHBOARD_URL ({url})")
        source = "RAY_DASHBOARD_URL"
    else:
        path = Path(settings.discovery_file or DEFAULT_DISCOVERY_FILE)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return Discovery((), "RAY_PROM_DISCOVERY_FILE", f"{path} does not exist")
        except OSError as error:
            return Discovery((), "RAY_PROM_DISCOVERY_FILE", f"cannot read {path}: {error}")
        try:
            document = json.loads(text) if text.strip() else []
        except ValueError:
            # Ray rewrites this file in place; a torn read is retried next tick.
            return Discovery((), "RAY_PROM_DISCOVERY_FILE", f"{path} is not valid JSON (being rewritten?)")
        targets = _targets_from_sd(document, f"RAY_PROM_DISCOVERY_FILE ({path})")
        source = "RAY_PROM_DISCOVERY_FILE"

    if settings.host_override.strip():
        parse_target(f"{settings.host_override.strip()}:1", "RAY_METRICS_HOST")
        targets = _override_host(targets, settings.host_override.strip())
    detail = "" if targets else "the discovery document lists no targets"
    return Discovery(tuple(dict.fromkeys(targets)), source, detail)
