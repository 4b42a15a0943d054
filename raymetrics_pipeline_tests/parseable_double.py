"""A Parseable OSS test double: a real HTTP server on 127.0.0.1 with an ephemeral port.

It behaves like Parseable ``main`` 7fe859f9 (≈ v2.9.5) where the pipeline touches it, as docs/parseable.md
describes; the ``#anchors`` below are that page's sections. The double exists so the pipeline's
tests meet the pitfalls a mock would hide:

* ``POST /v1/metrics``: the required headers, Basic auth with its 401/403 texts, the exact
  Content-Type match (protobuf refused as OSS does), gzip and zstd bodies, 413 over the limit on
  decompressed bytes, stream auto-creation and the name rule (#ingest to #streams);
* the opentelemetry-proto 0.32 serde decoding of gauge, sum, histogram and summary points, which
  keeps rows without values and silently drops whole metrics while still answering 200 (#decoding);
* the flattening into rows with Parseable's column names and types, ``p_*`` columns included,
  case-distinct columns kept apart (#rows to #types);
* ``POST /api/v1/query``: the window on ingest time ``p_timestamp``, minute-truncated and
  end-exclusive, on a clock tests can set; the bare ``SELECT COUNT(*)`` shortcut that never counts
  fresh rows; the JSON rendering (#query-api to #query-results, #query-errors);
  ``GET /api/v1/logstream/{name}/schema`` (#schema).

SQL runs in a fresh DataFusion ``SessionContext`` per query, over Arrow tables pre-filtered to the
query window, one table per stream.

Forms the pipeline never sends are answered 501 ``ParseableDouble does not emulate …`` rather than
guessed at: exponential histograms, exemplars, array/kvlist/bytes attribute values, deflate and
Brotli bodies, ``endTime: "now"``. Not emulated at all: other endpoints (they answer 404), so no
stream made by ``PUT`` for logs or traces; API keys, sessions, RBAC and tenants; object storage
(so the count shortcut always answers 0); columns from other ``X-P-*`` headers and proxy headers
for ``p_src_ip``; the 1000-column cap; the query API's URL parameters; chunked request bodies.
SQL ``now()`` reads DataFusion's real clock, not the settable one. Error texts docs/parseable.md
does not quote (serde, DataFusion, stream names) are close to, not byte-equal with, the real server's.
"""

from __future__ import annotations

import base64
import binascii
import decimal
import email.utils
import hashlib
import json
import math
import re
import sys
import threading
import time
import traceback
import zlib
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import zstandard
from datafusion import SessionContext
from datafusion.expr import Aggregate, AggregateFunction, Projection, TableScan

UNAUTHENTICATED = "Your session has expired or is no longer valid. Please re-authenticate to access this resource."
FORBIDDEN = "You don't have permission to access this resource. Please contact your administrator for assistance."
PAYLOAD_TOO_LARGE = "payload reached size limit"
OTEL_METRICS = "otel-metrics"
TIMESTAMP_COLUMN = "p_timestamp"
SERIES_HASH_COLUMN = "__series_hash_u64"

# #streams: src/validator.rs::stream_name compares against these exactly (case-sensitive).
_SQL_KEYWORD_STREAM_NAMES = frozenset(
    ("select", "from", "where", "group", "by", "order", "limit", "offset", "join", "and", "sql")
)
# #rows: the fields this double writes that do not identify a series (Parseable's known-field list
# holds these and more); every other key, the attributes, goes into the series hash.
_KNOWN_FIELDS = frozenset(
    (
        "metric_name",
        "metric_description",
        "metric_unit",
        "metric_type",
        "start_time_unix_nano",
        "time_unix_nano",
        "data_point_value",
        "data_point_count",
        "data_point_sum",
        "data_point_bucket_counts",
        "data_point_explicit_bounds",
        "data_point_quantile_values",
        "data_point_min",
        "data_point_max",
        "data_point_flags",
        "data_point_flags_description",
        "is_monotonic",
        "aggregation_temporality",
        "aggregation_temporality_description",
        "scope_name",
        "scope_version",
        "scope_schema_url",
        "scope_dropped_attributes_count",
        "resource_dropped_attributes_count",
        "resource_schema_url",
        SERIES_HASH_COLUMN,
    )
)
# #types: a string is typed Timestamp(ms) only if its column name contains one of these.
_TIME_NAME_PARTS = (
    "time",
    "date",
    "timestamp",
    "created",
    "received",
    "ingested",
    "collected",
    "start",
    "end",
    "ts",
    "dt",
)
_TEMPORALITY_DESCRIPTIONS = {0: "UNSPECIFIED", 1: "DELTA", 2: "CUMULATIVE"}
_FLAGS_DESCRIPTIONS = {0: "DO_NOT_USE", 1: "NO_RECORDED_VALUE_MASK"}
_EPOCH = datetime(1970, 1, 1)
_TIMESTAMP_MS = pa.timestamp("ms")
_UNITS_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_RFC2822 = re.compile(
    r"(?:[A-Z][a-z]{2},\s*)?\d{1,2}\s+[A-Z][a-z]{2}\s+\d{4}\s+\d{2}:\d{2}(?::\d{2})?\s+(?:[+-]\d{4}|[A-Z]{1,3})"
)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the double saw it; ``path`` is the request target, query string included."""

    method: str
    path: str
    headers: dict[str, str]
    status: int
    body_len: int


class QueryFailed(Exception):
    """Raised by ``ParseableDouble.query`` with the status and text body the endpoint would send."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass
class _Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    client_ip: str

    @property
    def path(self) -> str:
        return unquote(urlsplit(self.target).path)


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class _HttpError(Exception):
    """Carries the error response out of deep helpers, as actix's ResponseError does."""

    def __init__(self, response: _Response) -> None:
        super().__init__(response.status)
        self.response = response


