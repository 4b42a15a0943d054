"""One query layer over Parseable and the local store: ``query(sql, start, end) -> rows``.

Both backends answer with Parseable's semantics (parseable-contract.md §3): the table is named
after the stream, only rows whose ingest time ``p_timestamp`` lies in ``[start, end)`` are
seen, both bounds are truncated to the minute, and rows come back as Parseable renders them
in JSON (timestamps as ``2026-11-28T08:15:00.123`` strings, no trailing ``Z``; non-finite
floats as None), so later code runs unchanged on either.

SQL may also name ``ray_points``: the stream's rows with four columns added, ``ray_node``,
``ray_session``, ``ray_cluster`` and ``ray_job``, each taken from whichever label the metric uses
(``ray_node_*`` series say ``ip`` where others say ``NodeAddress``; Parseable v2.5.x
prefixed them ``metric_``), and ``''`` where a row has none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import httpx
import pyarrow.dataset as ds
from datafusion import SessionContext

from raymetrics_pipeline.localstore import LocalStore, StoreEmpty, files_dataset, unified_schema
from raymetrics_pipeline.parseable import http_client, location, server_url, validate_stream_name
from raymetrics_pipeline.parseable_rows import RECEIVED_AT

RAY_POINTS = "ray_points"
# Identity column → the labels that carry it, preferred first.
IDENTITY_LABELS: dict[str, tuple[str, ...]] = {
    "ray_node": ("NodeAddress", "ip"),
    "ray_session": ("SessionName",),
    "ray_cluster": ("cluster_id",),
    "ray_job": ("JobId",),
}
# Parseable v2.5.0-v2.5.8 wrote data-point attributes as metric_<key> (contract §2.3).
_V25_PREFIX = "metric_"
_BARE_COUNT_RE = re.compile(
    r"\s*select\s+count\s*\(\s*\*\s*\)(\s+as\s+\"?\w+\"?)?\s+from\s+(\"[^\"]+\"|\w+)\s*;?\s*", re.I
)
_USES_RAY_POINTS_RE = re.compile(rf"\b{RAY_POINTS}\b", re.I)
_RETRIES_ON_VANISHED_FILE = 3


class QueryError(Exception):
    """A query failed; the message carries the SQL and the backend's own words."""


class MetricsBackend(Protocol):
    stream: str

    def columns(self, start: datetime, end: datetime) -> list[str]:
        """The columns a query over ``[start, end)`` can name."""

    def run(self, sql: str, start: datetime, end: datetime) -> list[dict]: ...

    def where(self) -> str: ...


