"""Dagster resources: where Ray's metrics are, which backend keeps them, where the rollups go.

The backend is chosen here, once: Parseable when ``PARSEABLE_URL`` is set, else the embedded
local store under the data folder. Everything else takes a ``MetricsBackendResource`` and asks
it for a sink, SQL or its location, never which kind it is (as Dagster's
``project_fully_featured`` does with its two ``HNClient`` implementations).

Settings come from environment variables (the names in the README are the public
interface). Secrets are passed as ``dg.EnvVar`` so Dagster resolves them only at run time
and the UI shows the variable's name, never its value.
"""

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import dagster as dg

from raymetrics_pipeline.common.urls import has_credentials, without_credentials
from raymetrics_pipeline.dataset.backend import Backend
from raymetrics_pipeline.dataset.query import MetricsQuery
from raymetrics_pipeline.ingest.otlp import parse_resource_attributes
from raymetrics_pipeline.ingest.prometheus import LabelSet
from raymetrics_pipeline.ingest.targets import DEFAULT_DISCOVERY_FILE, Discovery, TargetSettings, discover
from raymetrics_pipeline.parseable.backend import ParseableBackend
from raymetrics_pipeline.parseable.connection import parseable_location
from raymetrics_pipeline.parseable.spool import DEFAULT_MAX_AGE_SECONDS as DEFAULT_SPOOL_MAX_AGE_SECONDS
from raymetrics_pipeline.parseable.spool import DEFAULT_MAX_BYTES as DEFAULT_SPOOL_MAX_BYTES
from raymetrics_pipeline.rayapi.client import dashboard_url_from
from raymetrics_pipeline.rollups.database import RollupsLocked, connect, ensure_schema, wait_until_unlocked

if TYPE_CHECKING:  # a scrape run loads this module: DuckDB and PyArrow load only where they are used
    import duckdb

    from raymetrics_pipeline.localstore.backend import LocalStoreBackend


class RayMetricsSource(dg.ConfigurableResource):
    """Ray's Prometheus endpoints and how to scrape them."""

    targets: str = ""
    dashboard_url: str = ""
    discovery_file: str = DEFAULT_DISCOVERY_FILE
    host_override: str = ""
    scrape_timeout_seconds: float = 5.0
    resource_attributes: str = ""

    def discover(self) -> Discovery:
        return discover(TargetSettings(self.targets, self.dashboard_url, self.discovery_file, self.host_override))

    def attributes(self) -> LabelSet:
        return parse_resource_attributes(self.resource_attributes)

    def cluster_id(self) -> str:
        """``cluster_id`` of RAYMETRICS_RESOURCE_ATTRIBUTES, as the rollups key rows by it ('' when unset)."""
        attributes = self.attributes()
        return dict(zip(attributes.keys, attributes.values, strict=True)).get("cluster_id", "")

    def ray_dashboard_url(self) -> str:
        """RAY_DASHBOARD_URL, else the dashboard of the Ray session the discovery file belongs to, if it answers
        (raises ``DashboardNotFound`` saying what was tried)."""
        # Ray keeps the discovery file (or its link) in its temp dir, beside session_latest.
        return self.dashboard_url or dashboard_url_from(self.discovery_file, Path(self.discovery_file).parent)


class MetricsBackendResource(dg.ConfigurableResource, ABC):
    """Where the metrics go and are read from: the dataset ``stream``, with local files under ``data_dir``."""

    data_dir: str
    stream: str = "raymetrics"
    kinds: ClassVar[set[str]]  # how the UI labels the dataset's asset

    @abstractmethod
    def backend(self) -> Backend:
        """The backend these settings describe; a ``ValueError`` names a setting to fix."""

    @abstractmethod
    def describe_location(self) -> str:
        """Where the rows are, for people, worked out without credentials."""

    @property
    def location(self) -> str:
        try:
            return self.describe_location()
        except ValueError as error:
            return f"not usable until fixed: {error}"

    def problem(self) -> str | None:
        """Why nothing can be shipped or read, in words that say what to set; None when all is well."""
        try:
            self.backend()
        except ValueError as error:
            return str(error)
        return None

    def checked_backend(self) -> Backend:
        try:
            return self.backend()
        except ValueError as error:
            raise dg.Failure(description=str(error)) from None

    def query(self) -> MetricsQuery:
        """The query layer over this backend; close it (``with``) when done."""
        return MetricsQuery(self.checked_backend().sql())


class ParseableResource(MetricsBackendResource):
    """A Parseable server's OTLP endpoint and SQL API; undelivered requests wait in ``data_dir/spool``."""

    kinds: ClassVar[set[str]] = {"parseable", "opentelemetry"}
    url: str
    username: str | None = None
    password: str | None = None
    otlp_encoding: str = "json"
    compression: str = "gzip"
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES
    spool_max_age_hours: float = DEFAULT_SPOOL_MAX_AGE_SECONDS / 3600

    def backend(self) -> ParseableBackend:
        return ParseableBackend(
            self.url,
            self.username,
            self.password,
            self.stream,
            Path(self.data_dir) / "spool",
            self.otlp_encoding,
            self.compression,
            self.spool_max_bytes,
            self.spool_max_age_hours * 3600,
        )

    def describe_location(self) -> str:
        return parseable_location(self.url, self.stream)


