import itertools
import math
import time
import timeit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raymetrics_pipeline.ingest import prometheus
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
    exposition = parse("a NaN\nb +Inf\nc -Inf 1700000000000\nd 1.5e3 5\ne Inf\n")
    values = {f.name: f.samples[0] for f in exposition.families}
    assert math.isnan(values["a"].value)
    assert values["b"].value == math.inf and values["e"].value == math.inf
    assert values["c"].value == -math.inf and values["c"].timestamp_ms == 1700000000000
    assert values["d"].value == 1500.0 and values["d"].timestamp_ms == 5
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


def parse_seconds(text: str) -> float:
    """The best of three runs: the machine is shared, and a pause in one run is not the parser's."""
    return min(timeit.repeat(lambda: parse(text), number=1, repeat=3))


# Lines about `size` characters long, built to make a parser slow or raise; the flag says whether they are
# valid. Blanks before the brace and `,le="` needles took time quadratic in the size; a long timestamp raised.
PATHOLOGICAL_LINES = {
    "blanks before the closing brace": (lambda size: ['evil{a="b"' + " " * size + "x} 1"], False),
    "blanks after a comma": (lambda size: ['evil{a="b",' + " " * size + "x} 1"], False),
    "blanks in a valid label set": (lambda size: ['spaced{a="b"' + " " * size + "} 1"], True),
    "a label set never closed": (lambda size: ["evil{" + ",".join(['a="b"'] * (size // 6)) + " 1"], False),
    "commas": (lambda size: ['evil{a="b"' + "," * size + "} 1"], False),
    "pairs then junk": (lambda size: ["evil{" + ", ".join(f'a{i} = "b"' for i in range(size // 10)) + " x} 1"], False),
    "escapes": (lambda size: ['escaped{a="' + "\\n" * (size // 2) + '"} 1'], True),
    "escapes in an unclosed value": (lambda size: ['evil{a="' + "\\n" * (size // 2) + "} 1"], False),
    'values ending in ,le=" before the bucket bound': (
        lambda size: [
            "# TYPE lat histogram",
            "lat_bucket{" + ",".join(f'a{i}="x,le="' for i in range(size // 12)) + ',le="1"} 1',
        ],
        True,
    ),
    'quotes and ,le=" needles': (
        lambda size: ["# TYPE lat histogram", 'lat_bucket{x="' + ',le=""' * (size // 6) + "} 1"],
        False,
    ),
    "distinct label layouts": (lambda size: [f'layouts{{k{i}="v"}} {i}' for i in range(size // 20)], True),
    "escapes in a # HELP": (lambda size: ["# HELP helped " + "\\n" * (size // 2), "helped 1"], True),
    "a long name": (lambda size: ["9" + "e" * size + " 1"], False),
    "a long value": (lambda size: ["evil " + "1" * size + "x"], False),
    "a long timestamp": (lambda size: ["evil 1 " + "1" * size], False),
}


@pytest.mark.parametrize("make_lines, _", PATHOLOGICAL_LINES.values(), ids=PATHOLOGICAL_LINES.keys())
def test_a_pathological_line_costs_time_linear_in_its_length(make_lines, _):
    small, large = (parse_seconds("\n".join(make_lines(size)) + "\n") for size in (16_000, 128_000))
    # 8x the input: linear is 8x the time; allow 20x. The floor covers what is not the parser's: a run of
    # a few milliseconds is noise, and a larger run may need fresh memory from the system.
    assert large <= 20 * max(small, 0.005)
    assert large < 1.0


@pytest.mark.parametrize("make_lines, valid", PATHOLOGICAL_LINES.values(), ids=PATHOLOGICAL_LINES.keys())
def test_a_pathological_line_is_reported_and_the_lines_around_it_kept(make_lines, valid):
    lines = ["good_before 1", *make_lines(128_000), "good_after 2"]
    exposition = parse("\n".join(lines) + "\n")
    assert {"good_before", "good_after"} <= {f.name for f in exposition.families}
    if valid:
        assert exposition.errors == []
        assert exposition.sample_count == independent_sample_count("\n".join(lines))
    else:
        assert [e.line_no for e in exposition.errors] == [len(lines) - 1]
        assert exposition.sample_count == 2
        assert len(str(exposition.errors[0])) < 1_000  # a megabyte line makes no megabyte log line


def test_a_timestamp_longer_than_any_64_bit_integer_is_reported_not_raised():
    """Python's int() refuses more than 4,300 digits with a ValueError, which escaped `parse`."""
    exposition = parse(f"a 1 {'1' * 5_000}\nb 2 -{'9' * 21}\nc 3 {'0' * 5_000}17\n")
    assert [(e.line_no, e.message) for e in exposition.errors] == [
        (1, "timestamp out of range (1970 to 9999)"),
        (2, "timestamp out of range (1970 to 9999)"),
    ]
    assert [(s.name, s.timestamp_ms) for f in exposition.families for s in f.samples] == [("c", 17)]


def test_only_timestamps_every_store_can_hold_are_taken():
    """Python's datetime and Arrow's millisecond timestamps hold 1970-01-01 to 9999-12-31: a sample stamped
    outside once crashed the whole cycle where it was stored."""
    last = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
    lines = ["a 1 0", "b 2 -0", f"c 3 {last}", f"d 4 {last + 1}", "e 5 -1", "f 6 99999999999999999999"]
    exposition = parse("\n".join(lines) + "\n")
    assert [(s.name, s.timestamp_ms) for f in exposition.families for s in f.samples] == [
        ("a", 0),
        ("b", 0),
        ("c", last),
    ]
    assert [(e.line_no, e.message) for e in exposition.errors] == [
        (line_no, "timestamp out of range (1970 to 9999)") for line_no in (4, 5, 6)
    ]


def numbered_samples(count: int) -> str:
    return "".join(f'm{{i="{i}",zone="z\\"{i % 7}"}} {i}\n' for i in range(count))


def test_a_deadline_already_past_stops_before_the_first_line():
    exposition = parse(numbered_samples(10), deadline=time.monotonic() - 1)
    assert (exposition.families, exposition.sample_count) == ([], 0)
    (error,) = exposition.errors
    assert error.line_no == 1
    assert error.message.startswith("parse stopped at line 1 of 10: the time bound passed")
    assert "not converted" in error.message


def test_a_deadline_keeps_what_was_parsed_and_says_where_it_stopped(monkeypatch):
    """The clock is read once per 1,024 lines: here it passes the deadline at the third reading."""
    readings = itertools.count()
    monkeypatch.setattr(prometheus.time, "monotonic", lambda: next(readings))
    exposition = parse(numbered_samples(5_000), deadline=1.5)
    assert exposition.sample_count == 2 * 1024
    assert [s.value for s in exposition.families[0].samples] == list(range(2 * 1024))
    assert [(e.line_no, e.message.split(":")[0]) for e in exposition.errors] == [
        (2 * 1024 + 1, "parse stopped at line 2049 of 5000")
    ]


def test_a_large_answer_stops_soon_after_its_deadline():
    text = numbered_samples(300_000)  # seconds of parsing: these labels take the general path
    started = time.monotonic()
    exposition = parse(text, deadline=started + 0.05)
    assert time.monotonic() - started < 1.0
    (error,) = exposition.errors
    assert "time bound" in error.message
    assert error.line_no < 300_000 and error.line_no % 1024 == 1
    assert exposition.sample_count == error.line_no - 1


def test_a_deadline_not_reached_changes_nothing():
    text = FIXTURES[0].text()
    assert parse(text, deadline=time.monotonic() + 60) == parse(text)


def test_blanks_after_a_bound_label_written_first_are_allowed():
    """Found by the long fuzz run: cutting `le="1"` out of `le="1" ,a="b"` left ` ,a="b"`, a malformed label set."""
    text = """# TYPE lat histogram
lat_bucket{le="1" ,a="b"} 1
lat_bucket{le="+Inf"\t, a="b"} 2
lat_bucket{le="+Inf" } 2
# TYPE rpc summary
rpc{quantile="0.5" ,a="b"} 1
"""
    exposition = parse(text)
    assert exposition.errors == []
    assert [(s.bound, tuple(s.labels)) for f in exposition.families for s in f.samples] == [
        ("1", (("a", "b"),)),
        ("+Inf", (("a", "b"),)),
        ("+Inf", ()),
        ("0.5", (("a", "b"),)),
    ]


@pytest.mark.parametrize("fixture", FIXTURES[:6], ids=lambda fixture: fixture.path.name)
def test_a_real_scrape_parsed_in_pieces_gives_what_it_gives_whole(fixture):
    """Ray's histograms are kept whole, its gauges cut with their # HELP and # TYPE lines repeated."""
    text = fixture.text()

    def samples(expositions):
        found = [
            (family.name, family.type, family.help, sample.name, sample.labels, sample.bound, sample.value)
            + (sample.line_no,)
            for exposition in expositions
            for family in exposition.families
            for sample in family.samples
        ]
        return sorted(found, key=lambda sample: sample[-1])

    cut = list(prometheus.pieces(text, 2_000))
    assert len(cut) > 5
    assert samples(parse(piece, first_line_no=first) for first, piece in cut) == samples([parse(text)])