def _text(status: int, message: str) -> _Response:
    return _Response(status, message.encode(), "text/plain; charset=utf-8")


def _fail(status: int, message: str) -> _HttpError:
    return _HttpError(_text(status, message))


def _not_emulated(what: str) -> _HttpError:
    """For forms the pipeline never sends: a loud 501 instead of a guess at Parseable's answer."""
    return _fail(501, f"ParseableDouble does not emulate {what}")


def _json_response(document: object) -> _Response:
    return _Response(200, _dump_json(document).encode(), "application/json")


def _dump_json(document: object) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=_json_fallback)


def _json_fallback(value: object) -> object:
    """Arrow types with no JSON twin: decimals as numbers, binary as hex, the rest as display text."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


@dataclass
class _Stream:
    """A stream's evolving column types (#types) and its stored rows."""

    columns: dict[str, pa.DataType] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    _table: pa.Table | None = None

    def append(self, columns: dict[str, pa.DataType], rows: list[dict]) -> None:
        self.columns = columns
        self.rows.extend(rows)
        self._table = None

    def table(self) -> pa.Table:
        """All rows as Arrow, columns sorted by name like ``Stream::get_schema``; cached until the next write."""
        if self._table is None:
            names = sorted(self.columns)
            schema = pa.schema([pa.field(name, self.columns[name]) for name in names])
            self._table = pa.Table.from_pydict({name: [row.get(name) for row in self.rows] for name in names}, schema)
        return self._table


