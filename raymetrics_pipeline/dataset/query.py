"""One query layer over Parseable and the local store: ``query(sql, start, end) -> rows``.

Both backends answer with Parseable's semantics (docs/parseable.md#query-api): the table is named
after the dataset, only rows whose ingest time ``p_timestamp`` lies in ``[start, end)`` are seen,
both bounds are truncated to the minute, and rows come back as Parseable renders them in JSON
(timestamps as ``2026-11-28T08:15:00.123`` strings, no trailing ``Z``; non-finite floats as None),
so later code runs unchanged on either.

SQL may also name ``ray_points``: the dataset's rows with four columns added, ``ray_node``,
``ray_session``, ``ray_cluster`` and ``ray_job``, each taken from whichever label the metric uses
(``ray_node_*`` series say ``ip`` where others say ``NodeAddress``; Parseable v2.5.x
prefixed them ``metric_``), and ``''`` where a row has none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from raymetrics_pipeline.dataset.backend import SqlEngine

RAY_POINTS = "ray_points"
# Identity column → the labels that carry it, preferred first.
IDENTITY_LABELS: dict[str, tuple[str, ...]] = {
    "ray_node": ("NodeAddress", "ip"),
    "ray_session": ("SessionName",),
    "ray_cluster": ("cluster_id",),
    "ray_job": ("JobId",),
}
# Parseable v2.5.0-v2.5.8 wrote data-point attributes as metric_<key> (docs/parseable.md#columns).
_V25_PREFIX = "metric_"
_USES_RAY_POINTS_RE = re.compile(rf"\b{RAY_POINTS}\b", re.I)


class QueryError(Exception):
    """A query failed; the message carries the SQL and the backend's own words."""


def minute(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def _identity_expression(labels: Sequence[str], columns: set[str]) -> str:
    present = [name for label in labels for name in (label, _V25_PREFIX + label) if name in columns]
    if not present:
        return "''"
    return "COALESCE(" + ", ".join(f"NULLIF(\"{name}\", '')" for name in present) + ", '')"


class MetricsQuery:
    """``query(sql, start, end)`` on either backend, with ``ray_points`` available to the SQL.

    Each window's columns are read once (a schema request on Parseable, file footers locally)
    and kept for this object's life, a run or a script: make a new one to see columns added since.
    Close it (or use it in a ``with``) to release the backend's HTTP client.
    """

    def __init__(self, engine: SqlEngine) -> None:
        self.engine = engine
        self.stream = engine.stream
        self.location = engine.location
        self._columns: dict[tuple[datetime, datetime], set[str]] = {}

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> MetricsQuery:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def columns(self, start: datetime, end: datetime) -> set[str]:
        """The dataset's columns a query over ``[start, end)`` can name (both truncated to the minute)."""
        window = minute(start), minute(end)
        if window not in self._columns:
            self._columns[window] = set(self.engine.columns(*window))
        return self._columns[window]

    def ray_points(self, start: datetime, end: datetime) -> str:
        """The ``ray_points`` relation's SQL for the columns the dataset has in ``[start, end)``."""
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
        if _USES_RAY_POINTS_RE.search(sql):
            try:
                relation = self.ray_points(start, end)
            except QueryError as error:
                raise QueryError(f"{error}\nSQL: {sql}") from None
            sql = _with_relation(RAY_POINTS, relation, sql)
        return self.engine.run(sql, start, end)


def _with_relation(name: str, definition: str, sql: str) -> str:
    head = sql.lstrip()
    if re.match(r"with\s", head, re.I) and not re.match(r"with\s+recursive\s", head, re.I):
        return f"WITH {name} AS ({definition}), {head[4:].lstrip()}"
    return f"WITH {name} AS ({definition}) {head}"
