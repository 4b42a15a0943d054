"""The query layer's own promises, on both backends: Parseable's time window, errors that carry
the SQL, the bare COUNT(*) pitfall, and one name for the node, session, cluster and job."""

from datetime import UTC, datetime, timedelta

import pytest

from raymetrics_pipeline.dataset.query import MetricsQuery, QueryError
from raymetrics_pipeline.ingest import otlp
from raymetrics_pipeline.ingest.otlp import ResourceMetrics
from raymetrics_pipeline.ingest.prometheus import LabelSet, parse
from raymetrics_pipeline.localstore.rows import stored_rows
from raymetrics_pipeline.localstore.sql import LocalSql
from raymetrics_pipeline.localstore.store import LocalStore
from raymetrics_pipeline.parseable.connection import ParseableSettings
from raymetrics_pipeline.parseable.sql import ParseableSql
from raymetrics_pipeline_tests.backends import ship

T0 = datetime(2026, 11, 28, 8, 15, 30, tzinfo=UTC)
TEXT = """# TYPE ray_node_cpu_utilization gauge
ray_node_cpu_utilization{ip="10.0.0.1",SessionName="s1"} 40
# TYPE ray_tasks gauge
ray_tasks{NodeAddress="10.0.0.2",SessionName="s1",JobId="02000000",State="FAILED"} 3
# TYPE autoscaler_pending_nodes gauge
autoscaler_pending_nodes 0
"""
ATTRIBUTES = LabelSet(("cluster_id",), ("prod-a",))


def scrapes(text: str = TEXT) -> list[ResourceMetrics]:
    return [ResourceMetrics(ATTRIBUTES, otlp.to_metrics(parse(text), int(T0.timestamp() * 1e9)).metrics)]


@pytest.fixture
def parseable_query(parseable):
    def load(received: datetime, text: str = TEXT) -> None:
        parseable.set_now(received)
        ship(parseable, scrapes(text))

    with MetricsQuery(ParseableSql(ParseableSettings(parseable.url, "admin", "admin").connect(10.0))) as query:
        yield query, load


@pytest.fixture
def local_query(tmp_path):
    store = LocalStore(tmp_path)

    def load(received: datetime, text: str = TEXT) -> None:
        store.write(stored_rows(scrapes(text), received), received)

    return MetricsQuery(LocalSql(store)), load


@pytest.fixture(params=["parseable", "local store"])
def backend(request):
    return request.getfixturevalue("parseable_query" if request.param == "parseable" else "local_query")


def test_the_window_is_on_ingest_time_minute_truncated_and_end_exclusive(backend):
    query, load = backend
    for received in (T0, T0 + timedelta(seconds=45), T0 + timedelta(minutes=2)):  # 08:15:30, 08:16:15, 08:17:30
        load(received)
    count = "SELECT COUNT(*) AS n FROM raymetrics WHERE metric_name = 'ray_tasks'"

    def rows_between(start: datetime, end: datetime) -> int:
        return query.query(count, start, end)[0]["n"]

    assert rows_between(T0, T0 + timedelta(seconds=20)) == 0, "08:15:30-08:15:50 is read as [08:15, 08:15)"
    assert rows_between(T0 + timedelta(seconds=40), T0 + timedelta(minutes=1, seconds=50)) == 1  # [08:16, 08:17)
    assert rows_between(T0 - timedelta(minutes=1), T0 + timedelta(minutes=3)) == 3


def test_ray_points_names_node_session_cluster_and_job_whatever_the_label(backend):
    query, load = backend
    load(T0)
    rows = query.query(
        "SELECT metric_name, ray_node, ray_session, ray_cluster, ray_job FROM ray_points ORDER BY metric_name",
        T0 - timedelta(minutes=1),
        T0 + timedelta(minutes=1),
    )
    identity = ("ray_node", "ray_session", "ray_cluster", "ray_job")
    assert [(row["metric_name"], *(row[c] for c in identity)) for row in rows] == [
        ("autoscaler_pending_nodes", "", "", "prod-a", ""),
        ("ray_node_cpu_utilization", "10.0.0.1", "s1", "prod-a", ""),
        ("ray_tasks", "10.0.0.2", "s1", "prod-a", "02000000"),
    ]