def minute(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _render(value: object) -> object:
    """A cell as Parseable's JSON renders it (arrow-json): naive timestamps without ``Z``."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return _rfc3339(value)
        text = value.strftime("%Y-%m-%dT%H:%M:%S")
        micros = value.microsecond
        if micros:
            text += f".{micros // 1000:03d}" if micros % 1000 == 0 else f".{micros:06d}"
        return text
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, list):
        return [_render(item) for item in value]
    if isinstance(value, dict):
        return {key: _render(item) for key, item in value.items()}
    return value


class LocalSql:
    """DataFusion over the local store's Parquet files, with Parseable's time window."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self.stream = store.stream
        self._schemas: dict = {}

    def where(self) -> str:
        return self.store.location

    def _files(self, start: datetime, end: datetime) -> list:
        """The window's files; with none, the newest file lends its columns so the SQL still plans."""
        files = self.store.files(start, end) or [self.store.newest_file()]
        for gone in set(self._schemas) - set(files):
            del self._schemas[gone]
        return files

    def columns(self, start: datetime, end: datetime) -> list[str]:
        return unified_schema(self._files(start, end), self._schemas).names

    def run(self, sql: str, start: datetime, end: datetime) -> list[dict]:
        retries = _RETRIES_ON_VANISHED_FILE
        while True:
            files = self._files(start, end)
            try:
                return self._run(sql, files_dataset(files, self._schemas), start, end)
            except FileNotFoundError:
                # Compaction or retention replaced a file between listing and reading: list again.
                if not retries:
                    raise
                retries -= 1

    def _run(self, sql: str, dataset: ds.Dataset, start: datetime, end: datetime) -> list[dict]:
        context = SessionContext()
        context.register_dataset("__stored_rows", dataset)
        window = context.sql(
            f"SELECT * FROM __stored_rows WHERE {RECEIVED_AT} >= TIMESTAMP '{start:%Y-%m-%d %H:%M:%S}' "
            f"AND {RECEIVED_AT} < TIMESTAMP '{end:%Y-%m-%d %H:%M:%S}'"
        )
        context.register_view(f'"{self.stream}"', window)
        try:
            table = context.sql(sql).to_arrow_table()
        except Exception as error:  # DataFusion raises plain Exception for planning and execution errors
            if "FileNotFoundError" in str(error):  # a file vanished under the scan (raised through Arrow)
                raise FileNotFoundError(str(error)) from error
            raise QueryError(f"local store query failed: {error}\nSQL: {sql}") from None
        return [{name: _render(value) for name, value in row.items()} for row in table.to_pylist()]


class ParseableSql:
    """Parseable's ``POST /api/v1/query`` (contract §3)."""

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        stream: str = "raymetrics",
        timeout_seconds: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = server_url(url)
        self.stream = validate_stream_name(stream)
        self._client = http_client(username, password, timeout_seconds, transport)

    def close(self) -> None:
        self._client.close()

    def where(self) -> str:
        return location(self.url, self.stream)

    def columns(self, start: datetime, end: datetime) -> list[str]:
        """The stream's schema, which on Parseable only ever grows, whatever the window."""
        response = self._request("GET", f"/api/v1/logstream/{self.stream}/schema", f"schema of {self.stream}")
        return [field["name"] for field in response.json().get("fields", [])]

    def run(self, sql: str, start: datetime, end: datetime) -> list[dict]:
        bare_count = _BARE_COUNT_RE.fullmatch(sql)
        if bare_count:
            # A bare COUNT(*) is answered from uploaded manifests only and misses fresh rows (§3.4).
            sql = sql.rstrip().rstrip(";") + f" WHERE {RECEIVED_AT} IS NOT NULL"
        body = {"query": sql, "startTime": _rfc3339(start), "endTime": _rfc3339(end), "sendNull": True}
        response = self._request("POST", "/api/v1/query", sql, json=body)
        return response.json()

    def _request(self, method: str, path: str, what: str, **kwargs) -> httpx.Response:
        try:
            response = self._client.request(method, self.url + path, **kwargs)
        except httpx.HTTPError as error:
            raise QueryError(
                f"Parseable at {self.url} did not answer ({type(error).__name__}: {error})\nSQL: {what}"
            ) from None
        if response.status_code in (401, 403):
            raise QueryError(
                f"Parseable at {self.url} refused the credentials ({response.status_code}): check "
                f"PARSEABLE_USERNAME and PARSEABLE_PASSWORD and that the user may query {self.stream}\nSQL: {what}"
            )
        if response.status_code != 200:
            raise QueryError(f"Parseable answered {response.status_code}: {response.text.strip()[:2000]}\nSQL: {what}")
        return response


def _identity_expression(labels: Sequence[str], columns: set[str]) -> str:
    present = [name for label in labels for name in (label, _V25_PREFIX + label) if name in columns]
    if not present:
        return "''"
    return "COALESCE(" + ", ".join(f"NULLIF(\"{name}\", '')" for name in present) + ", '')"


class MetricsQuery:
    """``query(sql, start, end)`` on either backend, with ``ray_points`` available to the SQL.

    Each window's columns are read once (a schema request on Parseable, file footers locally)
    and kept for this object's life, a run or a script: make a new one to see columns added since.
    """

    def __init__(self, backend: MetricsBackend) -> None:
        self.backend = backend
        self.stream = backend.stream
        self._columns: dict[tuple[datetime, datetime], set[str]] = {}

    def where(self) -> str:
        return self.backend.where()

    def columns(self, start: datetime, end: datetime) -> set[str]:
        """The stream's columns a query over ``[start, end)`` can name (both truncated to the minute)."""
        window = minute(start), minute(end)
        if window not in self._columns:
            self._columns[window] = set(self.backend.columns(*window))
        return self._columns[window]

    def ray_points(self, start: datetime, end: datetime) -> str:
        """The ``ray_points`` relation's SQL for the columns the stream has in ``[start, end)``."""
        columns = self.columns(start, end)
        shadowed = [name for name in IDENTITY_LABELS if name in columns]
        star = "*" if not shadowed else "* EXCLUDE (" + ", ".join(f'"{name}"' for name in shadowed) + ")"
        identity = ", ".join(
            f"{_identity_expression(labels, columns)} AS {name}" for name, labels in IDENTITY_LABELS.items()
        )
        return f'SELECT {star}, {identity} FROM "{self.stream}"'

    def query(self, sql: str, start: datetime, end: datetime | None = None) -> list[dict]:
        """Rows ingested in ``[start, end)``, both truncated to the minute; ``end=None`` means up to now,
        the current minute included (which Parseable's own ``"now"`` leaves out)."""
        if end is None:
            end = datetime.now(UTC) + timedelta(minutes=1)
        start, end = minute(start), minute(end)
        if start > end:
            raise QueryError(f"start {start:%Y-%m-%dT%H:%MZ} is after end {end:%Y-%m-%dT%H:%MZ}\nSQL: {sql}")
        try:
            if _USES_RAY_POINTS_RE.search(sql):
                sql = _with_relation(RAY_POINTS, self.ray_points(start, end), sql)
            return self.backend.run(sql, start, end)
        except StoreEmpty as error:
            raise QueryError(f"{error}\nSQL: {sql}") from None


def _with_relation(name: str, definition: str, sql: str) -> str:
    head = sql.lstrip()
    if re.match(r"with\s", head, re.I) and not re.match(r"with\s+recursive\s", head, re.I):
        return f"WITH {name} AS ({definition}), {head[4:].lstrip()}"
    return f"WITH {name} AS ({definition}) {head}"
