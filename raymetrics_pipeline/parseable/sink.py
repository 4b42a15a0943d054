"""The Parseable sink: encode a cycle's metrics, deliver them, and keep what does not go through."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from raymetrics_pipeline.ingest.health import Reporter
from raymetrics_pipeline.ingest.otlp import ResourceMetrics
from raymetrics_pipeline.parseable.client import IngestClient, PostOutcome
from raymetrics_pipeline.parseable.encode import DEFAULT_MAX_REQUEST_BYTES, encode
from raymetrics_pipeline.parseable.spool import Spool
from raymetrics_pipeline.parseable.status import Verdict

# Leave this much of the run's budget unused by spool replays, so the run ends on time.
REPLAY_MARGIN_SECONDS = 0.5


@dataclass
class ParseableDelivery:
    """One cycle's requests to Parseable and what became of its bodies and the spool's."""

    requests: int = 0
    retries: int = 0
    http_statuses: list[int] = field(default_factory=list)  # each status seen, once
    bytes_raw: int = 0
    bytes_compressed: int = 0
    bodies_sent: int = 0
    bodies_spooled: int = 0
    bodies_rejected: int = 0
    spooled_bodies_delivered: int = 0
    spool_pending: int = 0
    spool_pending_bytes: int = 0
    spool_oldest_age_seconds: float = 0.0
    spool_dropped: int = 0  # waiting bodies dropped, oldest first, to keep the spool under its bound
    rejected_dropped: int = 0  # refused bodies dropped from spool/rejected, oldest first, for its bound
    last_http_status: int = 0  # 0: Parseable never answered
    errors: list[str] = field(default_factory=list)

    @property
    def delivered(self) -> bool:
        return bool(self.bodies_sent or self.spooled_bodies_delivered)

    @property
    def failure(self) -> str | None:
        if not (self.bodies_spooled or self.bodies_rejected):
            return None
        return (
            f"Delivery to Parseable failed: {self.bodies_spooled} request(s) kept in the spool for the next "
            f"run ({self.spool_pending} pending), {self.bodies_rejected} refused for good and set aside in "
            f"spool/rejected. First error: {self.errors[0]}"
        )

    @property
    def warnings(self) -> list[str]:
        return self.errors

    def count(self, outcome: PostOutcome) -> None:
        self.requests += outcome.requests
        self.retries += max(0, outcome.attempts - 1)
        self.bytes_raw += outcome.bytes_raw
        self.bytes_compressed += outcome.bytes_sent
        self.http_statuses = sorted({*self.http_statuses, *outcome.statuses})
        if outcome.statuses:
            self.last_http_status = outcome.statuses[-1]

    def figures(self) -> dict[str, float]:
        """The cycle as the pipeline's own metrics (ingest/health.py)."""
        return {
            "delivery_requests": self.requests,
            "delivery_retries": self.retries,
            "delivery_http_status": self.last_http_status,
            "delivery_bodies_spooled": self.bodies_spooled,
            "delivery_bodies_rejected": self.bodies_rejected,
            "spool_bodies": self.spool_pending,
            "spool_bytes": self.spool_pending_bytes,
            "spool_oldest_age_seconds": self.spool_oldest_age_seconds,
            "spool_dropped": self.spool_dropped,
            "rejected_dropped": self.rejected_dropped,
        }


class ParseableSink:
    """OTLP to Parseable; whatever does not go through waits in the spool for the next cycle."""

    def __init__(self, client: IngestClient, spool: Spool, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> None:
        self.client, self.spool, self.max_request_bytes = client, spool, max_request_bytes

    def ship(self, scrapes: Sequence[ResourceMetrics], deadline: float, report: Reporter) -> ParseableDelivery:
        """Send this cycle's bodies, then older spooled ones, then the delivery's own figures; keep whatever
        did not go through.

        New data goes first so freshness recovers as soon as Parseable is back; the spool is
        drained only while Parseable is answering and time is left.
        """
        delivery = ParseableDelivery()
        healthy = self._send(scrapes, deadline, delivery, healthy=True)
        for spooled in self.spool.pending() if healthy else []:
            if time.monotonic() >= deadline - REPLAY_MARGIN_SECONDS:
                break
            body = spooled.read()
            outcome = self.client.post(body, deadline, spooled.content_type)
            delivery.count(outcome)
            if outcome.verdict is Verdict.SENT:
                self.spool.remove(spooled)
                delivery.spooled_bodies_delivered += 1
                continue
            delivery.errors.append(f"spooled {spooled.path.name}: {outcome.error}")
            if outcome.verdict is not Verdict.REJECT:
                healthy = False
                break
            delivery.rejected_dropped += self.spool.reject(body, spooled.content_type)
            self.spool.remove(spooled)
            delivery.bodies_rejected += 1
        self._record_depth(delivery)
        self._send([report(delivery.figures())], deadline, delivery, healthy)
        self._record_depth(delivery)
        return delivery

    def _send(
        self, scrapes: Sequence[ResourceMetrics], deadline: float, delivery: ParseableDelivery, healthy: bool
    ) -> bool:
        """Post the bodies of ``scrapes`` while Parseable answers, spool the rest; whether it still answers."""
        content_type = self.client.content_type
        for body in encode(scrapes, content_type, self.max_request_bytes):
            if healthy:
                outcome = self.client.post(body, deadline)
                delivery.count(outcome)
                if outcome.verdict is Verdict.SENT:
                    delivery.bodies_sent += 1
                    continue
                delivery.errors.append(outcome.error)
                if outcome.verdict is Verdict.REJECT:
                    delivery.rejected_dropped += self.spool.reject(body, content_type)
                    delivery.bodies_rejected += 1
                    continue
                healthy = False
            delivery.spool_dropped += self.spool.put(body, content_type)
            delivery.bodies_spooled += 1
        return healthy

    def _record_depth(self, delivery: ParseableDelivery) -> None:
        depth = self.spool.depth(time.time())
        delivery.spool_pending, delivery.spool_pending_bytes = depth.bodies, depth.bytes
        delivery.spool_oldest_age_seconds = depth.oldest_age_seconds