class ParseableDouble:
    """Parseable OSS as seen by an OTLP/JSON metrics client and a SQL reader; see the module docstring."""

    def __init__(
        self,
        username: str = "admin",
        password: str = "admin",
        max_payload_bytes: int = 10 * 1024 * 1024,
        port: int = 0,
    ):
        """``port`` 0 picks a free one; a fixed port lets a test bring "Parseable" back where a client expects it."""
        self.port = port
        self.username = username
        self.password = password
        self.max_payload_bytes = max_payload_bytes
        self.requests: list[RecordedRequest] = []
        self._lock = threading.RLock()
        self._streams: dict[str, _Stream] = {}
        self._frozen_now: datetime | None = None
        self._injected_failures: deque[_Response] = deque()
        self._answer_delays: deque[float] = deque()
        self._failures_after_store: list[_Response] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ParseableDouble:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.double = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="parseable-double", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = None
        self._thread = None

    def __enter__(self) -> ParseableDouble:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("ParseableDouble is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def set_now(self, dt: datetime) -> None:
        """Freeze the clock behind ``p_timestamp``."""
        if dt.tzinfo is None:
            raise ValueError("set_now needs a timezone-aware datetime")
        with self._lock:
            self._frozen_now = dt.astimezone(UTC)

    def advance(self, seconds: float) -> None:
        """Move the frozen clock; on the real clock this freezes it at now + seconds."""
        with self._lock:
            self._frozen_now = self.now() + timedelta(seconds=seconds)

    def now(self) -> datetime:
        with self._lock:
            return self._frozen_now or datetime.now(UTC)

    def fail_next(self, status: int, count: int = 1, headers: dict | None = None, body: str = "") -> None:
        """Answer the next ``count`` POST /v1/metrics with this response, before auth and parsing."""
        response = _Response(status, body.encode(), "text/plain; charset=utf-8" if body else None, dict(headers or {}))
        with self._lock:
            self._injected_failures.extend([response] * count)

    def fail_after_next_store(self, status: int, count: int = 1, headers: dict | None = None) -> None:
        """Once the next POST /v1/metrics is stored, answer the ``count`` after it with this status: Parseable
        going down in the middle of a split body."""
        response = _Response(status, b"", None, dict(headers or {}))
        with self._lock:
            self._failures_after_store = [response] * count

    def clear_faults(self) -> None:
        """Forget failures and delays injected but not yet used."""
        with self._lock:
            self._injected_failures.clear()
            self._answer_delays.clear()
            self._failures_after_store = []

    def delay_next(self, seconds: float, count: int = 1) -> None:
        """Store the next ``count`` POST /v1/metrics as usual, then wait ``seconds`` before answering: a slow
        Parseable that has the data already."""
        with self._lock:
            self._answer_delays.extend([seconds] * count)

    def rows(self, stream: str) -> list[dict]:
        """Stored rows as Python values: floats, naive-UTC datetimes, lists; null cells left out."""
        with self._lock:
            if stream not in self._streams:
                raise KeyError(f"no stream named {stream!r}")
            return [dict(row) for row in self._streams[stream].rows]

    def table(self, stream: str) -> pa.Table:
        """Stored rows as Arrow, typed as the stream's columns, in Parseable's alphabetical order."""
        with self._lock:
            if stream not in self._streams:
                raise KeyError(f"no stream named {stream!r}")
            return self._streams[stream].table()

    def query(self, sql: str, start: str | datetime, end: str | datetime) -> list[dict]:
        """The ``POST /api/v1/query`` result, ``sendNull`` off, without HTTP; QueryFailed where the endpoint errs."""
        payload = {"query": sql, "startTime": _time_argument(start), "endTime": _time_argument(end)}
        try:
            response = self._run_query(payload)
        except _HttpError as error:
            raise QueryFailed(error.response.status, error.response.body.decode()) from None
        return json.loads(response.body)

    # --- HTTP dispatch --------------------------------------------------------------------------

    def _respond(self, request: _Request) -> _Response:
        try:
            response = self._route(request)
        except _HttpError as error:
            response = error.response
        except Exception:  # a bug in the double: show it to the test as a 500 rather than a dead socket
            response = _text(500, traceback.format_exc())
        with self._lock:
            self.requests.append(
                RecordedRequest(request.method, request.target, request.headers, response.status, len(request.body))
            )
        return response

    def _route(self, request: _Request) -> _Response:
        """Match like actix: unknown path 404, known path with another method 405, then the handler."""
        routes = (
            (r"/v1/metrics", {"POST": self._ingest}),
            (r"/api/v1/query", {"POST": self._query_endpoint}),
            (r"/api/v1/logstream/([^/]+)/schema", {"GET": self._schema}),
        )
        for pattern, handlers in routes:
            match = re.fullmatch(pattern, request.path)
            if match:
                handler = handlers.get(request.method)
                return handler(request, *match.groups()) if handler else _Response(405)
        return _Response(404)

    def _authorize(self, request: _Request) -> None:
        """#auth: no or unreadable Basic credentials 401, wrong ones 403."""
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            raise _fail(401, UNAUTHENTICATED)
        try:
            user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise _fail(401, UNAUTHENTICATED) from None
        if (user, password) != (self.username, self.password):
            raise _fail(403, FORBIDDEN)

    # --- ingestion (#ingest to #decoding) ----------------------------------------------------------

    def _ingest(self, request: _Request) -> _Response:
        """Order as in Parseable: auth, body extraction (413), stream setup, Content-Type, decode, push."""
        with self._lock:
            injected = self._injected_failures.popleft() if self._injected_failures else None
            delay = self._answer_delays.popleft() if self._answer_delays and injected is None else 0.0
        if injected is not None:
            return injected
        response = self._store(request)
        with self._lock:
            self._injected_failures.extend(self._failures_after_store)
            self._failures_after_store = []
        time.sleep(delay)
        return response

    def _store(self, request: _Request) -> _Response:
        self._authorize(request)
        body = _extract_body(request, self.max_payload_bytes)
        stream_name, log_source = self._setup_otel_stream(request.headers)
        _require_json_content_type(stream_name, request.headers.get("content-type"))
        try:
            resource_metrics = _decode_metrics_data(_parse_json(body))
        except ValueError as error:
            raise _fail(400, f"Could not deserialize into JSON object, {error}") from None
        rows = _flatten_metrics_data(resource_metrics)
        if rows:
            system_fields = {"p_user_agent": request.headers.get("user-agent", ""), "p_src_ip": request.client_ip}
            self._push(stream_name, rows, system_fields | {"p_format": log_source})
        return _Response(200)

    def _setup_otel_stream(self, headers: dict[str, str]) -> tuple[str, str]:
        """#ingest, #streams: the headers are checked and the stream created before the body is looked at."""
        stream_name = headers.get("x-p-stream")
        if stream_name is None:
            raise _fail(400, "Header Error: Stream name not found in header [x-p-stream]")
        log_source = headers.get("x-p-log-source")
        if log_source is None:
            raise _fail(400, "Header Error: Log source not found in header [x-p-log-source]")
        if log_source.lower() != OTEL_METRICS:
            raise _fail(400, 'Please use "x-p-log-source: otel-metrics" for ingesting otel metrics data')
        with self._lock:
            if stream_name not in self._streams:
                _validate_stream_name(stream_name)
                self._streams[stream_name] = _Stream()
        return stream_name, log_source

    def _push(self, stream_name: str, rows: list[dict], system_fields: dict[str, str]) -> None:
        """Type and store one request's rows; all share one ``p_timestamp`` (#system-columns)."""
        if any(TIMESTAMP_COLUMN in row for row in rows):
            raise _fail(400, f"field {TIMESTAMP_COLUMN} is a reserved field")
        received = _naive_utc_millis(self.now())
        batch_keys = set().union(*rows)
        with self._lock:
            stream = self._streams[stream_name]
            columns = dict(stream.columns)
            typed_rows = [_typed_row(columns, row, received, system_fields, batch_keys) for row in rows]
            stream.append(columns, typed_rows)

    # --- query (#query-api to #query-errors) ------------------------------------------------------------

    def _query_endpoint(self, request: _Request) -> _Response:
        self._authorize(request)
        try:
            payload = json.loads(request.body.decode("utf-8"))
        except ValueError as error:
            raise _fail(400, f"Json deserialize error: {error}") from None
        return self._run_query(payload)

    def _run_query(self, payload: object) -> _Response:
        try:
            request = _decode_struct(
                payload,
                "Query",
                {
                    "query": (_string, _REQUIRED),
                    "startTime": (_string, _REQUIRED),
                    "endTime": (_string, _REQUIRED),
                    "sendNull": (_boolean, False),
                },
            )
        except ValueError as error:
            raise _fail(400, f"Json deserialize error: {error}") from None
        start, end = self._time_range(request["startTime"], request["endTime"])
        context = self._session_context(start, end)
        try:
            frame = context.sql(request["query"])
        except Exception as error:  # DataFusion raises plain Exception for every planning failure
            raise _fail(400, f"Datafusion Error: {error}") from None
        count_column = _bare_count_column(frame.logical_plan())
        if count_column is not None:  # #bare-count: only uploaded parquet counts, and nothing is uploaded
            return _json_response([{count_column: 0}])
        try:
            batches = frame.collect()
        except Exception as error:  # execution failures are 500 (#query-errors)
            raise _fail(500, f"Execution Error: Query Execution failed due to {error}") from None
        send_null = request["sendNull"]
        return _json_response([record for batch in batches for record in _records(batch, send_null)])

    def _time_range(self, start_text: str, end_text: str) -> tuple[datetime, datetime]:
        """#query-api: two RFC3339 times with a zone, both truncated to the minute."""
        if end_text == "now":
            raise _not_emulated('endTime "now" (send RFC3339 times)')
        prefix = "Error while parsing provided time range: "
        start, end = _parse_rfc3339(start_text), _parse_rfc3339(end_text)
        if start is None or end is None:
            raise _fail(400, prefix + "Error parsing time: input contains invalid characters")
        start, end = (_naive_utc(moment).replace(second=0, microsecond=0) for moment in (start, end))
        if start > end:
            raise _fail(400, prefix + "Start time cannot be greater than the end time")
        return start, end

    def _session_context(self, start: datetime, end: datetime) -> SessionContext:
        """A table per stream holding only ``start <= p_timestamp < end``, as Parseable's scan filter does."""
        with self._lock:
            tables = {name: stream.table() for name, stream in self._streams.items()}
        context = SessionContext()
        for name, table in tables.items():
            window = _within(table, start, end)
            batches = window.to_batches() or [pa.RecordBatch.from_pylist([], schema=window.schema)]
            context.register_record_batches(_quoted_identifier(name), [batches])
        return context

    # --- schema (#schema) ---------------------------------------------------------------------------

    def _schema(self, request: _Request, name: str) -> _Response:
        self._authorize(request)
        with self._lock:
            columns = dict(self._existing_stream(name).columns)
        fields = [_arrow_field_json(column, columns[column]) for column in sorted(columns)]
        return _json_response({"fields": fields, "metadata": {}})

    def _existing_stream(self, name: str) -> _Stream:
        if name not in self._streams:
            raise _fail(404, f"Stream not found: {name}")
        return self._streams[name]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    double: ParseableDouble

    def handle_error(self, request, client_address) -> None:
        """A client killed mid-request (the fault tests do it) is expected; anything else is shown."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        response = self.server.double._respond(_Request(self.command, self.path, headers, body, self.client_address[0]))
        self.send_response(response.status)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet; ``ParseableDouble.requests`` is the log."""


# --- request checks (#ingest to #streams) -------------------------------------------------------------


def _extract_body(request: _Request, limit: int) -> bytes:
    """actix's Bytes extractor (#compression): limit on the received bytes, decompress, limit on the result."""
    raw = request.body
    if len(raw) > limit:
        raise _fail(413, PAYLOAD_TOO_LARGE)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("deflate", "br"):
        raise _not_emulated(f"Content-Encoding {encoding}")
    if encoding == "zstd":
        chunks, size = [], 0
        try:
            with zstandard.ZstdDecompressor().stream_reader(raw) as reader:
                while chunk := reader.read(1 << 20):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > limit:
                        raise _fail(413, PAYLOAD_TOO_LARGE)
        except zstandard.ZstdError:
            raise _fail(400, "Can not decode content-encoding.") from None
        return b"".join(chunks)
    if encoding != "gzip":
        return raw  # identity, or an encoding actix does not know: passed through undecoded
    decompressor = zlib.decompressobj(31)
    try:
        body = decompressor.decompress(raw, limit + 1)
    except zlib.error:
        raise _fail(400, "Can not decode content-encoding.") from None
    if len(body) > limit:
        raise _fail(413, PAYLOAD_TOO_LARGE)
    if not decompressor.eof:
        raise _fail(400, "Can not decode content-encoding.")
    return body


def _validate_stream_name(name: str) -> None:
    if not name:
        raise _fail(400, "Stream name cannot be empty")
    for character in name:
        if character == " ":
            raise _fail(400, "Stream name cannot contain whitespace")
        if not character.isalnum() and character not in "-_":
            raise _fail(400, f"Stream name cannot contain special character: {character}")
    if name in _SQL_KEYWORD_STREAM_NAMES:
        raise _fail(400, "SQL keyword cannot be used as stream name")


def _require_json_content_type(stream_name: str, content_type: str | None) -> None:
    """#content-type: an exact string comparison, so ``application/json; charset=utf-8`` is refused."""
    prefix = f"Ingestion failed for stream {stream_name}: "
    expected = "Expected application/json or application/x-protobuf"
    if content_type is None:
        raise _fail(400, f"{prefix}Missing Content-Type header. {expected}")
    if content_type == "application/x-protobuf":
        raise _fail(400, f"{prefix}Protobuf ingestion is not supported in Parseable OSS")
    if content_type != "application/json":
        raise _fail(400, f"{prefix}Unsupported Content-Type: {content_type}. {expected}")


def _parse_json(body: bytes) -> object:
    """serde_json's grammar: no NaN/Infinity literals, no numbers that overflow f64."""
    return json.loads(body.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float)


def _reject_constant(name: str) -> float:
    raise ValueError(f"expected value, found {name}")


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError("number out of range")
    return number


# --- OTLP/JSON decoding with opentelemetry-proto 0.32 serde semantics (#decoding) ---------------------


class _DecodeError(ValueError):
    """A serde error; inside a flattened Option it is swallowed, elsewhere it is a 400."""


_REQUIRED = object()


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f'string "{value}"'
    return "sequence" if isinstance(value, list) else "map"


def _type_error(value: object, expected: str) -> _DecodeError:
    return _DecodeError(f"invalid type: {_describe(value)}, expected {expected}")


def _decode_struct(value: object, type_name: str, fields: dict[str, tuple]) -> dict:
    """A derived struct: ``fields`` maps JSON key to (decoder, default); _REQUIRED means no serde(default)."""
    if not isinstance(value, dict):
        raise _type_error(value, f"struct {type_name}")
    decoded = {}
    for key, (decode, default) in fields.items():
        if key in value:
            decoded[key] = decode(value[key])
        elif default is _REQUIRED:
            raise _DecodeError(f"missing field `{key}`")
        else:
            decoded[key] = default
    return decoded


def _flattened_oneof(value: dict, variants: dict) -> tuple[str, object] | None:
    """``#[serde(flatten)] Option<oneof>``: the first key naming a variant wins; any error in it becomes None."""
    for key, item in value.items():
        if key in variants:
            try:
                return key, variants[key](item)
            except _DecodeError:
                return None
    return None


def _string(value: object) -> str:
    if isinstance(value, str):
        return value
    raise _type_error(value, "a string")


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise _type_error(value, "a boolean")


def _integer(type_name: str, low: int, high: int):
    def decode(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(value, type_name)
        if not low <= value <= high:
            raise _DecodeError(f"invalid value: integer `{value}`, expected {type_name}")
        return value

    return decode


_u32 = _integer("u32", 0, 2**32 - 1)
_i32 = _integer("i32", -(2**31), 2**31 - 1)
_i64 = _integer("i64", -(2**63), 2**63 - 1)
_u64 = _integer("u64", 0, 2**64 - 1)


def _f64(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _type_error(value, "f64")
    return float(value)


def _u64_or_string(value: object) -> int:
    """``deserialize_string_to_u64``: a non-negative integer or a decimal string of one."""
    if isinstance(value, str):
        if re.fullmatch(r"\+?\d+", value) and int(value) < 2**64:
            return int(value)
        raise _DecodeError(f'invalid digit found in string "{value}"')
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(value, "a u64 integer or a string containing a u64 integer")
    return _u64(value)


def _i64_or_string(value: object) -> int:
    """AnyValue ``intValue``: the untagged StringOrInt enum."""
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value) and -(2**63) <= int(value) < 2**63:
        return int(value)
    if not isinstance(value, bool) and isinstance(value, int) and -(2**63) <= value < 2**63:
        return value
    raise _DecodeError("data did not match any variant of untagged enum StringOrInt")


def _sequence(decode):
    def decode_sequence(value: object) -> list:
        if not isinstance(value, list):
            raise _type_error(value, "a sequence")
        return [decode(item) for item in value]

    return decode_sequence


def _optional(decode):
    return lambda value: None if value is None else decode(value)


def _not_emulated_field(what: str):
    def decode(value: object):
        raise _not_emulated(what)

    return decode


_ANY_VALUE_KINDS = {"stringValue": _string, "boolValue": _boolean, "intValue": _i64_or_string, "doubleValue": _f64}
_NOT_EMULATED_ANY_VALUES = ("arrayValue", "kvlistValue", "bytesValue")


def _any_value(value: object) -> tuple[str, object]:
    """The custom AnyValue visitor: the last known key wins, unknown keys are skipped, none known is an error."""
    if not isinstance(value, dict):
        raise _type_error(value, "a JSON object for AnyValue")
    decoded = None
    for key, item in value.items():
        if key in _NOT_EMULATED_ANY_VALUES:
            raise _not_emulated(f"{key} attributes")
        if key in _ANY_VALUE_KINDS:
            decoded = key, _ANY_VALUE_KINDS[key](item)
    if decoded is None:
        raise _DecodeError("Invalid data for Value, no known keys found")
    return decoded


def _key_value(value: object) -> tuple[str, tuple[str, object] | None]:
    decoded = _decode_struct(value, "KeyValue", {"key": (_string, _REQUIRED), "value": (_optional(_any_value), None)})
    return decoded["key"], decoded["value"]


_attributes = _sequence(_key_value)
_exemplars = _sequence(_not_emulated_field("exemplars"))  # an empty list is fine: nothing to flatten
_NUMBER_VALUE = {"asDouble": _f64, "asInt": _i64}


def _number_data_point(value: object) -> dict:
    point = _decode_struct(
        value,
        "NumberDataPoint",
        {
            "attributes": (_attributes, ()),
            "startTimeUnixNano": (_u64_or_string, 0),
            "timeUnixNano": (_u64_or_string, 0),
            "exemplars": (_exemplars, ()),
            "flags": (_u32, 0),
        },
    )
    point["value"] = _flattened_oneof(value, _NUMBER_VALUE)
    return point


def _histogram_data_point(value: object) -> dict:
    return _decode_struct(
        value,
        "HistogramDataPoint",
        {
            "attributes": (_attributes, ()),
            "startTimeUnixNano": (_u64_or_string, 0),
            "timeUnixNano": (_u64_or_string, 0),
            "count": (_u64_or_string, 0),
            "sum": (_optional(_f64), None),
            "bucketCounts": (_sequence(_u64_or_string), ()),
            "explicitBounds": (_sequence(_f64), ()),
            "exemplars": (_exemplars, ()),
            "flags": (_u32, 0),
            "min": (_optional(_f64), None),
            "max": (_optional(_f64), None),
        },
    )


def _value_at_quantile(value: object) -> dict:
    return _decode_struct(value, "ValueAtQuantile", {"quantile": (_f64, _REQUIRED), "value": (_f64, _REQUIRED)})


def _summary_data_point(value: object) -> dict:
    return _decode_struct(
        value,
        "SummaryDataPoint",
        {
            "attributes": (_attributes, ()),
            "startTimeUnixNano": (_u64_or_string, 0),
            "timeUnixNano": (_u64_or_string, 0),
            "count": (_u64_or_string, 0),
            "sum": (_f64, 0.0),
            "quantileValues": (_sequence(_value_at_quantile), ()),
            "flags": (_u32, 0),
        },
    )


def _metric_data(type_name: str, point_decoder, with_temporality: bool, with_monotonic: bool = False):
    fields = {"dataPoints": (_sequence(point_decoder), ())}
    if with_temporality:
        fields["aggregationTemporality"] = (_i32, 0)
    if with_monotonic:
        fields["isMonotonic"] = (_boolean, False)
    return lambda value: _decode_struct(value, type_name, fields)


_METRIC_DATA = {
    "gauge": _metric_data("Gauge", _number_data_point, with_temporality=False),
    "sum": _metric_data("Sum", _number_data_point, with_temporality=True, with_monotonic=True),
    "histogram": _metric_data("Histogram", _histogram_data_point, with_temporality=True),
    "exponentialHistogram": _not_emulated_field("exponential histograms"),
    "summary": _metric_data("Summary", _summary_data_point, with_temporality=False),
}


def _metric(value: object) -> dict:
    metric = _decode_struct(
        value,
        "Metric",
        {"name": (_string, ""), "description": (_string, ""), "unit": (_string, ""), "metadata": (_attributes, ())},
    )
    metric["data"] = _flattened_oneof(value, _METRIC_DATA)
    return metric


def _scope(value: object) -> dict:
    return _decode_struct(
        value,
        "InstrumentationScope",
        {
            "name": (_string, ""),
            "version": (_string, ""),
            "attributes": (_attributes, ()),
            "droppedAttributesCount": (_u32, 0),
        },
    )


def _scope_metrics(value: object) -> dict:
    return _decode_struct(
        value,
        "ScopeMetrics",
        {"scope": (_optional(_scope), None), "metrics": (_sequence(_metric), ()), "schemaUrl": (_string, "")},
    )


def _resource(value: object) -> dict:
    return _decode_struct(value, "Resource", {"attributes": (_attributes, ()), "droppedAttributesCount": (_u32, 0)})


def _resource_metrics(value: object) -> dict:
    return _decode_struct(
        value,
        "ResourceMetrics",
        {
            "resource": (_optional(_resource), None),
            "scopeMetrics": (_sequence(_scope_metrics), ()),
            "schemaUrl": (_string, ""),
        },
    )


def _decode_metrics_data(document: object) -> list[dict]:
    """MetricsData → its resourceMetrics; errors outside ``Metric.data`` reach the caller as a 400."""
    return _decode_struct(document, "MetricsData", {"resourceMetrics": (_sequence(_resource_metrics), _REQUIRED)})[
        "resourceMetrics"
    ]


# --- flattening (#rows, #columns) -----------------------------------------------------------------------


def _flatten_metrics_data(resource_metrics: list[dict]) -> list[dict]:
    """One row per data point; later writes win: data point < metric < resource/scope envelope (#rows)."""
    rows = []
    for resource_metric in resource_metrics:
        resource_fields: dict = {}
        if resource_metric["resource"] is not None:
            _insert_attributes(resource_fields, resource_metric["resource"]["attributes"])
            resource_fields["resource_dropped_attributes_count"] = resource_metric["resource"]["droppedAttributesCount"]
        resource_fields["resource_schema_url"] = resource_metric["schemaUrl"]
        for scope_metric in resource_metric["scopeMetrics"]:
            envelope = dict(resource_fields)
            scope = scope_metric["scope"]
            if scope is not None:
                envelope["scope_name"] = scope["name"]
                envelope["scope_version"] = scope["version"]
                _insert_attributes(envelope, scope["attributes"])
                envelope["scope_dropped_attributes_count"] = scope["droppedAttributesCount"]
            envelope["scope_schema_url"] = scope_metric["schemaUrl"]
            for metric in scope_metric["metrics"]:
                for row in _flatten_metric(metric):
                    row.update(envelope)
                    row[SERIES_HASH_COLUMN] = _series_hash(row)
                    rows.append(_flatten_object_arrays(row))
    return rows


def _flatten_metric(metric: dict) -> list[dict]:
    if metric["data"] is None:
        return []  # absent, or swallowed by a serde error: the metric vanishes (#decoding)
    kind, data = metric["data"]
    point_row = _POINT_FLATTENERS[kind]
    type_fields = {}
    if "aggregationTemporality" in data:
        temporality = data["aggregationTemporality"]
        type_fields["aggregation_temporality"] = temporality
        type_fields["aggregation_temporality_description"] = _TEMPORALITY_DESCRIPTIONS.get(temporality, "")
    if "isMonotonic" in data:
        type_fields["is_monotonic"] = data["isMonotonic"]
    metric_fields = {
        "metric_name": metric["name"],
        "metric_description": metric["description"],
        "metric_unit": metric["unit"],
        "metric_type": kind,
    }
    rows = [point_row(point) | type_fields for point in data["dataPoints"]] or [dict(type_fields)]
    for row in rows:
        row.update(metric_fields)
        _insert_attributes(row, metric["metadata"])
    return rows


def _number_point_row(point: dict) -> dict:
    row = _point_row_start(point)
    _insert_flags(row, point["flags"])
    if point["value"] is not None:
        row["data_point_value"] = point["value"][1]
    return row


def _histogram_point_row(point: dict) -> dict:
    row = _point_row_start(point)
    row["data_point_count"] = point["count"]
    _insert_if_set(row, "data_point_sum", point["sum"])
    row["data_point_bucket_counts"] = list(point["bucketCounts"])
    row["data_point_explicit_bounds"] = list(point["explicitBounds"])
    _insert_flags(row, point["flags"])
    _insert_if_set(row, "data_point_min", point["min"])
    _insert_if_set(row, "data_point_max", point["max"])
    return row


def _summary_point_row(point: dict) -> dict:
    row = _point_row_start(point)
    row["data_point_count"] = point["count"]
    row["data_point_sum"] = point["sum"]
    row["data_point_quantile_values"] = [dict(item) for item in point["quantileValues"]]
    return row


_POINT_FLATTENERS = {
    "gauge": _number_point_row,
    "sum": _number_point_row,
    "histogram": _histogram_point_row,
    "summary": _summary_point_row,
}


def _point_row_start(point: dict) -> dict:
    row: dict = {}
    _insert_attributes(row, point["attributes"])
    row["start_time_unix_nano"] = _epoch_nanos_to_rfc3339(point["startTimeUnixNano"])
    row["time_unix_nano"] = _epoch_nanos_to_rfc3339(point["timeUnixNano"])
    return row


def _insert_flags(row: dict, flags: int) -> None:
    row["data_point_flags"] = flags
    row["data_point_flags_description"] = _FLAGS_DESCRIPTIONS.get(flags, "")


def _insert_if_set(row: dict, key: str, value: float | None) -> None:
    if value is not None:
        row[key] = value


def _insert_attributes(target: dict, key_values: list) -> None:
    """#rows: raw keys, ints as decimal strings. JSON holds no NaN or ±Inf, so no value is left out for those."""
    for key, any_value in key_values:
        if any_value is not None:
            kind, value = any_value
            target[key] = str(value) if kind == "intValue" else value


def _series_hash(row: dict) -> int:
    """Stands in for FxHasher over metric_name and the sorted label pairs (#rows); opaque to clients."""
    hasher = hashlib.blake2b(digest_size=8)
    if isinstance(row.get("metric_name"), str):
        hasher.update(row["metric_name"].encode() + b"\0")
    for key in sorted(row):
        if key in _KNOWN_FIELDS:
            continue
        value = row[key] if isinstance(row[key], str) else json.dumps(row[key], separators=(",", ":"))
        hasher.update(key.encode() + b"=" + value.encode() + b"\0")
    return int.from_bytes(hasher.digest(), "big")


def _flatten_object_arrays(row: dict) -> dict:
    """The generic flattener: an array of objects becomes one list column per inner key, null-padded."""
    flattened = {}
    for key, value in row.items():
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            inner_keys = dict.fromkeys(inner for item in value for inner in item)
            for inner in inner_keys:
                flattened[f"{key}_{inner}"] = [item.get(inner) for item in value]
        else:
            flattened[key] = value
    return flattened


# --- typing and storage (#system-columns, #types) ----------------------------------------------------


_NO_FIT = object()


def _typed_row(
    columns: dict[str, pa.DataType], row: dict, received: datetime, system_fields: dict[str, str], batch_keys: set
) -> dict:
    typed: dict = {}
    _place(columns, typed, TIMESTAMP_COLUMN, _TIMESTAMP_MS, received, received)
    for key, value in row.items():
        if value is None:
            continue
        natural, converted = _natural_type(key, value)
        _place(columns, typed, "_" + key[1:] if key.startswith("@") else key, natural, converted, value)
    for key, value in system_fields.items():
        if key not in batch_keys:  # a data column of that name wins
            _place(columns, typed, key, pa.string(), value, value)
    return typed


def _natural_type(key: str, value: object) -> tuple[pa.DataType, object]:
    """The type a new column would get: numbers Float64 (the series hash UInt64), time-like strings Timestamp(ms)."""
    if isinstance(value, bool):
        return pa.bool_(), value
    if isinstance(value, (int, float)):
        return (pa.uint64(), int(value)) if key == SERIES_HASH_COLUMN else (pa.float64(), float(value))
    if isinstance(value, str):
        if any(part in key.lower() for part in _TIME_NAME_PARTS):
            moment = _parse_event_time(value)
            if moment is not None:
                return _TIMESTAMP_MS, moment
        return pa.string(), value
    if isinstance(value, list):
        return _natural_list_type(value)
    raise TypeError(f"flattened rows hold scalars and lists only, got {type(value).__name__} under {key!r}")


def _natural_list_type(values: list) -> tuple[pa.DataType, list]:
    """Bucket counts are ints (Int64), bounds and quantiles floats (Float64); an empty array has no type yet."""
    present = [value for value in values if value is not None]
    if not present:
        return pa.list_(pa.null()), list(values)
    if all(isinstance(value, int) for value in present):
        return pa.list_(pa.int64()), list(values)
    if all(isinstance(value, float) for value in present):
        return pa.list_(pa.float64()), list(values)
    raise TypeError(f"flattened lists hold ints or floats only, got {values!r}")


def _place(columns: dict, typed: dict, key: str, natural: pa.DataType, converted: object, raw: object) -> None:
    """Store under ``key``, or under ``<key>_<type>`` when ``key`` already holds another type (#types)."""
    for name in (key, f"{key}_{_type_suffix(natural)}"):
        existing = columns.get(name)
        if existing is None or (
            pa.types.is_list(existing) and existing.value_type == pa.null() and pa.types.is_list(natural)
        ):
            columns[name] = natural
            typed[name] = converted
            return
        fitted = _fit(existing, natural, converted, raw)
        if fitted is not _NO_FIT:
            typed[name] = fitted
            return
    raise _fail(400, f"Could not process this event due to mismatch in datatype: {key}")


def _fit(existing: pa.DataType, natural: pa.DataType, converted: object, raw: object) -> object:
    if existing == natural:
        return converted
    if existing == pa.string() and pa.types.is_timestamp(natural):
        return raw  # an existing Utf8 column keeps time-looking strings as text
    if pa.types.is_list(existing) and natural == pa.list_(pa.null()):
        return converted
    return _NO_FIT


def _type_suffix(data_type: pa.DataType) -> str:
    if pa.types.is_timestamp(data_type):
        return "timestamp_ms"
    if pa.types.is_list(data_type):
        return "list"
    return {"string": "utf8", "bool": "bool", "double": "float64", "uint64": "uint64"}[str(data_type)]


def _arrow_field_json(name: str, data_type: pa.DataType) -> dict:
    """arrow-rs ``Field`` through serde, as ``/schema`` returns it (#schema)."""
    return {
        "name": name,
        "data_type": _arrow_type_json(data_type),
        "nullable": True,
        "dict_id": 0,
        "dict_is_ordered": False,
        "metadata": {},
    }


def _arrow_type_json(data_type: pa.DataType) -> object:
    if pa.types.is_timestamp(data_type):
        return {"Timestamp": ["Millisecond", None]}
    if pa.types.is_list(data_type):
        return {"List": _arrow_field_json("item", data_type.value_type)}
    return {
        "string": "Utf8",
        "bool": "Boolean",
        "double": "Float64",
        "int64": "Int64",
        "uint64": "UInt64",
        "null": "Null",
    }[str(data_type)]


# --- times --------------------------------------------------------------------------------------------


def _epoch_nanos_to_rfc3339(nanos: int) -> str:
    """``convert_epoch_nano_to_timestamp``: the u64 reinterpreted as i64, nine fraction digits, ``Z``."""
    signed = nanos - 2**64 if nanos >= 2**63 else nanos
    seconds, fraction = divmod(signed, 1_000_000_000)
    return f"{_format_seconds(_EPOCH + timedelta(seconds=seconds))}.{fraction:09d}Z"


def _format_seconds(moment: datetime) -> str:
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )


def _chrono_fraction(nanos: int) -> str:
    """chrono's Debug / AutoSi fraction: none, then 3, 6 or 9 digits as needed."""
    if nanos == 0:
        return ""
    if nanos % 1_000_000 == 0:
        return f".{nanos // 1_000_000:03d}"
    if nanos % 1_000 == 0:
        return f".{nanos // 1_000:06d}"
    return f".{nanos:09d}"


def _parse_rfc3339(text: str) -> datetime | None:
    """chrono ``parse_from_rfc3339``: the offset is mandatory. Precision kept to the microsecond."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zulu, sign, offset_hours, offset_minutes = match.groups()
    offset = timedelta(0) if zulu else timedelta(hours=int(offset_hours), minutes=int(offset_minutes))
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int(((fraction or "") + "000000")[:6]),
            timezone(-offset if sign == "-" else offset),
        )
    except ValueError:
        return None


def _parse_event_time(text: str) -> datetime | None:
    """A value that infers Timestamp(ms): RFC3339 or RFC2822, stored as naive UTC at ms precision."""
    moment = _parse_rfc3339(text)
    if moment is None and _RFC2822.fullmatch(text):
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:  # "-0000": UTC with unknown local offset
            moment = moment.replace(tzinfo=UTC)
    return None if moment is None else _naive_utc_millis(moment)


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _naive_utc_millis(moment: datetime) -> datetime:
    naive = _naive_utc(moment)
    return naive.replace(microsecond=naive.microsecond // 1000 * 1000)


def _time_argument(moment: str | datetime) -> str:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ValueError("query times need a timezone")
        return moment.isoformat()
    return moment


# --- query helpers (#query-api, #bare-count, #query-results) -----------------------------------------


def _quoted_identifier(name: str) -> str:
    """DataFusion lower-cases unquoted names on registration too; quoting keeps "RayMetrics" intact."""
    return '"' + name.replace('"', '""') + '"'


def _within(table: pa.Table, start: datetime, end: datetime) -> pa.Table:
    if TIMESTAMP_COLUMN not in table.column_names:
        return table
    column = table.column(TIMESTAMP_COLUMN)
    mask = pc.and_(
        pc.greater_equal(column, pa.scalar(start, _TIMESTAMP_MS)), pc.less(column, pa.scalar(end, _TIMESTAMP_MS))
    )
    return table.filter(mask)


def _bare_count_column(plan) -> str | None:
    """``Query::is_logical_plan_count_without_filters``: Projection of one expression over an Aggregate with
    no GROUP BY and a single ``count(<literal>)`` over a filter-less TableScan. Returns the output name."""
    projection = plan.to_variant()
    if not isinstance(projection, Projection) or len(projection.projections()) != 1:
        return None
    aggregate = projection.input()[0].to_variant()
    if not isinstance(aggregate, Aggregate) or aggregate.group_by_exprs() or len(aggregate.aggregate_exprs()) != 1:
        return None
    scan = aggregate.input()[0].to_variant()
    if not isinstance(scan, TableScan) or scan.filters():
        return None
    call = aggregate.aggregate_exprs()[0].to_variant()
    if not isinstance(call, AggregateFunction) or call.aggregate_type() != "count":
        return None
    arguments = call.args()
    if len(arguments) != 1 or arguments[0].variant_name() != "Literal":
        return None
    return projection.projections()[0].schema_name()


def _records(batch: pa.RecordBatch, send_null: bool) -> list[dict]:
    """``record_batches_to_json``: one object per row, null cells omitted unless ``sendNull`` (#query-results)."""
    names = batch.schema.names
    columns = [_render(batch.column(index)) for index in range(batch.num_columns)]
    return [
        {name: value for name, value in zip(names, values, strict=True) if send_null or value is not None}
        for values in zip(*columns, strict=True)
    ]


def _render(array: pa.Array) -> list:
    """arrow-json values: naive timestamps like chrono's Debug (no ``Z``), non-finite floats null (#query-results)."""
    data_type = array.type
    if pa.types.is_timestamp(data_type):
        return [
            None if value is None else _render_timestamp(value, data_type.unit, data_type.tz is not None)
            for value in array.cast(pa.int64()).to_pylist()
        ]
    if pa.types.is_floating(data_type):
        return [value if value is not None and math.isfinite(value) else None for value in array.to_pylist()]
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        return [None if not item.is_valid else _render(item.values) for item in array]
    return array.to_pylist()  # other types (dates, decimals) go through _json_fallback


def _render_timestamp(value: int, unit: str, with_zone: bool) -> str:
    """Without a zone like chrono's NaiveDateTime Debug; with one (e.g. ``now()``) as RFC3339 in UTC with ``Z``."""
    seconds, remainder = divmod(value, _UNITS_PER_SECOND[unit])
    fraction = _chrono_fraction(remainder * (1_000_000_000 // _UNITS_PER_SECOND[unit]))
    return _format_seconds(_EPOCH + timedelta(seconds=seconds)) + fraction + ("Z" if with_zone else "")