def test_a_query_with_its_own_with_clause_can_use_ray_points(backend):
    query, load = backend
    load(T0)
    rows = query.query(
        "WITH busy AS (SELECT ray_node FROM ray_points WHERE data_point_value > 1) SELECT * FROM busy ORDER BY 1",
        T0 - timedelta(minutes=1),
        T0 + timedelta(minutes=1),
    )
    assert rows == [{"ray_node": "10.0.0.1"}, {"ray_node": "10.0.0.2"}]


def test_end_none_includes_the_current_minute(backend):
    query, load = backend
    now = datetime.now(UTC)
    load(now)
    assert query.query("SELECT COUNT(*) AS n FROM raymetrics", now - timedelta(minutes=1))[0]["n"] == 3


def test_errors_carry_the_sql_and_the_engine_message(backend):
    query, load = backend
    load(T0)
    sql = 'SELECT "NoSuchLabel" FROM raymetrics'
    with pytest.raises(QueryError) as caught:
        query.query(sql, T0, T0 + timedelta(minutes=1))
    assert sql in str(caught.value) and "NoSuchLabel" in str(caught.value).split("SQL:")[0]


def test_a_bare_count_counts_fresh_rows_on_parseable(parseable_query):
    """Parseable answers a bare COUNT(*) from uploaded manifests only (docs/parseable.md#bare-count); the layer
    avoids that."""
    query, load = parseable_query
    load(T0)
    assert query.query("SELECT COUNT(*) FROM raymetrics", T0, T0 + timedelta(minutes=1)) == [{"count(*)": 3}]


def test_an_empty_local_store_says_so(tmp_path):
    with pytest.raises(QueryError, match="holds no data yet"):
        MetricsQuery(LocalSql(LocalStore(tmp_path))).query("SELECT 1 FROM raymetrics", T0)


def test_columns_from_parseable_2_5_and_a_clashing_node_column_are_handled(tmp_path):
    """v2.5.0-v2.5.8 prefixed data-point attributes with ``metric_`` (docs/parseable.md#columns)."""
    store = LocalStore(tmp_path)
    stored = {"metric_SessionName": "s1", "ray_node": "stale", "p_timestamp": int(T0.timestamp() * 1000)}
    store.write(
        [
            {"metric_name": "ray_node_cpu_utilization", "metric_ip": "10.0.0.1", **stored},
            {"metric_name": "ray_tasks", "metric_NodeAddress": "10.0.0.2", **stored},
        ],
        T0,
    )
    rows = MetricsQuery(LocalSql(store)).query(
        "SELECT ray_node, ray_session FROM ray_points ORDER BY ray_node", T0, T0 + timedelta(minutes=1)
    )
    assert rows == [{"ray_node": "10.0.0.1", "ray_session": "s1"}, {"ray_node": "10.0.0.2", "ray_session": "s1"}]


def test_a_bad_stream_name_is_refused_before_any_sql(tmp_path):
    with pytest.raises(ValueError, match="PARSEABLE_STREAM"):
        LocalStore(tmp_path, "raymetrics; DROP")
    with pytest.raises(ValueError, match="PARSEABLE_STREAM"):
        ParseableSettings("http://127.0.0.1:9", "u", "p", stream="select")


class CompactedRightAfterListing(LocalStore):
    """A real store whose first listing is followed at once by a real compaction: the worst moment for a reader."""

    def __init__(self, root, now: datetime) -> None:
        super().__init__(root)
        self.now, self.compactions = now, 0

    def files(self, start=None, end=None):
        listed = super().files(start, end)
        if not self.compactions:
            self.compactions = self.compact(self.now).hours_compacted
        return listed


def test_a_query_racing_compaction_lists_again_and_counts_each_row_once(tmp_path):
    store = CompactedRightAfterListing(tmp_path, now=T0 + timedelta(hours=1))
    for seconds in range(0, 60, 15):
        store.write(stored_rows(scrapes(), T0 + timedelta(seconds=seconds)), T0 + timedelta(seconds=seconds))
    rows = MetricsQuery(LocalSql(store)).query("SELECT COUNT(*) AS n FROM raymetrics", T0, T0 + timedelta(minutes=5))
    assert store.compactions == 1 and rows == [{"n": 4 * 3}]
