import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raymetrics_pipeline.ingest.prometheus import parse
from raymetrics_pipeline_tests.scrape_fixtures import scrape_fixtures

FIXTURES = scrape_fixtures()


def independent_sample_count(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def test_project_has_its_own_fixtures():
    assert any(f.id.startswith("project/") for f in FIXTURES)
    assert {f.session for f in FIXTURES if f.id.startswith("project/")} >= {"session_a", "session_b"}


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda f: f.id)
def test_every_fixture_line_is_a_sample(fixture):
    text = fixture.text()
    exposition = parse(text)
    assert exposition.errors == []
    assert exposition.sample_count == independent_sample_count(text)
    assert sum(len(f.samples) for f in exposition.families) == exposition.sample_count


def test_fixture_values_spot_checked_against_the_raw_text():
    """Every `ray_node_cpu_utilization` and `ray_tasks` sample equals the number at the end of its line."""
    checked = 0
    for fixture in FIXTURES[:12]:
        text = fixture.text()
        lines = {}
        for line in text.splitlines():
            if line.startswith(("ray_node_cpu_utilization{", "ray_tasks{")):
                lines[line[: line.rindex("}") + 1]] = float(line.rsplit(" ", 1)[1])
        samples = {}
        for family in parse(text).families:
            if family.name in ("ray_node_cpu_utilization", "ray_tasks"):
                for s in family.samples:
                    key = s.name + "{" + ",".join(f'{k}="{v}"' for k, v in s.labels) + "}"
                    samples[key] = s.value
        assert samples == lines
        checked += len(lines)
    assert checked > 20


def test_types_help_and_counter_names_verbatim():
    text = """# HELP ray_gcs_calls_total Calls \\\\ made\\nto GCS.
# TYPE ray_gcs_calls_total counter
ray_gcs_calls_total{Method="Get"} 12
# TYPE requests counter
requests_total{code="200"} 3
requests{code="500"} 1
# TYPE temperature gauge
temperature 21.5
loose_metric{a="b"} 7
"""
    exposition = parse(text)
    by_name = {f.name: f for f in exposition.families}
    assert by_name["ray_gcs_calls_total"].type == "counter"
    assert by_name["ray_gcs_calls_total"].help == "Calls \\ made\nto GCS."
    assert [s.name for s in by_name["requests"].samples] == ["requests_total", "requests"]
    assert by_name["requests"].type == "counter"
    assert by_name["temperature"].samples[0].value == 21.5
    assert by_name["loose_metric"].type == "untyped"
    assert exposition.sample_count == 5


def test_special_values_and_timestamps():
    exposition = parse("a NaN\nb +Inf\nc -Inf 1700000000000\nd 1.5e3 -5\ne Inf\n")
    values = {f.name: f.samples[0] for f in exposition.families}
    assert math.isnan(values["a"].value)
    assert values["b"].value == math.inf and values["e"].value == math.inf
    assert values["c"].value == -math.inf and values["c"].timestamp_ms == 1700000000000
    assert values["d"].value == 1500.0 and values["d"].timestamp_ms == -5
    assert values["a"].timestamp_ms is None


def test_label_escapes_blanks_and_empty_values():
    exposition = parse('m{path="C:\\\\x",quote="say \\"hi\\"",nl="a\\nb",empty="" , spaced = "v",} 1\n')
    assert exposition.errors == []
    assert tuple(exposition.families[0].samples[0].labels) == (
        ("path", "C:\\x"),
        ("quote", 'say "hi"'),
        ("nl", "a\nb"),
        ("empty", ""),
        ("spaced", "v"),
    )


def test_histogram_and_summary_samples_belong_to_their_family():
    text = """# TYPE lat histogram
lat_bucket{le="0.1"} 1
lat_bucket{le="+Inf"} 3
lat_count 3
lat_sum 0.9
# TYPE rpc summary
rpc{quantile="0.5"} 0.2
rpc_sum 4
rpc_count 10
"""
    families = {f.name: f for f in parse(text).families}
    assert [s.name for s in families["lat"].samples] == ["lat_bucket", "lat_bucket", "lat_count", "lat_sum"]
    assert [s.name for s in families["rpc"].samples] == ["rpc", "rpc_sum", "rpc_count"]


