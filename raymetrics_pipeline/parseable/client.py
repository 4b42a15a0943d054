"""The send loop for Parseable's OTLP metrics endpoint (``POST /v1/metrics``).

Acts on ``status.decide``: retries only what can succeed later, honouring ``Retry-After``,
and never past the caller's deadline, so a scrape run stays inside its 15 s tick; halves a
body Parseable finds too large. Messages never carry the password or the Authorization header.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import httpx

from raymetrics_pipeline.dataset.names import LOG_SOURCE
from raymetrics_pipeline.parseable.connection import ParseableConnection
from raymetrics_pipeline.parseable.encode import COMPRESSIONS, CONTENT_TYPES, Unsplittable, compress, split_body
from raymetrics_pipeline.parseable.status import Decision, Verdict, decide, explain

FIRST_BACKOFF_SECONDS = 0.25
MAX_BACKOFF_SECONDS = 4.0


@dataclass
class PostOutcome:
    """One body's fate: SENT, REJECT (never acceptable as it is), or KEEP (try again in a later run)."""

    verdict: Verdict = Verdict.KEEP
    attempts: int = 0
    requests: int = 0
    bytes_raw: int = 0
    bytes_sent: int = 0
    statuses: list[int] = field(default_factory=list)
    error: str = ""


def _server_message(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:500] if text else "(empty body)"


class IngestClient:
    """Posts OTLP bodies of one encoding into the connection's dataset."""

    def __init__(self, connection: ParseableConnection, encoding: str = "json", compression: str = "gzip") -> None:
        self.check(encoding, compression)
        self.connection = connection
        self.content_type = CONTENT_TYPES[encoding]
        self.compression = compression

    @staticmethod
    def check(encoding: str, compression: str) -> None:
        """A clear error for an encoding or compression this client cannot send."""
        if encoding not in CONTENT_TYPES:
            raise ValueError(f"PARSEABLE_OTLP_ENCODING={encoding!r}: use json (Parseable OSS) or protobuf")
        if compression not in COMPRESSIONS:
            raise ValueError(f"PARSEABLE_COMPRESSION={compression!r}: use one of {', '.join(COMPRESSIONS)}")

    def post(self, body: bytes, deadline: float, content_type: str | None = None) -> PostOutcome:
        """POST one uncompressed OTLP body (halved as often as Parseable asks) before ``deadline``."""
        content_type = content_type or self.content_type
        outcome = PostOutcome(bytes_raw=len(body))
        pending = [body]
        while pending:
            part = pending.pop(0)
            decision = self._send(part, content_type, deadline, outcome)
            if decision.verdict is Verdict.SPLIT:
                try:
                    pending[:0] = split_body(part, content_type)
                except Unsplittable as error:
                    outcome.verdict, outcome.error = Verdict.REJECT, str(error)
                    return outcome
                continue
            if decision.verdict is not Verdict.SENT:
                outcome.verdict = decision.verdict  # REJECT or KEEP: ``_send`` never returns RETRY
                return outcome
        outcome.verdict = Verdict.SENT
        return outcome

    def _send(self, body: bytes, content_type: str, deadline: float, outcome: PostOutcome) -> Decision:
        """Send ``body`` until it is not worth retrying in this run; counts into ``outcome``."""
        payload, headers = compress(body, self.compression)
        headers.update(
            {"Content-Type": content_type, "X-P-Stream": self.connection.settings.stream, "X-P-Log-Source": LOG_SOURCE}
        )
        backoff = FIRST_BACKOFF_SECONDS
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                outcome.error = outcome.error or "no time left before the run's deadline"
                return Decision(Verdict.KEEP)
            outcome.attempts += 1
            try:
                response = self.connection.post(
                    "/v1/metrics",
                    content=payload,
                    headers=headers,
                    timeout=min(remaining, 30.0),
                )
            except httpx.TransportError as error:
                decision = decide(None)
                outcome.error = (
                    f"cannot reach Parseable at {self.connection.settings.url}: {type(error).__name__}: {error}"
                )
            else:
                outcome.requests += 1
                outcome.bytes_sent += len(payload)
                outcome.statuses.append(response.status_code)
                decision = decide(response.status_code, response.headers.get("retry-after"))
                if decision.verdict is not Verdict.SENT:
                    outcome.error = explain(
                        response.status_code,
                        _server_message(response),
                        self.connection.settings.url,
                        self.connection.settings.stream,
                    )
            if decision.verdict is not Verdict.RETRY:
                return decision
            wait = decision.retry_after_seconds
            if wait is None:
                wait = backoff * (0.5 + random.random())
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            if time.monotonic() + wait >= deadline:
                outcome.error += f" (next try in {wait:.1f} s would pass the run's deadline)"
                return Decision(Verdict.KEEP)
            time.sleep(wait)
