"""SQL on Parseable: ``POST /api/v1/query`` and the dataset's schema (docs/parseable.md#query-api)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import httpx

from raymetrics_pipeline.dataset.names import RECEIVED_AT
from raymetrics_pipeline.dataset.query import QueryError
from raymetrics_pipeline.parseable.connection import ParseableConnection

_BARE_COUNT_RE = re.compile(
    r"\s*select\s+count\s*\(\s*\*\s*\)(\s+as\s+\"?\w+\"?)?\s+from\s+(\"[^\"]+\"|\w+)\s*;?\s*", re.I
)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class ParseableSql:
    """The query layer's engine on a Parseable server."""

    def __init__(self, connection: ParseableConnection) -> None:
        self.connection = connection
        self.stream, self.location = connection.settings.stream, connection.settings.location

    def close(self) -> None:
        self.connection.close()

    def columns(self, start: datetime, end: datetime) -> list[str]:
        """The dataset's schema, which on Parseable only ever grows, whatever the window."""
        response = self._request("GET", f"/api/v1/logstream/{self.stream}/schema", f"schema of {self.stream}")
        return [field["name"] for field in response.json().get("fields", [])]

    def run(self, sql: str, start: datetime, end: datetime) -> list[dict]:
        if _BARE_COUNT_RE.fullmatch(sql):
            # A bare COUNT(*) is answered from uploaded manifests only and misses fresh rows
            # (docs/parseable.md#bare-count): any WHERE makes Parseable scan.
            sql = sql.rstrip().rstrip(";") + f" WHERE {RECEIVED_AT} IS NOT NULL"
        body = {"query": sql, "startTime": _rfc3339(start), "endTime": _rfc3339(end), "sendNull": True}
        return self._request("POST", "/api/v1/query", sql, json=body).json()

    def _request(self, method: str, path: str, what: str, **kwargs) -> httpx.Response:
        url = self.connection.settings.url
        try:
            response = self.connection.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise QueryError(
                f"Parseable at {url} did not answer ({type(error).__name__}: {error})\nSQL: {what}"
            ) from None
        if response.status_code in (401, 403):
            raise QueryError(
                f"Parseable at {url} refused the credentials ({response.status_code}): check "
                f"PARSEABLE_USERNAME and PARSEABLE_PASSWORD and that the user may query {self.stream}\nSQL: {what}"
            )
        if response.status_code != 200:
            raise QueryError(f"Parseable answered {response.status_code}: {response.text.strip()[:2000]}\nSQL: {what}")
        return response
