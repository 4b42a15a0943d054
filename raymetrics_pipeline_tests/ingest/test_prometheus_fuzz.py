"""Fuzzing the Prometheus parser with valid expositions and mutations of them.

A mutation (a garbage line, a duplicated, swapped, edited or cut line) may cost the lines it
touches and the families whose names it writes, never anything else: every other valid line
must still come out as the same sample. Whatever the text, ``parse`` must not raise or take
more than linear time, and what it gives must convert and encode as JSON a collector takes.
"""

from __future__ import annotations

import json
import math
import operator
import time
from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raymetrics_pipeline.ingest.otlp import ResourceMetrics, to_metrics
from raymetrics_pipeline.ingest.prometheus import NO_LABELS, parse, pieces
from raymetrics_pipeline.parseable.encode import DEFAULT_MAX_REQUEST_BYTES, JSON, encode

SCRAPE_TIME_UNIX_NANO = 1_700_000_000_000_000_000
LONG_RUN = 20_000  # repetitions of a token: once enough to take seconds where parsing was quadratic


@dataclass(frozen=True)
class Expected:
    """What one valid sample line must come out as."""

    family: str
    family_type: str
    name: str
    labels: tuple[tuple[str, str], ...]
    bound: str | None
    value: float
    timestamp_ms: int | None


@dataclass(frozen=True)
class Line:
    """One line of the exposition being written: ``family`` is the family whose meaning it is part of
    (its samples, # HELP and # TYPE), ``expected`` the sample it must give; ``touched`` once mutated."""

    text: str
    family: str | None = None
    expected: Expected | None = None
    touched: bool = False


@dataclass(frozen=True)
class Case:
    """An exposition as the lines written, with the names of the families in it."""

    lines: list[Line]
    families: list[str]
    ends_with_newline: bool
    cut_families: frozenset[str] = frozenset()  # families that lost lines to a truncation

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines) + ("\n" if self.ends_with_newline else "")


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


TRICKY_PIECES = ["", ",", " ", "\t", "\\", '"', "\n", "\r", "{", "}", "=", ',le="', 'le="1"', ',quantile="', "\\n", "é"]
LABEL_NAMES = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True)
LABEL_VALUES = st.one_of(st.text(max_size=12), st.lists(st.sampled_from(TRICKY_PIECES), max_size=5).map("".join))
BLANKS = st.text(alphabet=" \t", max_size=3)
SEPARATORS = st.text(alphabet=" \t", min_size=1, max_size=3)
LINE_ENDS = st.sampled_from(["", "", "\r", " ", "\t"])
# The times every store can hold (1970 to 9999), which the parser takes; it reports the others (test_prometheus).
TIMESTAMPS = st.one_of(st.none(), st.integers(0, 253_402_300_799_999))
COMMENTS = st.one_of(
    st.sampled_from(["#", "# TYPE", "# HELP", "# HELP x", "#TYPE x counter", "", " ", "\t", "\r", " \r"]),
    st.text(alphabet='abc xyz0123!"{}\\,=\t#', max_size=20).map("# ".__add__),
)


@st.composite
def number_texts(draw) -> tuple[str, float]:
    """A sample value as an exposition writes it, and the number it stands for."""
    value = draw(st.floats())
    if math.isnan(value):
        return draw(st.sampled_from(["NaN", "nan"])), value
    if math.isinf(value):
        return draw(st.sampled_from(["+Inf", "Inf", "inf"] if value > 0 else ["-Inf", "-inf"])), value
    if value == int(value) and abs(value) < 1e15 and draw(st.booleans()):
        return str(int(value)), value
    return repr(value), value


@st.composite
def label_pairs(draw, excluded: str | None) -> list[tuple[str, str]]:
    names = LABEL_NAMES.filter(lambda name: name != excluded)
    return draw(st.lists(st.tuples(names, LABEL_VALUES), max_size=4, unique_by=lambda pair: pair[0]))


