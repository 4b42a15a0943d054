"""Dagster resources: where Ray's metrics are, where Parseable is, where local files go.

Without ``PARSEABLE_URL`` the rows go to the embedded local store under the data folder.

Settings come from environment variables (the names in the README are the public
interface). Secrets are passed as ``dg.EnvVar`` so Dagster resolves them only at run time
and the UI shows the variable's name, never its value.
"""

import math
import os
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from raymetrics_pipeline.localstore import LocalStore
from raymetrics_pipeline.otlp import parse_resource_attributes
from raymetrics_pipeline.parseable import ParseableClient, location
from raymetrics_pipeline.prometheus import LabelSet
from raymetrics_pipeline.query import LocalSql, MetricsQuery, ParseableSql
from raymetrics_pipeline.spool import Spool
from raymetrics_pipeline.targets import DEFAULT_DISCOVERY_FILE, Discovery, TargetSettings, discover


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


class ParseableResource(dg.ConfigurableResource):
    """A Parseable server's OTLP endpoint and the dataset the metrics go to."""

    url: str = ""
    username: str | None = None
    password: str | None = None
    stream: str = "raymetrics"
    otlp_encoding: str = "json"
    compression: str = "gzip"

    @property
    def configured(self) -> bool:
        """False means the embedded local store takes Parseable's place."""
        return bool(self.url)

    def problem(self) -> str | None:
        """Why shipping cannot start, in words that say what to set; None when it can."""
        if not self.url:
            return None
        if not self.username or not self.password:
            return (
                "PARSEABLE_URL is set but PARSEABLE_USERNAME and PARSEABLE_PASSWORD are not both set: "
                "set them to a Parseable user allowed to ingest (Parseable's own defaults are P_USERNAME / P_PASSWORD)."
            )
        try:
            self._new_client().close()  # the client checks the URL, dataset name, encoding and compression
        except ValueError as error:
            return str(error)
        return None

    def _new_client(self) -> ParseableClient:
        return ParseableClient(
            self.url, self.username, self.password, self.stream, self.otlp_encoding, self.compression
        )

    def client(self) -> ParseableClient:
        problem = self.problem()
        if problem:
            raise dg.Failure(description=problem)
        return self._new_client()

    def sql(self) -> ParseableSql:
        problem = self.problem()
        if problem:
            raise dg.Failure(description=problem)
        return ParseableSql(self.url, self.username, self.password, self.stream)


class LocalDataResource(dg.ConfigurableResource):
    """The folder for the pipeline's own files: the delivery spool and the embedded local store."""

    data_dir: str
    retention_days: float = 7.0

    def spool(self) -> Spool:
        return Spool(Path(self.data_dir) / "spool")

    def store(self, stream: str) -> LocalStore:
        return LocalStore(Path(self.data_dir) / "store", stream)


class RollupSettings(dg.ConfigurableResource):
    """How long rollups are kept and when metrics count as late."""

    retention_days: float = 400.0
    ingestion_freshness_minutes: float = 2.0
    rollup_freshness_minutes: float = 15.0


def rollups_database_path(environ: Mapping[str, str]) -> str:
    return environ.get("RAYMETRICS_DUCKDB_PATH") or str(Path(default_data_dir(environ)) / "rollups.duckdb")


def metrics_query(parseable: ParseableResource, local_data: LocalDataResource) -> MetricsQuery:
    """The query layer over wherever the rows are: Parseable when configured, else the local store."""
    if parseable.configured:
        return MetricsQuery(parseable.sql())
    return MetricsQuery(LocalSql(local_data.store(parseable.stream)))


def metrics_query_from_env() -> MetricsQuery:
    """The query layer for scripts and notebooks, from the same environment variables as the pipeline.

    Outside a Dagster run nothing resolves ``EnvVar`` settings, so this resolves them first.
    """
    resolved = {name: resource.process_config_and_initialize() for name, resource in resources_from_env().items()}
    return metrics_query(resolved["parseable"], resolved["local_data"])


def storage_location(parseable: ParseableResource, local_data: LocalDataResource) -> str:
    if parseable.configured:
        return location(parseable.url, parseable.stream)
    return local_data.store(parseable.stream).location


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
    advice = "give a number of seconds above 0 and below the 15 s scrape interval"
    return _number(name, environ, default, lambda value: 0 < value <= 14, advice)


def _days(name: str, environ: Mapping[str, str], default: float) -> float:
    return _number(name, environ, default, lambda days: days > 0, f"give a number of days above 0, e.g. {default:g}")


def _secret(name: str, environ: Mapping[str, str]) -> dg.EnvVar | None:
    return dg.EnvVar(name) if environ.get(name) else None


def resources_from_env(environ: Mapping[str, str] | None = None) -> dict[str, dg.ConfigurableResource]:
    """The resources as the environment describes them (see the README's settings table)."""
    environ = os.environ if environ is None else environ
    return {
        "ray_metrics": RayMetricsSource(
            targets=environ.get("RAY_METRICS_TARGETS", ""),
            dashboard_url=environ.get("RAY_DASHBOARD_URL", ""),
            discovery_file=environ.get("RAY_PROM_DISCOVERY_FILE") or DEFAULT_DISCOVERY_FILE,
            host_override=environ.get("RAY_METRICS_HOST", ""),
            scrape_timeout_seconds=_seconds("RAYMETRICS_SCRAPE_TIMEOUT", environ, 5.0),
            resource_attributes=environ.get("RAYMETRICS_RESOURCE_ATTRIBUTES", ""),
        ),
        "parseable": ParseableResource(
            url=environ.get("PARSEABLE_URL", ""),
            username=_secret("PARSEABLE_USERNAME", environ),
            password=_secret("PARSEABLE_PASSWORD", environ),
            stream=environ.get("PARSEABLE_STREAM") or "raymetrics",
            otlp_encoding=(environ.get("PARSEABLE_OTLP_ENCODING") or "json").lower(),
            compression=(environ.get("PARSEABLE_COMPRESSION") or "gzip").lower(),
        ),
        "local_data": LocalDataResource(
            data_dir=default_data_dir(environ), retention_days=_days("RAYMETRICS_LOCAL_RETENTION_DAYS", environ, 7)
        ),
        "rollups_db": DuckDBResource(database=rollups_database_path(environ)),
        "rollup_settings": RollupSettings(retention_days=_days("RAYMETRICS_ROLLUP_RETENTION_DAYS", environ, 400)),
    }
