"""What the parser, the converter and the encoders keep from one scrape to the next (label sets, comment lines,
attributes) changes nothing they give, and the bodies are what protobuf and gzip themselves would write."""

import gzip

import pytest
from isal import igzip

from raymetrics_pipeline.ingest import otlp, prometheus
from raymetrics_pipeline.ingest.otlp import ResourceMetrics
from raymetrics_pipeline.ingest.prometheus import LabelSet, parse
from raymetrics_pipeline.parseable import encode
from raymetrics_pipeline_tests.otlp_messages import decode_json
from raymetrics_pipeline_tests.scrape_fixtures import scrape_fixtures

FIXTURES = scrape_fixtures()
RESOURCE = LabelSet(("cluster_id", "env"), ("prod-a", "prod"))


def forget_everything() -> None:
    prometheus.forget_remembered()
    otlp.forget_remembered()
    encode.forget_remembered()


def read(text: str, time_unix_nano: int) -> tuple:
    exposition = parse(text)
    conversion = otlp.to_metrics(exposition, time_unix_nano)
    scrapes = [ResourceMetrics(RESOURCE, conversion.metrics)]
    return exposition, conversion, list(encode.JsonEncoder().encode(scrapes)), list(encode.encode_protobuf(scrapes))


@pytest.mark.parametrize("fixture", FIXTURES[:6], ids=lambda f: f.id)
def test_a_scrape_read_with_everything_remembered_gives_what_it_gives_first(fixture):
    forget_everything()
    first = read(fixture.text(), fixture.scrape_time_unix_nano)
    for other in FIXTURES:  # what every other scrape leaves behind, as in a run's later cycles
        read(other.text(), other.scrape_time_unix_nano)
    assert read(fixture.text(), fixture.scrape_time_unix_nano) == first


@pytest.mark.parametrize("fixture", FIXTURES[:6], ids=lambda f: f.id)
def test_protobuf_bodies_are_what_protobuf_writes_for_the_json_bodies(fixture):
    _, _, json_bodies, protobuf_bodies = read(fixture.text(), fixture.scrape_time_unix_nano)
    assert protobuf_bodies == [decode_json(json_bodies).SerializeToString()]


def test_gzip_bodies_are_isal_gzip_at_level_one():
    _, _, (body,), _ = read(FIXTURES[0].text(), FIXTURES[0].scrape_time_unix_nano)
    gzipped, headers = encode.compress(body, "gzip")
    assert gzipped == igzip.compress(body, 1, mtime=0) and gzip.decompress(gzipped) == body
    assert headers == {"Content-Encoding": "gzip"}