@st.composite
def label_set_texts(draw, pairs: list[tuple[str, str]]) -> str:
    """``{...}`` for ``pairs``, sometimes with blanks and a trailing comma; nothing at all for no pairs at times."""
    if not pairs and draw(st.booleans()):
        return ""
    spaced = draw(st.booleans())

    def blank() -> str:
        return draw(BLANKS) if spaced else ""

    items = [f'{blank()}{key}{blank()}={blank()}"{escape_label_value(value)}"{blank()}' for key, value in pairs]
    trailing = "," if items and draw(st.booleans()) else ""
    return f"{draw(BLANKS) if spaced else ''}{{{','.join(items)}{trailing}{blank()}}}"


@st.composite
def sample_lines(draw, family: str, family_type: str, name: str, pairs, bound=None, value=None) -> Line:
    """One sample line; ``bound`` is the ``(label name, text)`` the parser takes out of the labels."""
    written = list(pairs)
    if bound is not None:
        written.insert(draw(st.integers(0, len(written))), bound)
    value_text, number = value if value is not None else draw(number_texts())
    timestamp = draw(TIMESTAMPS)
    labels = draw(label_set_texts(written))
    separator = draw(SEPARATORS)
    timestamp_text = "" if timestamp is None else draw(SEPARATORS) + str(timestamp)
    text = f"{draw(BLANKS)}{name}{labels}{separator}{value_text}{timestamp_text}{draw(LINE_ENDS)}"
    expected = Expected(family, family_type, name, tuple(pairs), bound and bound[1], number, timestamp)
    return Line(text, family, expected)


COUNTS = st.integers(0, 10**6).map(lambda count: (str(count), float(count)))


@st.composite
def family_lines(draw, index: int) -> tuple[str, list[Line]]:
    """One family's # HELP, # TYPE and samples. Names end in ``_f<index>``, so no family's name is another's
    with a suffix (``_total``, ``_bucket``, ...), and only a line that writes a family's name can change it."""
    family = draw(st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,8}", fullmatch=True)) + f"_f{index}"
    declared = draw(st.sampled_from(["counter", "gauge", "histogram", "summary", "untyped", None]))
    family_type = declared or "untyped"
    header = []
    if draw(st.booleans()):
        help_text = escape_help(draw(st.text(max_size=20)))
        header.append(Line(f"# HELP {family} {help_text}", family))
    if declared:
        header.append(Line(f"#{draw(SEPARATORS)}TYPE {family}{draw(SEPARATORS)}{declared}{draw(LINE_ENDS)}", family))
    lines = draw(st.permutations(header))
    bound_name = {"histogram": "le", "summary": "quantile"}.get(family_type)
    for pairs in draw(st.lists(label_pairs(bound_name), max_size=3, unique_by=tuple)):
        if family_type == "histogram":
            bounds = sorted(set(draw(st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=4))))
            counts = sorted(draw(st.lists(st.integers(0, 10**6), min_size=len(bounds) + 1, max_size=len(bounds) + 1)))
            for bound, count in zip([*map(repr, bounds), "+Inf"], counts, strict=True):
                line = sample_lines(family, family_type, family + "_bucket", pairs, ("le", bound), (str(count), count))
                lines.append(draw(line))
            lines.append(draw(sample_lines(family, family_type, family + "_sum", pairs)))
            lines.append(
                draw(sample_lines(family, family_type, family + "_count", pairs, value=(str(counts[-1]), counts[-1])))
            )
        elif family_type == "summary":
            for quantile in sorted(set(draw(st.lists(st.floats(0, 1), max_size=3)))):
                lines.append(draw(sample_lines(family, family_type, family, pairs, ("quantile", repr(quantile)))))
            lines.append(draw(sample_lines(family, family_type, family + "_sum", pairs)))
            lines.append(draw(sample_lines(family, family_type, family + "_count", pairs, value=draw(COUNTS))))
        else:
            name = family + draw(st.sampled_from(["", "_total"])) if family_type == "counter" else family
            lines.append(draw(sample_lines(family, family_type, name, pairs)))
    return family, lines


