"""The local store's rows are the rows Parseable keeps: checked against the Parseable double.

Each case is shipped as OTLP/JSON into the double (written to docs/parseable.md#rows) and
written to a local store as the scrape process writes it, with the same receive time, then read
back as the store's readers read it; rows and column types must agree.
Only the series hash differs by design (Parseable's FxHash is opaque to clients).
"""

from collections import Counter
from datetime import UTC, datetime

import pytest

from raymetrics_pipeline.dataset.names import SERIES_HASH
from raymetrics_pipeline.ingest import otlp
from raymetrics_pipeline.ingest.otlp import ResourceMetrics
from raymetrics_pipeline.ingest.prometheus import NO_LABELS, LabelSet, parse
from raymetrics_pipeline.localstore.arrow import files_dataset
from raymetrics_pipeline.localstore.rows import stored_rows
from raymetrics_pipeline.localstore.store import LocalStore
from raymetrics_pipeline_tests.backends import ship
from raymetrics_pipeline_tests.scrape_fixtures import scrape_fixtures

RECEIVED = datetime(2026, 11, 28, 8, 15, 30, 250000, tzinfo=UTC)
EDGE_CASES = """# HELP lat Request latency.
# TYPE lat histogram
lat_bucket{path="/a",le="0.1"} 1
lat_bucket{path="/a",le="1"} 3
lat_bucket{path="/a",le="+Inf"} 4
lat_sum{path="/a"} 2.5
lat_count{path="/a"} 4
# TYPE rpc summary
rpc{quantile="0.5"} 0.2
rpc{quantile="0.9"} 0.7
rpc_sum 4
rpc_count 10
# TYPE up gauge
up{Version="2.60.0",version="3.11",metric_name="shadowed",empty=""} NaN
# TYPE calls counter
calls_total{Method="Get",method="get"} 7 1795851064173
"""
CASES = {
    "edge cases": [(LabelSet(("cluster_id", "env"), ("c1", "prod")), EDGE_CASES)],
    "three Ray endpoints": [(NO_LABELS, f.text()) for f in scrape_fixtures(include_shared=False)[:3]],
}


def comparable(rows: list[dict]) -> Counter:
    return Counter(repr(sorted((k, v) for k, v in row.items() if k != SERIES_HASH and v is not None)) for row in rows)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_rows_and_types_match_what_parseable_stores(case, parseable, tmp_path):
    scrapes = [
        ResourceMetrics(attributes, otlp.to_metrics(parse(text), 1795851064173702282).metrics)
        for attributes, text in CASES[case]
    ]
    store = LocalStore(tmp_path)
    store.write(stored_rows(scrapes, RECEIVED), RECEIVED)
    expected = files_dataset(store.files()).to_table()
    parseable.set_now(RECEIVED)
    ship(parseable, scrapes)
    stored = parseable.table("raymetrics")
    assert comparable(expected.to_pylist()) == comparable(stored.to_pylist())
    assert {f.name: f.type for f in expected.schema} == {f.name: f.type for f in stored.schema}
    assert expected.schema.names == sorted(expected.schema.names), "columns in Parseable's alphabetical order"


def test_every_series_gets_a_distinct_stable_hash():
    scrapes = [ResourceMetrics(NO_LABELS, otlp.to_metrics(parse(EDGE_CASES), 0).metrics)]
    first, again = ([row[SERIES_HASH] for row in stored_rows(scrapes, RECEIVED)] for _ in range(2))
    assert first == again and len(set(first)) == len(first)
