"""SQL on the local store: DataFusion over its files, answering as Parseable would.

DataFusion is the engine Parseable embeds, so the dialect is the same; the window on
``p_timestamp`` and the JSON rendering of results are applied here as Parseable applies them
(docs/parseable.md#query-api).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow.dataset as ds
from datafusion import SessionContext

from raymetrics_pipeline.dataset.names import RECEIVED_AT
from raymetrics_pipeline.dataset.query import QueryError
from raymetrics_pipeline.localstore.arrow import ReadCache, files_dataset, unified_schema
from raymetrics_pipeline.localstore.store import LocalStore, StoreEmpty

_RETRIES_ON_VANISHED_FILE = 3


def render(value: object) -> object:
    """A cell as Parseable's JSON renders it (arrow-json): naive timestamps without ``Z``, no NaN or infinities."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
        text = value.strftime("%Y-%m-%dT%H:%M:%S")
        micros = value.microsecond
        if micros:
            text += f".{micros // 1000:03d}" if micros % 1000 == 0 else f".{micros:06d}"
        return text
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, list):
        return [render(item) for item in value]
    if isinstance(value, dict):
        return {key: render(item) for key, item in value.items()}
    return value


class LocalSql:
    """The query layer's engine on the local store."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self.stream, self.location = store.stream, store.location
        self._read: ReadCache = {}

    def close(self) -> None:
        """Nothing to release: every query opens and drops its own DataFusion session."""

    def _files(self, start: datetime, end: datetime) -> list[Path]:
        """The window's files; with none, the newest file lends its columns so the SQL still plans."""
        try:
            files = self.store.files(start, end) or [self.store.newest_file()]
        except StoreEmpty as error:
            raise QueryError(str(error)) from None
        for gone in set(self._read) - set(files):
            del self._read[gone]
        return files

    def columns(self, start: datetime, end: datetime) -> list[str]:
        return unified_schema(self._files(start, end), self._read).names

    def run(self, sql: str, start: datetime, end: datetime) -> list[dict]:
        retries = _RETRIES_ON_VANISHED_FILE
        while True:
            try:
                return self._run(sql, files_dataset(self._files(start, end), self._read), start, end)
            except FileNotFoundError:
                # Compaction or retention replaced a file between listing and reading: list again.
                if not retries:
                    raise
                retries -= 1
            except QueryError as error:
                raise QueryError(f"{error}\nSQL: {sql}") from None

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
            raise QueryError(f"local store query failed: {error}") from None
        return [{name: render(value) for name, value in row.items()} for row in table.to_pylist()]
