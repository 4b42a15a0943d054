"""Client for Parseable's OTLP metrics endpoint (``POST /v1/metrics``).

Retries only what can succeed later (connection errors, timeouts, 429, 5xx, honouring
``Retry-After``) and never past the caller's deadline, so a scrape run stays inside its
15 s tick. Every other answer gets a message that says what to fix. Messages never carry
the password or the Authorization header.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from dataclasses import dataclass, field

import httpx
import zstandard
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from isal import igzip
from opentelemetry.proto.metrics.v1 import metrics_pb2

JSON = "application/json"  # exactly this: Parseable compares the whole header (contract §1.3)
PROTOBUF = "application/x-protobuf"
CONTENT_TYPES = {"json": JSON, "protobuf": PROTOBUF}
LOG_SOURCE = "otel-metrics"
USER_AGENT = "raymetrics-pipeline"
COMPRESSIONS = ("gzip", "zstd", "none")


def compress(body: bytes, compression: str) -> tuple[bytes, dict[str, str]]:
    """The request payload and its ``Content-Encoding`` header.

    gzip comes from ISA-L (``isal``): standard gzip, about 6x faster than zlib's level 1 on
    OTLP/JSON and a little smaller, which matters when every run has a 15 s tick.
    """
    if compression == "gzip":
        return igzip.compress(body, 1, mtime=0), {"Content-Encoding": "gzip"}
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(body), {"Content-Encoding": "zstd"}
    return body, {}


_STREAM_NAME_KEYWORDS = {"select", "from", "where", "group", "by", "order", "limit", "offset", "join", "and", "sql"}


class ParseableError(Exception):
    """Parseable refused the data for a reason a person must fix; ``status`` says which."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def server_url(url: str) -> str:
    """``PARSEABLE_URL`` checked and without its trailing slash; a clear error when it cannot work."""
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"PARSEABLE_URL={url!r} is not an http(s) URL such as http://localhost:8000")
    if parsed.userinfo:
        raise ValueError("PARSEABLE_URL must not carry credentials: set PARSEABLE_USERNAME and PARSEABLE_PASSWORD")
    return str(parsed).rstrip("/")


def http_client(
    username: str, password: str, timeout_seconds: float, transport: httpx.BaseTransport | None, **headers: str
) -> httpx.Client:
    """An HTTP client for Parseable: basic auth and our User-Agent on every request."""
    return httpx.Client(
        auth=httpx.BasicAuth(username, password),
        timeout=timeout_seconds,
        transport=transport,
        headers={**headers, "User-Agent": USER_AGENT},
    )


def location(url: str, stream: str) -> str:
    """Where rows go on a Parseable server, for people."""
    return f"{url.rstrip('/')} (dataset {stream})"


def validate_stream_name(name: str) -> str:
    """Parseable's own rule (src/validator.rs::stream_name), checked before anything is sent."""
    if not name or not all(char.isalnum() or char in "-_" for char in name) or name.lower() in _STREAM_NAME_KEYWORDS:
        raise ValueError(
            f"PARSEABLE_STREAM={name!r} is not a valid Parseable dataset name: use letters, digits, '-' "
            "and '_' only, and not an SQL keyword (for example raymetrics)"
        )
    return name


def _server_message(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:500] if text else "(empty body)"


def _retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def split_body(body: bytes, content_type: str) -> list[bytes]:
    """Halve an OTLP request (by resources, then metrics, then data points) after a 413."""
    if content_type == JSON:
        document = json.loads(body)
        halves = _split_document(document)
        return [json.dumps(half, separators=(",", ":")).encode() for half in halves]
    message = metrics_pb2.MetricsData()
    try:
        message.ParseFromString(body)
    except DecodeError as error:
        raise ParseableError(f"cannot split a protobuf body that does not decode: {error}") from error
    halves = _split_document(json_format.MessageToDict(message))
    return [json_format.ParseDict(half, metrics_pb2.MetricsData()).SerializeToString() for half in halves]


def _split_document(document: dict) -> list[dict]:
    resources = document.get("resourceMetrics", [])
    if len(resources) > 1:
        middle = len(resources) // 2
        return [{"resourceMetrics": resources[:middle]}, {"resourceMetrics": resources[middle:]}]
    for resource in resources:
        for scope in resource.get("scopeMetrics", []):
            metrics = scope.get("metrics", [])
            if len(metrics) > 1:
                middle = len(metrics) // 2
                return [
                    _with_metrics(resource, scope, metrics[:middle]),
                    _with_metrics(resource, scope, metrics[middle:]),
                ]
            for metric in metrics:
                for kind in ("gauge", "sum", "histogram", "summary", "exponentialHistogram"):
                    points = metric.get(kind, {}).get("dataPoints", [])
                    if len(points) > 1:
                        middle = len(points) // 2
                        return [
                            _with_metrics(resource, scope, [{**metric, kind: {**metric[kind], "dataPoints": part}}])
                            for part in (points[:middle], points[middle:])
                        ]
    raise ParseableError("a single OTLP data point is larger than Parseable's payload limit", 413)