class LocalStoreResource(MetricsBackendResource):
    """The embedded default: files under ``data_dir/store`` (hours compacted to Parquet), kept ``retention_days``."""

    kinds: ClassVar[set[str]] = {"parquet", "opentelemetry"}
    retention_days: float = 7.0

    def backend(self) -> "LocalStoreBackend":
        from raymetrics_pipeline.localstore.backend import LocalStoreBackend

        return LocalStoreBackend(Path(self.data_dir) / "store", self.stream, self.retention_days)

    def describe_location(self) -> str:
        return self.backend().location


class RollupsDatabase(dg.ConfigurableResource):
    """``rollups.duckdb``, its tables made or grown to their declarations on every connection. DuckDB lets
    one process write at a time: a writer waits (saying who holds the file) while another has it, up to
    ``lock_wait_seconds``."""

    database: str
    lock_wait_seconds: float = 300.0

    @contextmanager
    def writer(self, log) -> Iterator["duckdb.DuckDBPyConnection"]:
        try:
            wait_until_unlocked(self.database, self.lock_wait_seconds, log.warning)
        except RollupsLocked as error:
            raise dg.Failure(description=str(error)) from None
        with connect(self.database) as connection:
            ensure_schema(connection)
            yield connection


# The newest Ray sample may be this old before `raymetrics_is_fresh` fails.
INGESTION_FRESHNESS_MINUTES = 2.0


class RollupSettings(dg.ConfigurableResource):
    """How long rollups are kept, when metrics count as late, where report files go."""

    reports_dir: str
    retention_days: float = 400.0
    ingestion_freshness_minutes: float = INGESTION_FRESHNESS_MINUTES
    rollup_freshness_minutes: float = 15.0


def default_data_dir(environ: Mapping[str, str]) -> str:
    if environ.get("RAYMETRICS_DATA_DIR"):
        return environ["RAYMETRICS_DATA_DIR"]
    if environ.get("DAGSTER_HOME"):
        return str(Path(environ["DAGSTER_HOME"]) / "raymetrics")
    return str(Path.cwd() / ".raymetrics")


def _number(name: str, environ: Mapping[str, str], default: float, valid, advice: str) -> float:
    """A numeric setting, or a clear error that names it and says what to give."""
    text = environ.get(name) or str(default)
    try:
        value = float(text)
    except ValueError:
        value = math.nan  # fails every ``valid``
    if not valid(value):
        raise ValueError(f"{name}={text!r}: {advice}")
    return value


def _seconds(name: str, environ: Mapping[str, str], default: float) -> float:
    advice = "give a number of seconds from 0.1 to 14 (below the 15 s scrape interval)"
    return _number(name, environ, default, lambda value: 0.1 <= value <= 14, advice)


def _days(name: str, environ: Mapping[str, str], default: float) -> float:
    return _number(name, environ, default, lambda days: days > 0, f"give a number of days above 0, e.g. {default:g}")


ROLLUP_START_DAYS = "RAYMETRICS_ROLLUP_START_DAYS"
MAX_ROLLUP_START_DAYS = 3660


def rollup_start(environ: Mapping[str, str] | None = None, now: datetime | None = None) -> datetime:
    """Where the hourly rollup partitions begin: midnight UTC, ``RAYMETRICS_ROLLUP_START_DAYS`` (default 7) days
    before today, so the UI offers only hours that can hold data and "Materialize all" stays small."""
    environ = os.environ if environ is None else environ
    days = _number(
        ROLLUP_START_DAYS,
        environ,
        7,
        lambda value: 0 <= value <= MAX_ROLLUP_START_DAYS and value == int(value),
        f"give a whole number of days from 0 (today) to {MAX_ROLLUP_START_DAYS}, e.g. 7",
    )
    today = (now or datetime.now(UTC)).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=int(days))


def _secret(name: str, environ: Mapping[str, str]) -> dg.EnvVar | None:
    return dg.EnvVar(name) if environ.get(name) else None


def _url_setting(name: str, environ: Mapping[str, str], credentials_allowed: bool = False) -> str | dg.EnvVar:
    """A setting that names URLs, as Dagster keeps and shows it (resource config: the UI, every run's job
    snapshot). Where credentials are refused (with an error naming the setting), they are masked here so the
    refusal never stores them; where they are allowed (RAY_DASHBOARD_URL), such a value is read from the
    environment when used, never stored."""
    value = environ.get(name, "")
    if not has_credentials(value):
        return value
    return dg.EnvVar(name) if credentials_allowed else without_credentials(value)


# The spool must hold at least a few cycles' bodies of a large cluster.
MIN_SPOOL_BYTES = 16 * 1024**2


