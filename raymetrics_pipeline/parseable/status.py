"""What each answer from Parseable means for the body that was sent: the one place HTTP statuses are judged.

As the OpenTelemetry Collector's OTLP/HTTP exporter separates its retry policy from its send
loop, ``decide`` is a pure function of the answer; ``client.IngestClient.post`` acts on it.
Status meanings: docs/parseable.md#status-codes.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from enum import Enum


class Verdict(Enum):
    SENT = "sent"  # stored: forget the body
    RETRY = "retry"  # may succeed later in this run (connection error, timeout, 429, 5xx)
    SPLIT = "split"  # too large (413): halve it and send the halves
    REJECT = "reject"  # Parseable will never take this body (400): set it aside for a person
    KEEP = "keep"  # a setting must change first (401, 403, 404, ...): keep it for a later run


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    retry_after_seconds: float | None = None  # how long Parseable asked us to wait, if it said


def decide(status: int | None, retry_after: str | None = None, now: float | None = None) -> Decision:
    """The verdict on Parseable's answer; ``status`` None means no answer at all."""
    if status is None:
        return Decision(Verdict.RETRY)
    if 200 <= status < 300:
        return Decision(Verdict.SENT)
    if status == 413:
        return Decision(Verdict.SPLIT)
    if status == 429 or status >= 500:
        return Decision(Verdict.RETRY, retry_after_seconds(retry_after, time.time() if now is None else now))
    if status == 400:
        return Decision(Verdict.REJECT)
    return Decision(Verdict.KEEP)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` header (seconds or an HTTP date) as seconds from ``now``; None if absent or unreadable."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def explain(status: int, message: str, url: str, stream: str) -> str:
    """Parseable's refusal in words that say what to fix; never carries credentials."""
    if status == 400:
        return (
            f"Parseable rejected the request (400): {message}. Check PARSEABLE_STREAM ({stream!r}) is not "
            "a dataset created for logs or traces, and use PARSEABLE_OTLP_ENCODING=json with Parseable OSS "
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
            f"and that the user may ingest into {stream!r}"
        )
    if status == 404:
        return f"{url}/v1/metrics does not exist (404): is PARSEABLE_URL the server root, e.g. http://host:8000?"
    if status == 413:
        return "413: payload reached Parseable's size limit; splitting and resending"
    return f"Parseable answered {status}: {message}"
