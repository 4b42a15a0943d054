"""The status policy as a table: what each answer from Parseable means for the body that was sent."""

import email.utils

import pytest

from raymetrics_pipeline.parseable.status import Decision, Verdict, decide, explain

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("status", "retry_after", "decision"),
    [
        (200, None, Decision(Verdict.SENT)),
        (204, None, Decision(Verdict.SENT)),
        (None, None, Decision(Verdict.RETRY)),  # no answer: connection refused, reset, timeout
        (500, None, Decision(Verdict.RETRY)),
        (503, "7", Decision(Verdict.RETRY, 7.0)),
        (503, email.utils.formatdate(NOW + 30, usegmt=True), Decision(Verdict.RETRY, 30.0)),
        (503, email.utils.formatdate(NOW - 30, usegmt=True), Decision(Verdict.RETRY, 0.0)),
        (429, "soon", Decision(Verdict.RETRY)),  # unreadable Retry-After: our own backoff
        (413, None, Decision(Verdict.SPLIT)),
        (400, None, Decision(Verdict.REJECT)),
        (401, None, Decision(Verdict.KEEP)),
        (403, None, Decision(Verdict.KEEP)),
        (404, None, Decision(Verdict.KEEP)),
        (405, None, Decision(Verdict.KEEP)),
    ],
)
def test_each_status_has_one_verdict(status, retry_after, decision):
    assert decide(status, retry_after, now=NOW) == decision


@pytest.mark.parametrize(
    ("status", "advice"),
    [
        (400, "PARSEABLE_OTLP_ENCODING=json"),
        (401, "PARSEABLE_USERNAME and PARSEABLE_PASSWORD"),
        (403, "may ingest into 'raymetrics'"),
        (404, "is PARSEABLE_URL the server root"),
        (413, "splitting"),
        (418, "Parseable answered 418: teapot"),
    ],
)
def test_each_refusal_says_what_to_fix(status, advice):
    assert advice in explain(status, "teapot", "http://p:8000", "raymetrics")