@st.composite
def valid_expositions(draw) -> Case:
    lines, families = [], []
    for index in range(draw(st.integers(0, 5))):
        family, written = draw(family_lines(index))
        families.append(family)
        for line in written:
            lines.extend(Line(comment) for comment in draw(st.lists(COMMENTS, max_size=1)))
            lines.append(line)
    return Case(lines, families, ends_with_newline=True)


GARBAGE_TOKENS = [
    "{", "}", '"', "\\", ",", "=", " ", "\t", "\r", "\n", 'le="', 'quantile="', "#", "# TYPE ", "# HELP ",
    "NaN", "+Inf", "1", "-", "e", "x", "m", "\\n", '\\"', "\x00", "\ufffd", "_f0", "_bucket",
]  # fmt: skip
RUN_TOKENS = [" ", "\t", "1", '"', "\\", ",", "=", "{", 'le="', ',le=""', "\\n", 'a="b",']
RUNS = st.builds(operator.mul, st.sampled_from(RUN_TOKENS), st.one_of(st.integers(1, 64), st.just(LONG_RUN)))
GARBAGE = st.one_of(
    st.lists(st.sampled_from(GARBAGE_TOKENS), max_size=30).map("".join),
    st.binary(max_size=40).map(lambda data: data.decode("utf-8", "replace")),  # as the scraper decodes a body
    st.text(max_size=40),
    RUNS,
    st.tuples(
        st.sampled_from(['m{a="b"', 'm{a="b",', "m{", 'm{a="', 'm{a="\\n', "m 1 ", "# HELP m "]),
        RUNS,
        st.sampled_from(["x} 1", "} 1", " 1", ""]),
    ).map("".join),
)


@st.composite
def mutated(draw, case: Case) -> Case:
    """``case`` with a few mutations; every line they write or move is marked touched."""
    lines = list(case.lines)
    ends_with_newline, cut_families = case.ends_with_newline, set(case.cut_families)
    for mutation in draw(st.lists(st.sampled_from(["insert", "duplicate", "swap", "edit", "truncate"]), max_size=4)):
        if mutation == "insert":
            lines.insert(draw(st.integers(0, len(lines))), Line(draw(GARBAGE), touched=True))
        elif not lines:
            continue
        elif mutation == "duplicate":
            copied = lines[draw(st.integers(0, len(lines) - 1))]
            lines.insert(draw(st.integers(0, len(lines))), Line(copied.text, touched=True))
        elif mutation == "swap":
            first, second = (draw(st.integers(0, len(lines) - 1)) for _ in range(2))
            lines[first], lines[second] = replace(lines[second], touched=True), replace(lines[first], touched=True)
        elif mutation == "edit":
            index = draw(st.integers(0, len(lines) - 1))
            text = lines[index].text
            start = draw(st.integers(0, len(text)))
            end = draw(st.integers(start, min(len(text), start + 3)))
            lines[index] = replace(lines[index], text=text[:start] + draw(GARBAGE) + text[end:], touched=True)
        else:
            index = draw(st.integers(0, len(lines) - 1))
            cut = draw(st.integers(0, len(lines[index].text)))
            cut_families.update(line.family for line in lines[index + 1 :] if line.family)
            lines[index:] = [replace(lines[index], text=lines[index].text[:cut], touched=True)]
            ends_with_newline = False
    return Case(lines, case.families, ends_with_newline, frozenset(cut_families))


def families_a_mutation_reaches(case: Case) -> set[str]:
    """Families that lost or had mutated a line of their own, or whose name a mutated line writes."""
    reached = set(case.cut_families)
    for line in case.lines:
        if line.touched:
            reached.update(family for family in case.families if family == line.family or family in line.text)
    return reached