def _with_metrics(resource: dict, scope: dict, metrics: list) -> dict:
    return {"resourceMetrics": [{**resource, "scopeMetrics": [{**scope, "metrics": metrics}]}]}


@dataclass
class PostOutcome:
    """One request body's fate; ``sent`` is False when it should be kept for later."""

    sent: bool
    status: int | None = None
    attempts: int = 0
    bytes_raw: int = 0
    bytes_sent: int = 0
    error: str = ""
    requests: int = 0
    rejected: bool = False  # Parseable will never take this body as it is
    statuses: list[int] = field(default_factory=list)


class ParseableClient:
    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        stream: str = "raymetrics",
        encoding: str = "json",
        compression: str = "gzip",
        http_timeout_seconds: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if encoding not in CONTENT_TYPES:
            raise ValueError(f"PARSEABLE_OTLP_ENCODING={encoding!r}: use json (Parseable OSS) or protobuf")
        if compression not in COMPRESSIONS:
            raise ValueError(f"PARSEABLE_COMPRESSION={compression!r}: use one of {', '.join(COMPRESSIONS)}")
        self.url = server_url(url)
        self.stream = validate_stream_name(stream)
        self.encoding = encoding
        self.content_type = CONTENT_TYPES[encoding]
        self.compression = compression
        self._client = http_client(
            username,
            password,
            http_timeout_seconds,
            transport,
            **{"X-P-Stream": self.stream, "X-P-Log-Source": LOG_SOURCE},
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ParseableClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def post(self, body: bytes, deadline: float, content_type: str | None = None) -> PostOutcome:
        """POST one uncompressed OTLP body, retrying until ``deadline`` (``time.monotonic()``)."""
        content_type = content_type or self.content_type
        outcome = PostOutcome(sent=False, bytes_raw=len(body))
        pending = [body]
        while pending:
            part = pending.pop(0)
            result = self._post_one(part, content_type, deadline)
            outcome.attempts += result.attempts
            outcome.requests += result.requests
            outcome.bytes_sent += result.bytes_sent
            outcome.statuses += result.statuses
            outcome.status = result.status
            if result.status == 413:
                try:
                    pending[:0] = split_body(part, content_type)
                except ParseableError as error:
                    outcome.error, outcome.rejected = str(error), True
                    return outcome
                continue
            if not result.sent:
                outcome.error, outcome.rejected = result.error, result.rejected
                return outcome
        outcome.sent = True
        return outcome

    def _post_one(self, body: bytes, content_type: str, deadline: float) -> PostOutcome:
        payload, headers = compress(body, self.compression)
        headers["Content-Type"] = content_type
        outcome = PostOutcome(sent=False, bytes_raw=len(body))
        delay = 0.25
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                outcome.error = outcome.error or "no time left before the run's deadline"
                return outcome
            outcome.attempts += 1
            wait = None
            try:
                response = self._client.post(
                    f"{self.url}/v1/metrics", content=payload, headers=headers, timeout=min(remaining, 30.0)
                )
            except httpx.TransportError as error:
                outcome.error = f"cannot reach Parseable at {self.url}: {type(error).__name__}: {error}"
            else:
                outcome.requests += 1
                outcome.bytes_sent += len(payload)
                outcome.status = response.status_code
                outcome.statuses.append(response.status_code)
                if 200 <= response.status_code < 300:
                    outcome.sent = True
                    return outcome
                if response.status_code == 413:
                    outcome.error = "413: payload reached Parseable's size limit; splitting and resending"
                    return outcome
                if response.status_code != 429 and response.status_code < 500:
                    outcome.error = self._explain(response)
                    outcome.rejected = response.status_code == 400
                    return outcome
                outcome.error = f"Parseable answered {response.status_code}: {_server_message(response)}"
                wait = _retry_after_seconds(response)
            if wait is None:
                wait = delay * (0.5 + random.random())
                delay = min(delay * 2, 4.0)
            if time.monotonic() + wait >= deadline:
                outcome.error += f" (next try in {wait:.1f} s would pass the run's deadline)"
                return outcome
            time.sleep(wait)

    def _explain(self, response: httpx.Response) -> str:
        status, message = response.status_code, _server_message(response)
        if status == 400:
            return (
                f"Parseable rejected the request (400): {message}. Check PARSEABLE_STREAM ({self.stream!r}) is not "
                "a stream created for logs or traces, and use PARSEABLE_OTLP_ENCODING=json with Parseable OSS "
                "(it refuses protobuf)"
            )
        if status == 401:
            return (
                f"Parseable needs credentials (401): {message}. Set PARSEABLE_USERNAME and PARSEABLE_PASSWORD "
                "(Parseable's P_USERNAME / P_PASSWORD)"
            )
        if status == 403:
            return (
                f"Parseable refused the credentials (403): {message}. Check PARSEABLE_USERNAME / PARSEABLE_PASSWORD "
                f"and that the user may ingest into {self.stream!r}"
            )
        if status == 404:
            return (
                f"{self.url}/v1/metrics does not exist (404): is PARSEABLE_URL the server root, e.g. http://host:8000?"
            )
        return f"Parseable answered {status}: {message}"