def backend_from_env(environ: Mapping[str, str]) -> MetricsBackendResource:
    """Parseable when ``PARSEABLE_URL`` is set, else the embedded local store: the one place this is decided."""
    data_dir = default_data_dir(environ)
    stream = environ.get("PARSEABLE_STREAM") or "raymetrics"
    if not environ.get("PARSEABLE_URL"):
        retention_days = _days("RAYMETRICS_LOCAL_RETENTION_DAYS", environ, 7)
        return LocalStoreResource(data_dir=data_dir, stream=stream, retention_days=retention_days)
    return ParseableResource(
        data_dir=data_dir,
        stream=stream,
        url=_url_setting("PARSEABLE_URL", environ),
        username=_secret("PARSEABLE_USERNAME", environ),
        password=_secret("PARSEABLE_PASSWORD", environ),
        otlp_encoding=(environ.get("PARSEABLE_OTLP_ENCODING") or "json").lower(),
        compression=(environ.get("PARSEABLE_COMPRESSION") or "gzip").lower(),
        spool_max_bytes=int(
            _number(
                "RAYMETRICS_SPOOL_MAX_BYTES",
                environ,
                DEFAULT_SPOOL_MAX_BYTES,
                lambda value: value >= MIN_SPOOL_BYTES,
                f"give a number of bytes of at least {MIN_SPOOL_BYTES} (16 MiB), e.g. {DEFAULT_SPOOL_MAX_BYTES}",
            )
        ),
        spool_max_age_hours=_number(
            "RAYMETRICS_SPOOL_MAX_AGE_HOURS",
            environ,
            DEFAULT_SPOOL_MAX_AGE_SECONDS / 3600,
            lambda hours: hours >= 1,
            "give a number of hours of at least 1 (a Parseable outage the spool should outlast), e.g. 168",
        ),
    )


def resources_from_env(environ: Mapping[str, str] | None = None) -> dict[str, dg.ConfigurableResource]:
    """The resources as the environment describes them (see the README's settings table)."""
    environ = os.environ if environ is None else environ
    data_dir = default_data_dir(environ)
    return {
        "ray_metrics": RayMetricsSource(
            targets=_url_setting("RAY_METRICS_TARGETS", environ),
            dashboard_url=_url_setting("RAY_DASHBOARD_URL", environ, credentials_allowed=True),
            discovery_file=environ.get("RAY_PROM_DISCOVERY_FILE") or DEFAULT_DISCOVERY_FILE,
            host_override=environ.get("RAY_METRICS_HOST", ""),
            scrape_timeout_seconds=_seconds("RAYMETRICS_SCRAPE_TIMEOUT", environ, 5.0),
            resource_attributes=environ.get("RAYMETRICS_RESOURCE_ATTRIBUTES", ""),
        ),
        "backend": backend_from_env(environ),
        "rollups_db": RollupsDatabase(
            database=environ.get("RAYMETRICS_DUCKDB_PATH") or str(Path(data_dir) / "rollups.duckdb")
        ),
        "rollup_settings": RollupSettings(
            reports_dir=str(Path(data_dir) / "comparison"),
            retention_days=_days("RAYMETRICS_ROLLUP_RETENTION_DAYS", environ, 400),
        ),
    }


MAX_SCRAPE_SHARDS = 64
SCRAPE_EXECUTORS = ("multiprocess", "celery")
# Celery's own name for its broker: dagster-celery workers read it too, so they need no config file.
CELERY_BROKER_URL = "CELERY_BROKER_URL"


@dataclass(frozen=True)
class ScaleOut:
    """How the scrape job spreads its targets: over ``shards`` ops of one run, run by ``executor``."""

    shards: int = 1
    executor: str = "multiprocess"


def scale_out_from_env(environ: Mapping[str, str] | None = None) -> ScaleOut:
    """RAYMETRICS_SCRAPE_SHARDS and RAYMETRICS_SCRAPE_EXECUTOR (docs/scaling.md), or a clear error naming them."""
    environ = os.environ if environ is None else environ
    shards = _number(
        "RAYMETRICS_SCRAPE_SHARDS",
        environ,
        1,
        lambda value: 1 <= value <= MAX_SCRAPE_SHARDS and value == int(value),
        f"give a whole number of shards from 1 (one process scrapes every target) to {MAX_SCRAPE_SHARDS}, e.g. 4",
    )
    executor = (environ.get("RAYMETRICS_SCRAPE_EXECUTOR") or SCRAPE_EXECUTORS[0]).lower()
    if executor not in SCRAPE_EXECUTORS:
        raise ValueError(
            f"RAYMETRICS_SCRAPE_EXECUTOR={executor!r}: give multiprocess (a process per shard on the machine of "
            "the run) or celery (dagster-celery workers on the broker in CELERY_BROKER_URL)"
        )
    if executor == "celery" and not environ.get(CELERY_BROKER_URL):
        raise ValueError(
            "RAYMETRICS_SCRAPE_EXECUTOR=celery needs CELERY_BROKER_URL, the broker the dagster-celery workers "
            "listen on, e.g. redis://127.0.0.1:6379/0"
        )
    return ScaleOut(int(shards), executor)


def metrics_query_from_env() -> MetricsQuery:
    """The query layer for scripts and notebooks, from the same environment variables as the pipeline.

    Outside a Dagster run nothing resolves ``EnvVar`` settings, so this resolves them first.
    """
    return backend_from_env(os.environ).process_config_and_initialize().query()