@pytest.mark.parametrize(
    "bad_line",
    [
        'm{a="unterminated} 1',
        "m{a=1} 1",
        'm{a="x"} one',
        'm{a="x"} 1 2.5',
        'm{a="x",a="y"} 1',
        'm{a="\\q"} 1',
        "9metric 1",
        "m 1 2 3",
        "m 1_000",
        "# TYPE m histogramm",
    ],
)
def test_a_malformed_line_is_reported_and_the_rest_kept(bad_line):
    exposition = parse(f"good_before 1\n{bad_line}\ngood_after 2\n")
    assert [e.line_no for e in exposition.errors] == [2]
    assert bad_line[:20] in exposition.errors[0].line
    assert {f.name for f in exposition.families} == {"good_before", "good_after"}


@pytest.mark.parametrize("fixture", FIXTURES[:6], ids=lambda f: f.id)
def test_line_by_line_reading_agrees_with_the_fast_path(fixture):
    """Leading blanks and CRLF endings send every line down the general path; the result must not change."""

    def flat(exposition):
        return [
            (f.name, f.type, f.help, s.name, tuple(s.labels), s.value, s.line_no)
            for f in exposition.families
            for s in f.samples
        ]

    text = fixture.text()
    unusual = "\r\n".join(" " + line for line in text.split("\n"))
    assert flat(parse(unusual)) == flat(parse(text))
    assert parse(unusual).errors == []


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@given(
    st.lists(
        st.tuples(st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True), st.text()),
        max_size=6,
        unique_by=lambda p: p[0],
    )
)
def test_label_values_round_trip_through_escaping(pairs):
    line = "m{" + ",".join(f'{k}="{escape(v)}"' for k, v in pairs) + "} 1\n"
    exposition = parse(line)
    assert exposition.errors == []
    assert tuple(exposition.families[0].samples[0].labels) == tuple(pairs)


def test_bucket_and_quantile_labels_are_taken_out_of_the_series_labels():
    text = """# TYPE lat histogram
lat_bucket{path="/a,le=",le="0.1",zone="x"} 1
lat_bucket{le="+Inf",path="/a,le=",zone="x"} 3
lat_sum{path="/a,le=",zone="x"} 0.9
lat_count{path="/a,le=",zone="x"} 3
lat_bucket{path="/a"} 3
# TYPE rpc summary
rpc{quantile="0.5"} 0.2
rpc_sum 4
"""
    exposition = parse(text)
    assert exposition.errors == []
    lat, rpc = exposition.families
    assert [s.bound for s in lat.samples] == ["0.1", "+Inf", None, None, None]
    assert tuple(lat.samples[0].labels) == (("path", "/a,le="), ("zone", "x"))
    # Every sample of the series shares one label set, so grouping by series is cheap.
    assert all(s.labels is lat.samples[0].labels for s in lat.samples[:4])
    assert [(s.bound, tuple(s.labels)) for s in rpc.samples] == [("0.5", ()), (None, ())]


def test_a_repeated_bound_label_is_a_malformed_line():
    exposition = parse('# TYPE lat histogram\nlat_bucket{le="1",le="2"} 1\nlat_bucket{le="+Inf"} 1\n')
    assert [(e.line_no, e.message) for e in exposition.errors] == [(2, "duplicate label name")]


@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[a-km-zA-Z_][a-zA-Z0-9_]{0,6}", fullmatch=True),
            st.one_of(st.sampled_from(["", ",le=", "le=", "x,le="]), st.text(alphabet=',le="\\\n x', max_size=8)),
        ),
        max_size=5,
        unique_by=lambda p: p[0],
    ),
    st.integers(min_value=0, max_value=5),
    st.text(alphabet=',le="\\x1', max_size=5),
)
def test_the_bound_label_comes_out_wherever_it_sits_and_whatever_the_values_hold(pairs, position, bound):
    """Values holding `,le="` (possible only just before a closing quote) must not fool the quick cut."""
    written = [f'{k}="{escape(v)}"' for k, v in pairs]
    written.insert(min(position, len(written)), f'le="{escape(bound)}"')
    exposition = parse("# TYPE lat histogram\nlat_bucket{" + ",".join(written) + "} 1\n")
    assert exposition.errors == []
    (sample,) = exposition.families[0].samples
    assert (tuple(sample.labels), sample.bound) == (tuple(pairs), bound)