def parse_in_linear_time(text: str):
    """``parse(text)``, asserting it took time linear in the text (the better of two runs if the first was slow:
    the machine is shared)."""
    bound = 0.2 + 2e-6 * len(text)
    started = time.perf_counter()
    exposition = parse(text)
    elapsed = time.perf_counter() - started
    if elapsed > bound:
        started = time.perf_counter()
        parse(text)
        elapsed = min(elapsed, time.perf_counter() - started)
    assert elapsed <= bound, f"{elapsed:.3f} s for {len(text)} characters"
    return exposition


def comparable(expected: Expected) -> Expected:
    return replace(expected, value="NaN") if math.isnan(expected.value) else expected


def refuse_constant(name: str):
    raise AssertionError(f"{name} in the JSON")


def check(case: Case) -> None:
    exposition = parse_in_linear_time(case.text)
    assert exposition.sample_count == sum(len(family.samples) for family in exposition.families)
    got = {
        sample.line_no: Expected(
            family.name, family.type, sample.name, tuple(sample.labels), sample.bound, sample.value, sample.timestamp_ms
        )
        for family in exposition.families
        for sample in family.samples
    }
    if not any(line.touched for line in case.lines):
        assert exposition.errors == []
    reached = families_a_mutation_reaches(case)
    line_no = 1
    for line in case.lines:
        if line.expected is not None and not line.touched and line.family not in reached:
            assert line_no in got, f"line {line_no} {line.text!r} lost: {exposition.errors}"
            assert comparable(got[line_no]) == comparable(line.expected), line.text
        line_no += line.text.count("\n") + 1

    conversion = to_metrics(exposition, SCRAPE_TIME_UNIX_NANO)
    for body in encode([ResourceMetrics(NO_LABELS, conversion.metrics)], JSON, DEFAULT_MAX_REQUEST_BYTES):
        json.loads(body, parse_constant=refuse_constant)


MUTATED_EXPOSITIONS = valid_expositions().flatmap(mutated)
FUZZING = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
}


@settings(max_examples=500, derandomize=True, **FUZZING)
@given(MUTATED_EXPOSITIONS)
def test_a_mutation_costs_only_the_lines_it_reaches(case):
    check(case)


@pytest.mark.long
@pytest.mark.timeout(3_600)  # minutes where the suite's default is 300 s
@settings(max_examples=10_000, **FUZZING)
@given(MUTATED_EXPOSITIONS)
def test_a_mutation_costs_only_the_lines_it_reaches_long(case):
    check(case)


def samples_by_family(expositions) -> list[tuple]:
    """Every sample with its family's name, type and help, by line."""
    samples = [
        (family.name, family.type, family.help, sample.name, tuple(sample.labels), sample.bound, repr(sample.value))
        + (sample.timestamp_ms, sample.line_no)
        for exposition in expositions
        for family in exposition.families
        for sample in family.samples
    ]
    return sorted(samples, key=lambda sample: sample[-1])


@settings(max_examples=300, derandomize=True, **FUZZING)
@given(valid_expositions(), st.integers(1, 400))
def test_an_answer_parsed_in_pieces_gives_what_it_gives_whole(case, max_chars):
    """Large answers are converted a piece at a time (ingest/cycle.py): the pieces must mean what the whole does."""
    whole = parse(case.text)
    parts = [parse(piece, first_line_no=first) for first, piece in pieces(case.text, max_chars)]
    assert [error for part in parts for error in part.errors] == whole.errors == []
    assert samples_by_family(parts) == samples_by_family([whole])
    assert "".join(piece for _, piece in pieces(case.text, len(case.text) + 1)) == case.text


@settings(max_examples=200, derandomize=True, **FUZZING)
@given(MUTATED_EXPOSITIONS, st.integers(1, 2_000))
def test_any_answer_can_be_cut_into_pieces_that_parse(case, max_chars):
    """Whatever the answer, cutting it is linear and every piece parses (what it means is checked on valid ones)."""
    started = time.perf_counter()
    cut = list(pieces(case.text, max_chars))
    assert time.perf_counter() - started < 0.2 + 2e-5 * len(case.text)
    assert sum(len(piece) for _, piece in cut) >= len(case.text)
    for first, piece in cut:
        parse(piece, first_line_no=first)
