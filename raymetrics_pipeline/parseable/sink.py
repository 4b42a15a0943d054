"""The Parseable sink: encode a cycle's metrics, deliver them, and keep what does not go through."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from raymetrics_pipeline.ingest.cycle import stage, timed
from raymetrics_pipeline.ingest.health import Reporter
from raymetrics_pipeline.ingest.otlp import ResourceMetrics
from raymetrics_pipeline.parseable.client import IngestClient, PostOutcome
from raymetrics_pipeline.parseable.encode import DEFAULT_MAX_REQUEST_BYTES, encode
from raymetrics_pipeline.parseable.spool import Spool
from raymetrics_pipeline.parseable.status import Verdict

# Leave this much of the run's budget unused by spool resends, so the run ends on time.
REPLAY_MARGIN_SECONDS = 0.5
# Every run resends at least this many spooled bodies while Parseable answers, even when converting a large
# scrape took its whole budget: a run spools at most one body then (its last), so the spool still drains.
MIN_RESENDS_PER_RUN = 2
# A large scrape goes on being sent after the run's deadline while Parseable answers (its next run waits);
# past this much longer, what is left waits in the spool.
SEND_OVERRUN_SECONDS = 45.0


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
    spool_expired: int = 0  # waiting bodies dropped for being older than the spool's age bound
    rejected_dropped: int = 0  # refused bodies dropped from spool/rejected, oldest first, for its bound
    ambiguous_requests: int = 0  # sent, never answered: kept and sent again, so maybe stored twice
    interrupted_resends: int = 0  # spooled bodies a killed run was resending: sent again, maybe stored twice
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
        self.ambiguous_requests += outcome.ambiguous
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
            "spool_expired": self.spool_expired,
            "rejected_dropped": self.rejected_dropped,
            "delivery_ambiguous_requests": self.ambiguous_requests,
            "spool_interrupted_resends": self.interrupted_resends,
        }


class ParseableSink:
    """OTLP to Parseable; whatever does not go through waits in the spool for the next cycle."""

    def __init__(self, client: IngestClient, spool: Spool, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> None:
        self.client, self.spool, self.max_request_bytes = client, spool, max_request_bytes

    def ship(self, scrapes: Iterable[ResourceMetrics], deadline: float, report: Reporter) -> ParseableDelivery:
        """Send this cycle's bodies as they are encoded, then spooled ones, then the delivery's own figures;
        keep whatever did not go through.

        New data goes first so freshness recovers as soon as Parseable is back; the spool is
        drained only while Parseable is answering.
        """
        delivery = ParseableDelivery(spool_expired=self.spool.drop_expired(time.time()))
        healthy = self._send(scrapes, deadline, delivery, healthy=True)
        if healthy:
            healthy = self._resend(deadline, delivery)
        self._record_depth(delivery)
        self._send([report(delivery.figures())], deadline, delivery, healthy)
        self._record_depth(delivery)
        return delivery

    def _send(
        self, scrapes: Iterable[ResourceMetrics], deadline: float, delivery: ParseableDelivery, healthy: bool
    ) -> bool:
        """Post the bodies of ``scrapes`` while Parseable takes them, spool the rest; whether it still does."""
        content_type = self.client.content_type
        stop_sending = deadline + SEND_OVERRUN_SECONDS
        for body in timed(encode(scrapes, content_type, self.max_request_bytes), "encode"):
            if healthy and time.monotonic() < stop_sending:
                with stage("send"):
                    outcome = self.client.post(body, deadline)
                healthy = self._settle(outcome, content_type, delivery, respool_kept=True)
                delivery.bodies_sent += outcome.verdict is Verdict.SENT
                continue
            delivery.spool_dropped += self.spool.put(body, content_type)
            delivery.bodies_spooled += 1
        return healthy

    def _resend(self, deadline: float, delivery: ParseableDelivery) -> bool:
        """Send spooled bodies, oldest first, each marked while in flight; whether Parseable still takes them."""
        with self.spool.resending() as ours:
            if not ours:
                return True  # another run is resending them right now
            delivery.interrupted_resends = self.spool.recover_interrupted()
            resent = 0
            for spooled in self.spool.pending():
                if resent >= MIN_RESENDS_PER_RUN and time.monotonic() >= deadline - REPLAY_MARGIN_SECONDS:
                    break
                body = self.spool.claim(spooled)
                if body is None:
                    continue  # another shard's run dropped it (spool or age bound): not one of this run's resends
                resent += 1
                with stage("send"):
                    outcome = self.client.post(body, deadline, spooled.content_type)
                if outcome.kept == [body]:  # not taken at all: back in the queue as it was
                    self.spool.unmark_sending(spooled)
                else:
                    self._settle(outcome, spooled.content_type, delivery, respool_kept=False)
                    self.spool.remove_sent(spooled)
                    delivery.spooled_bodies_delivered += outcome.verdict is Verdict.SENT
                if outcome.verdict is not Verdict.SENT:
                    delivery.errors.append(f"spooled {spooled.path.name}: {outcome.error}")
                if outcome.kept:
                    return False
        return True

    def _settle(self, outcome: PostOutcome, content_type: str, delivery: ParseableDelivery, respool_kept: bool) -> bool:
        """Spool the parts Parseable did not take, set aside the ones it refused (with its reason); whether
        it still takes bodies. ``respool_kept``: the parts are new data, counted as spooled."""
        delivery.count(outcome)
        for part in outcome.kept:
            delivery.spool_dropped += self.spool.put(part, content_type)
            delivery.bodies_spooled += respool_kept
        for part, reason in outcome.rejected:
            delivery.rejected_dropped += self.spool.reject(part, content_type, reason)
            delivery.bodies_rejected += 1
        if outcome.verdict is not Verdict.SENT and respool_kept:
            delivery.errors.append(outcome.error)
        return not outcome.kept

    def _record_depth(self, delivery: ParseableDelivery) -> None:
        depth = self.spool.depth(time.time())
        delivery.spool_pending, delivery.spool_pending_bytes = depth.bodies, depth.bytes
        delivery.spool_oldest_age_seconds = depth.oldest_age_seconds
