"""The send loop for Parseable's OTLP metrics endpoint (``POST /v1/metrics``).

Acts on ``status.decide``: retries only what can succeed later, honouring ``Retry-After``,
and never past the caller's deadline, so a scrape run stays near its 15 s tick; halves a
body Parseable finds too large, and halves a refused one until the refused data is found.
A request that went out is waited for (a request given up on and sent again is stored twice);
one that never gets an answer is counted as ambiguous. Messages never carry the password or
the Authorization header.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import httpx

from raymetrics_pipeline.dataset.names import LOG_SOURCE
from raymetrics_pipeline.ingest.cycle import stage
from raymetrics_pipeline.parseable.connection import ParseableConnection
from raymetrics_pipeline.parseable.encode import COMPRESSIONS, CONTENT_TYPES, Unsplittable, compress, split_body
from raymetrics_pipeline.parseable.status import Decision, Verdict, decide, explain

FIRST_BACKOFF_SECONDS = 0.25
MAX_BACKOFF_SECONDS = 4.0
# A request that reached Parseable waits this long for its answer, past the run's deadline if need be:
# giving up on it sooner and sending it again later would store it twice whenever Parseable was only slow.
ANSWER_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 5.0
# Halving a refused (400) body to find the refused data costs requests; past this many, what is still
# refused is set aside as it is.
MAX_ISOLATION_REQUESTS = 64
# Errors after the request went out: Parseable may have stored the body, or not.
_NO_ANSWER = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)


@dataclass
class PostOutcome:
    """One body's fate, part by part: a body may be halved (413, or 400 to find the refused data), and
    each part is sent, refused for good, or kept for a later run."""

    attempts: int = 0
    requests: int = 0
    bytes_raw: int = 0
    bytes_sent: int = 0
    statuses: list[int] = field(default_factory=list)
    parts_sent: int = 0
    kept: list[bytes] = field(default_factory=list, repr=False)  # not taken yet: for a later run
    rejected: list[tuple[bytes, str]] = field(default_factory=list, repr=False)  # with Parseable's message
    ambiguous: int = 0  # requests sent whose answer never came: Parseable may hold them already
    isolation_requests: int = 0
    error: str = ""  # the first problem, in words that say what to fix

    @property
    def verdict(self) -> Verdict:
        """SENT: every part stored; KEEP: some wait for a later run; REJECT: the rest is stored, some refused."""
        if self.kept:
            return Verdict.KEEP
        return Verdict.REJECT if self.rejected else Verdict.SENT

    def note(self, message: str) -> None:
        self.error = self.error or message


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
        """POST one uncompressed OTLP body; retries end at ``deadline``, a request already sent is waited for.

        Once Parseable stops taking parts (down, slow, a setting to fix), the parts not sent yet
        are kept without trying them.
        """
        outcome = PostOutcome(bytes_raw=len(body))
        self._deliver(body, content_type or self.content_type, deadline, outcome)
        return outcome

    def _deliver(
        self,
        part: bytes,
        content_type: str,
        deadline: float,
        outcome: PostOutcome,
        refused: list[tuple[bytes, str]] | None = None,
    ) -> None:
        """Send ``part``: halve it after a 413; after a 400, find the refused data in it, or, for a half sent
        while finding it (``refused`` given), leave it in ``refused`` for ``_isolate`` to judge."""
        if outcome.kept:
            outcome.kept.append(part)
            return
        if refused is not None:
            outcome.isolation_requests += 1
        decision, message = self._send(part, content_type, deadline, outcome)
        if decision.verdict is Verdict.SENT:
            outcome.parts_sent += 1
        elif decision.verdict is Verdict.SPLIT:
            for half in self._halves(part, content_type, message, outcome):
                self._deliver(half, content_type, deadline, outcome)
        elif decision.verdict is Verdict.REJECT and refused is not None:
            refused.append((part, message))
        elif decision.verdict is Verdict.REJECT:
            self._isolate(part, content_type, deadline, message, outcome)
        else:
            outcome.kept.append(part)

    def _isolate(self, part: bytes, content_type: str, deadline: float, message: str, outcome: PostOutcome) -> None:
        """Parseable refused ``part`` (400): send its halves, and halve again the ones still refused, so
        one bad series costs only itself.

        When both halves are refused for the same reason as the whole, the refusal is the body's
        (a dataset made for logs, a header, the dataset's column limit), not one part's: the part is
        set aside whole rather than taken apart point by point.
        """
        if outcome.isolation_requests >= MAX_ISOLATION_REQUESTS:
            outcome.rejected.append((part, message))
            return
        refused: list[tuple[bytes, str]] = []
        for half in self._halves(part, content_type, message, outcome):
            self._deliver(half, content_type, deadline, outcome, refused)
        if len(refused) == 2 and all(reason == message for _, reason in refused):
            outcome.rejected.append((part, message))
            return
        for half, half_message in refused:
            self._isolate(half, content_type, deadline, half_message, outcome)

    @staticmethod
    def _halves(part: bytes, content_type: str, message: str, outcome: PostOutcome) -> list[bytes]:
        """``part`` halved; none if it cannot be, and then it is set aside with why."""
        try:
            return split_body(part, content_type)
        except Unsplittable as error:
            outcome.rejected.append((part, f"{message}; {error}"))
            outcome.note(str(error))
            return []

    def _send(self, body: bytes, content_type: str, deadline: float, outcome: PostOutcome) -> tuple[Decision, str]:
        """Send ``body`` until it is not worth retrying in this run: the decision and Parseable's message.

        The first try always goes out; retries only before ``deadline``. A request that went out
        is never cut short at the deadline: it may already be stored.
        """
        with stage("compress"):
            payload, headers = compress(body, self.compression)
        headers.update(
            {"Content-Type": content_type, "X-P-Stream": self.connection.settings.stream, "X-P-Log-Source": LOG_SOURCE}
        )
        url = self.connection.settings.url
        backoff = FIRST_BACKOFF_SECONDS
        tried, message = False, ""
        while True:
            remaining = deadline - time.monotonic()
            if tried and remaining <= 0.05:
                message = f"{message} (no time left before the run's deadline)"
                outcome.note(message)
                return Decision(Verdict.KEEP), message
            tried = True
            outcome.attempts += 1
            connect = min(max(remaining, 0.5), CONNECT_TIMEOUT_SECONDS)
            timeout = httpx.Timeout(ANSWER_TIMEOUT_SECONDS, connect=connect, pool=connect)
            try:
                response = self.connection.post("/v1/metrics", content=payload, headers=headers, timeout=timeout)
            except _NO_ANSWER as error:
                outcome.requests += 1
                outcome.ambiguous += 1
                message = (
                    f"sent to Parseable at {url} but no answer came ({type(error).__name__}: {error}); kept for "
                    "a later run, and Parseable may have stored it already (the rollups count a sample once)"
                )
                outcome.note(message)
                return Decision(Verdict.KEEP), message
            except httpx.TransportError as error:
                decision = decide(None)
                message = f"cannot reach Parseable at {url}: {type(error).__name__}: {error}"
            else:
                outcome.requests += 1
                outcome.bytes_sent += len(payload)
                outcome.statuses.append(response.status_code)
                decision = decide(response.status_code, response.headers.get("retry-after"))
                message = ""
                if decision.verdict is not Verdict.SENT:
                    message = explain(
                        response.status_code, _server_message(response), url, self.connection.settings.stream
                    )
            if decision.verdict is Verdict.RETRY:
                wait = decision.retry_after_seconds
                if wait is None:
                    wait = backoff * (0.5 + random.random())
                    backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                if time.monotonic() + wait < deadline:
                    time.sleep(wait)
                    continue
                message += f" (next try in {wait:.1f} s would pass the run's deadline)"
                decision = Decision(Verdict.KEEP)
            if decision.verdict in (Verdict.KEEP, Verdict.REJECT):
                outcome.note(message)
            return decision, message
