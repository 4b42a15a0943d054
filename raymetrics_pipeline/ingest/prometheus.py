"""Parser for the Prometheus text exposition format 0.0.4.

Written here rather than taken from ``prometheus_client`` because that parser is slow on
Ray's scrapes (about 15k samples/s) and rewrites counter names (it strips and re-adds
``_total``), while users' SQL depends on names exactly as Ray exposes them. A malformed
line is reported with its line number and skipped, so one bad line never costs the rest
of the scrape. Every step is linear in the line it reads, whatever the line holds, and
``parse`` can be given a deadline, so no answer can hold up a cycle.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from raymetrics_pipeline.common.remembered import remember

METRIC_TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})

# Which sample names a declared family owns: Prometheus puts suffixes on histogram and
# summary series, and counters are written with or without `_total`.
_OWNED_SUFFIXES = {
    "counter": ("", "_total"),
    "gauge": ("",),
    "untyped": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}
# The label that tells a series' samples apart, by the sample name that carries it.
_BOUND_LABEL_SUFFIXES = {"histogram": ("_bucket", "le"), "summary": ("", "quantile")}

_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_PLAIN_KEY_PIECE_RE = re.compile(r",[a-zA-Z_][a-zA-Z0-9_]*=")
# Label sets with blanks or escapes are read one ``name="value"`` pair (and the blanks around it) at a
# time. One pattern for the whole set had two runs of blanks in a row (after the last pair and at the
# end), and on a line that did not match, the engine tried every split of a long run between them:
# 64k blanks took 7 to 11 s. (Possessive quantifiers would avoid that, but match wrongly before 3.11.5.)
_PAIR_RE = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\.)*)"[ \t]*')
_BLANKS_RE = re.compile(r"[ \t]*")
_ESCAPE_RE = re.compile(r"\\(.)")
_LABEL_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_HELP_ESCAPES = {"\\": "\\", "n": "\n"}
_TIMESTAMP_RE = re.compile(r"-?[0-9]+")
# The latest sample time every store can hold, in ms: 9999-12-31 (Python's datetime, Arrow's ms timestamps).
# A line stamped before 1970 or after it is reported here (such a sample once crashed the whole cycle), and
# a timestamp with more digits than this one is not handed to int(), which is quadratic in the digits and
# raises past 4,300 of them.
_LAST_TIMESTAMP_MS = 253_402_300_799_999
_MAX_TIMESTAMP_DIGITS = len(str(_LAST_TIMESTAMP_MS))
# How often ``parse`` looks at the clock: rarely enough to cost nothing per line.
_LINES_PER_DEADLINE_CHECK = 1024


class LabelSet:
    """A series' label names and values, in exposition order; iterates as ``(name, value)`` pairs.

    Names and values are kept as two tuples because every series of a family shares one
    names tuple: converting and encoding then work per layout, not per label. The hash is
    computed once: label sets are kept from one parse to the next and counted in sets.
    """

    __slots__ = ("keys", "values", "_hash")

    def __init__(self, keys: tuple[str, ...], values: tuple[str, ...]) -> None:
        self.keys = keys
        self.values = values
        self._hash = hash((keys, values))

    def __iter__(self):
        return zip(self.keys, self.values, strict=True)

    def __len__(self) -> int:
        return len(self.keys)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelSet) and self.keys == other.keys and self.values == other.values

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"LabelSet({tuple(self)!r})"


NO_LABELS = LabelSet((), ())


class Sample(NamedTuple):
    """One sample line; a tuple, because a scrape makes tens of thousands and a tuple is the cheapest to make."""

    name: str
    labels: LabelSet
    value: float
    timestamp_ms: int | None
    line_no: int
    # A histogram bucket's ``le`` or a summary's ``quantile``, kept out of ``labels`` so that
    # every sample of one series shares one ``LabelSet``; None if the line lacked it.
    bound: str | None = None


@dataclass(slots=True)
class MetricFamily:
    name: str
    type: str = "untyped"
    help: str = ""
    samples: list[Sample] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ParseError:
    line_no: int
    message: str
    line: str

    def __str__(self) -> str:
        return f"line {self.line_no}: {self.message}: {self.line!r}"


@dataclass(slots=True)
class Exposition:
    families: list[MetricFamily]
    errors: list[ParseError]
    sample_count: int
    complete: bool = True  # False: the deadline passed first (an error says where it stopped)


class _LineError(ValueError):
    pass


def _quoted(text: str) -> str:
    """``text`` as a message shows it, cut short: a bad line can be megabytes long."""
    return repr(text) if len(text) <= 80 else repr(text[:80]) + "..."


def _unescape(text: str, escapes: dict[str, str], strict: bool) -> str:
    def replace(match: re.Match[str]) -> str:
        char = match.group(1)
        if char in escapes:
            return escapes[char]
        if strict:
            raise _LineError(f"invalid escape sequence '\\{char}' in label value")
        return match.group(0)

    return _ESCAPE_RE.sub(replace, text)


# ``,name=`` pieces of a plain label set → its label names, or None when the pieces are not
# plain names. A family's series share one layout, so this is a dict lookup for most lines.
_key_layouts: dict[tuple[str, ...], tuple[str, ...] | None] = {}
_UNSEEN = object()


def _learn_layout(pieces: tuple[str, ...]) -> tuple[str, ...] | None:
    keys = tuple(piece[1:-1] for piece in pieces)
    plain = len(set(keys)) == len(keys) and all(_PLAIN_KEY_PIECE_RE.fullmatch(piece) for piece in pieces)
    # Not plain: None, and duplicates are reported by the general path.
    return remember(_key_layouts, pieces, keys if plain else None, _MAX_REMEMBERED_TEXTS)


def parse_labels(text: str) -> LabelSet:
    """The pairs inside ``{...}``, unescaped, in exposition order."""
    if "\\" not in text:
        # Without escapes, quotes only delimit values: splitting on them gives the pieces
        # ``,name=`` and the values in turn, at C speed.
        pieces = ("," + text).split('"')
        if len(pieces) % 2 == 1 and pieces[-1] in ("", ","):
            layout = tuple(pieces[0:-1:2])
            keys = _key_layouts.get(layout, _UNSEEN)
            if keys is _UNSEEN:
                keys = _learn_layout(layout)
            if keys is not None:
                return LabelSet(keys, tuple(pieces[1::2]))
    pairs = []
    position = 0
    while match := _PAIR_RE.match(text, position):
        pairs.append(match.groups())
        position = match.end()
        if not text.startswith(",", position):
            break
        position += 1  # a comma may end the set
    if not _BLANKS_RE.fullmatch(text, position):
        raise _LineError("malformed label set")
    keys = tuple(key for key, _ in pairs)
    if len(set(keys)) != len(keys):
        raise _LineError("duplicate label name")
    return LabelSet(keys, tuple(_unescape(v, _LABEL_ESCAPES, strict=True) if "\\" in v else v for _, v in pairs))


# Label sets by the text they were read from, kept from one parse to the next: a run scrapes the same endpoints
# every 15 s and their series hardly change, so from a run's second cycle on, label sets are looked up, not read.
# Past this many texts (about 1 kB each with their label sets: a dozen Ray nodes' series) a cache starts over,
# which bounds its memory and costs only its speed.
_MAX_REMEMBERED_TEXTS = 10_000
_labels_by_text: dict[str, LabelSet] = {}
# A value's text, as it follows a label set (blanks included) → the value: most are a few small counts.
_values_by_text: dict[str, float] = {}
# A histogram bucket's (or summary quantile's) label text → its series' labels and its bound, by bound label.
_cuts_by_text: dict[str, dict[str, tuple[LabelSet, str | None]]] = {"le": {}, "quantile": {}}


def _labels(text: str) -> LabelSet:
    """``parse_labels(text)``, remembered."""
    labels = _labels_by_text.get(text)
    if labels is None:
        labels = parse_labels(text)
        remember(_labels_by_text, text, labels, _MAX_REMEMBERED_TEXTS)
    return labels


def _plain_bound_span(text: str, name: str) -> tuple[int, int] | None:
    """Where the value of ``name="value"`` starts and ends in ``text``, when written plainly.

    Without escapes, quotes alternate between opening and closing a value, so an even
    count of them before a match puts it at a label name, not inside a value.
    """
    needle = name + '="'
    at = text.find(needle)
    # The quotes are counted once, up to each candidate in turn: counting from the start for
    # every candidate was quadratic in a value holding many ``,le="``.
    quotes, counted_to = 0, 0
    while at >= 0:
        if at == 0 or text[at - 1] == ",":
            quotes += text.count('"', counted_to, at)
            counted_to = at
            if quotes % 2 == 0:
                break
        at = text.find(needle, at + 1)
    if at < 0:
        return None
    start = at + len(needle)
    end = text.find('"', start)
    return None if end < 0 else (start, end)


def _labels_and_bound(text: str, bound_name: str) -> tuple[LabelSet, str | None, tuple[int, int] | None]:
    """The series' labels, the bound label's value, and where that value sits in ``text`` if written plainly."""
    span = None if "\\" in text else _plain_bound_span(text, bound_name)
    if span is not None:
        start, end = span
        if start == len(bound_name) + 2:  # the comma after the pair goes with it, and so do blanks before it
            series_text = text[end + 1 :].lstrip(" \t").removeprefix(",")
        else:
            series_text = text[: start - len(bound_name) - 3] + text[end + 1 :]
        labels = _labels(series_text)
        if bound_name in labels.keys:
            raise _LineError("duplicate label name")
        return labels, text[start:end], span
    labels = parse_labels(text)
    if bound_name not in labels.keys:
        return labels, None, None
    index = labels.keys.index(bound_name)
    keys, values = labels.keys, labels.values
    return LabelSet(keys[:index] + keys[index + 1 :], values[:index] + values[index + 1 :]), values[index], None


class _Reader:
    """What one ``parse`` call has learnt so far: its families, and where each sample name's samples go."""

    def __init__(self) -> None:
        self.families: dict[str, MetricFamily] = {}
        # Sample name → the samples of the family that owns it, and the label that tells that family's samples
        # of one series apart (a histogram's ``le``, a summary's ``quantile``), if any.
        self.routes: dict[str, tuple[list[Sample], str | None]] = {}

    def family(self, name: str) -> MetricFamily:
        found = self.families.get(name)
        if found is None:
            found = self.families[name] = MetricFamily(name)
        return found

    def add(self, sample: Sample) -> None:
        route = self.routes.get(sample.name)
        if route is None:  # a sample name no # TYPE line declared: a family of its own
            route = self.routes[sample.name] = (self.family(sample.name).samples, None)
        route[0].append(sample)

    def read_line(self, line: str, line_no: int) -> Sample | None:
        """Any line, in full generality: None for a blank or comment line; raises ``_LineError``."""
        if not line or line.isspace():
            return None
        if line[0] in " \t":
            line = line.lstrip(" \t")
        if line[0] == "#":
            self.read_comment(line)
            return None
        brace = line.find("{")
        bound = None
        if brace < 0:
            name, *value_parts = line.split()
            labels = NO_LABELS
        else:
            close = line.rfind("}")
            if close < brace:
                raise _LineError("unclosed label set")
            name = line[:brace].rstrip(" \t")
            label_text = line[brace + 1 : close]
            route = self.routes.get(name)
            if route is not None and route[1] is not None:
                labels, bound, _ = _labels_and_bound(label_text, route[1])
            else:
                labels = _labels(label_text)
            value_parts = line[close + 1 :].split()
        if name not in self.routes and not _NAME_RE.fullmatch(name):
            raise _LineError(f"invalid metric name {_quoted(name)}")
        if len(value_parts) == 1:
            timestamp_ms = None
        elif len(value_parts) == 2 and _TIMESTAMP_RE.fullmatch(value_parts[1]):
            timestamp_ms = _timestamp_ms(value_parts[1])
        else:
            raise _LineError("expected a value and an optional integer timestamp in milliseconds")
        try:
            value = float(value_parts[0])
        except ValueError:
            value = None
        if value is None or "_" in value_parts[0]:  # Go's ParseFloat takes no "1_000"
            raise _LineError(f"invalid value {_quoted(value_parts[0])}")
        return Sample(name, labels, value, timestamp_ms, line_no, bound)

    def read_comment(self, line: str) -> None:
        """A line starting with ``#``."""
        comment = _comments_by_line.get(line)
        if comment is None:
            comment = _read_comment(line)
            remember(_comments_by_line, line, comment, _MAX_REMEMBERED_TEXTS)
        if comment is _ORDINARY_COMMENT:
            return
        keyword, name, text, owned, problem = comment
        target = self.families.get(name)
        if target is None:
            target = self.families[name] = MetricFamily(name)
        if problem:
            raise _LineError(problem)
        if keyword == "HELP":
            target.help = text
            return
        if target.samples:
            raise _LineError(f"# TYPE for {_quoted(name)} after its samples")
        target.type = text
        for sample_name, bound_name in owned:
            route = self.routes.setdefault(sample_name, (target.samples, None))  # another family's stays its
            if bound_name is not None and route[0] is target.samples:
                self.routes[sample_name] = (target.samples, bound_name)


_ORDINARY_COMMENT = ()
# Comment lines as read, kept from one parse to the next like label texts: a target's # HELP and # TYPE lines are
# the same in every scrape.
_comments_by_line: dict[str, tuple] = {}


def forget_remembered() -> None:
    """Empty what parsing keeps from one call to the next, as a new process finds it (to measure a run's first
    cycle, or to test that what is remembered changes nothing)."""
    for cache in (_key_layouts, _labels_by_text, _values_by_text, *_cuts_by_text.values(), _comments_by_line):
        cache.clear()


def _read_comment(line: str) -> tuple:
    """A ``# HELP`` line as ("HELP", family name, help text, (), None), a ``# TYPE`` line as ("TYPE", family name,
    type, the sample names the family owns with their bound label or None, what is wrong with the type or None),
    any other comment as ``_ORDINARY_COMMENT``."""
    parts = line.split(None, 3)
    if len(parts) < 3 or parts[1] not in ("HELP", "TYPE"):
        return _ORDINARY_COMMENT
    keyword, name = parts[1], parts[2]
    if not _NAME_RE.fullmatch(name):
        raise _LineError(f"invalid metric name {_quoted(name)} in # {keyword}")
    rest = parts[3].rstrip("\r") if len(parts) > 3 else ""
    if keyword == "HELP":
        return keyword, name, _unescape(rest, _HELP_ESCAPES, strict=False) if "\\" in rest else rest, (), None
    metric_type = rest.strip()
    if metric_type not in METRIC_TYPES:
        problem = f"unknown metric type {_quoted(metric_type)} (expected one of {sorted(METRIC_TYPES)})"
        return keyword, name, metric_type, (), problem
    bound_suffix, bound_name = _BOUND_LABEL_SUFFIXES.get(metric_type, (None, None))
    owned = tuple(
        (name + suffix, bound_name if suffix == bound_suffix else None) for suffix in _OWNED_SUFFIXES[metric_type]
    )
    return keyword, name, metric_type, owned, None


def parse(text: str, deadline: float | None = None, first_line_no: int = 1) -> Exposition:
    """Parse one scrape body (or one of its ``pieces``, whose first line is ``first_line_no``); never raises
    on bad content.

    Past ``deadline`` (a ``time.monotonic()`` value) parsing stops, keeping the samples read so
    far and reporting where it stopped, so one huge or slow answer cannot cost the cycle.

    Sample lines of known names, written ``name{labels} value`` as exporters write them, are read
    here with a few string operations; any other line (comments, blanks, escapes, timestamps,
    errors, new names) goes to ``_Reader.read_line``, which reads it as it reads every line.
    """
    reader = _Reader()
    routes = reader.routes
    errors: list[ParseError] = []
    # The last histogram bucket (or summary quantile) line cut plainly, as the label text before and after
    # its bound: the next lines of the series differ only in the bound, so they need no cutting.
    cut_bound_name = cut_prefix = cut_suffix = cut_labels = None
    cut_length = 0

    complete = True
    lines = text.split("\n")
    line_count = len(lines) - (lines[-1] == "")
    for first in range(0, line_count, _LINES_PER_DEADLINE_CHECK):
        if deadline is not None and time.monotonic() > deadline:
            errors.append(stopped(first + first_line_no, line_count + first_line_no - 1))
            complete = False
            break
        chunk = lines[first : first + _LINES_PER_DEADLINE_CHECK]
        for line_no, line in enumerate(chunk, start=first + first_line_no):
            try:
                # The first "{" and the last "}", as read_line finds them.
                name, _, rest = line.partition("{")
                route = routes.get(name)
                value = None
                if route is not None:
                    label_text, close, tail = rest.rpartition("}")
                    if close:
                        value = _values_by_text.get(tail)
                        if value is None and "_" not in tail:
                            try:
                                value = float(tail)  # takes what str.split() would leave of the tail, or fails
                            except ValueError:
                                pass
                            else:
                                remember(_values_by_text, tail, value, _MAX_REMEMBERED_TEXTS)
                if value is None:
                    if line[:1] == "#":
                        reader.read_comment(line)
                    elif (sample := reader.read_line(line, line_no)) is not None:
                        reader.add(sample)
                    continue
                samples, bound_name = route
                bound = None
                if bound_name is None:
                    labels = _labels_by_text.get(label_text)
                    if labels is None:
                        labels = _labels(label_text)
                elif cut := _cuts_by_text[bound_name].get(label_text):
                    labels, bound = cut
                else:
                    if (
                        bound_name is cut_bound_name
                        and len(label_text) >= cut_length
                        and label_text.startswith(cut_prefix)
                        and label_text.endswith(cut_suffix)
                        and '"' not in (bound := label_text[len(cut_prefix) : len(label_text) - len(cut_suffix)])
                        and "\\" not in bound
                    ):
                        labels = cut_labels
                    else:
                        labels, bound, span = _labels_and_bound(label_text, bound_name)
                        if span is not None:
                            cut_bound_name, cut_labels = bound_name, labels
                            cut_prefix, cut_suffix = label_text[: span[0]], label_text[span[1] :]
                            cut_length = len(cut_prefix) + len(cut_suffix)
                    remember(_cuts_by_text[bound_name], label_text, (labels, bound), _MAX_REMEMBERED_TEXTS)
                samples.append(_new_tuple(Sample, (name, labels, value, None, line_no, bound)))
            except _LineError as error:
                errors.append(ParseError(line_no, str(error), line.lstrip(" \t")[:300]))

    families = [family for family in reader.families.values() if family.samples]
    return Exposition(families, errors, sum(len(family.samples) for family in families), complete)


_new_tuple = tuple.__new__  # makes a Sample from a tuple without a Python-level __new__


def _timestamp_ms(text: str) -> int:
    """An integer timestamp (``-?[0-9]+``) every store can hold: from 1970 to 9999."""
    digits = text.lstrip("-").lstrip("0") or "0"
    negative = text[0] == "-" and digits != "0"
    if negative or len(digits) > _MAX_TIMESTAMP_DIGITS or int(digits) > _LAST_TIMESTAMP_MS:
        raise _LineError("timestamp out of range (1970 to 9999)")
    return int(digits)


def stopped(line_no: int, line_count: int) -> ParseError:
    """What is reported when the time bound passes at ``line_no``: the rest of the answer is not converted."""
    return ParseError(
        line_no,
        f"parse stopped at line {line_no} of {line_count}: the time bound passed, "
        "and the rest of this target's answer was not converted",
        "",
    )


# Families whose every sample is a series of its own, so a piece may start anywhere among their lines.
_CUTTABLE_TYPES = frozenset({"counter", "gauge", "untyped"})
_COMMENT_LINE_RE = re.compile(r"^[ \t]*#[^\n]*\n?", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class _Comment:
    """A ``# HELP`` or ``# TYPE`` line: where it starts, its keyword, the family it names, the line itself."""

    start: int
    keyword: str
    name: str
    type: str  # what a # TYPE line declares
    line: str


def pieces(text: str, max_chars: int) -> Iterator[tuple[int, str]]:
    """``text`` in pieces of about ``max_chars`` that parse alone as they parse together, each with the line
    number its first line has in ``text``: memory for one piece at a time, however large the answer.

    Pieces end at line ends. A piece that starts inside a family (or just after its ``# HELP``
    or ``# TYPE`` line) starts with that family's ``# HELP`` and ``# TYPE`` lines again,
    numbered just before its first line. A histogram or summary, whose series span lines, is
    never cut: the piece ends before its ``# TYPE`` line, or after the family when it alone is
    larger than ``max_chars``.
    """
    start, first_line_no, header = 0, 1, ""
    helps: dict[str, str] = {}  # each family's latest # HELP line before ``start``
    types: dict[str, _Comment] = {}  # and # TYPE line
    while len(text) - start > max_chars:
        cut = text.rfind("\n", start, start + max_chars) + 1
        if cut <= start:  # one line longer than a piece
            cut = text.find("\n", start) + 1 or len(text)
        seen = list(_comments(text, start, cut))
        known = {**types, **{comment.name: comment for comment in seen if comment.keyword == "TYPE"}}
        family = _family(_sample_name(text, cut, len(text), forward=True)[0], known)
        if family and family == _family(_sample_name(text, start, cut, forward=False)[0], known):
            declared = known.get(family)
            if declared is not None and declared.type not in _CUTTABLE_TYPES:
                if declared.start > start:  # end the piece before the histogram or summary
                    cut = declared.start
                else:  # it alone fills the piece: keep it whole, up to the next family's # TYPE line
                    following = (c.start for c in _comments(text, cut, len(text)) if c.keyword == "TYPE")
                    cut = next(following, len(text))
                seen = list(_comments(text, start, cut))
        for comment in seen:
            if comment.keyword == "HELP":
                helps[comment.name] = comment.line
            else:
                types[comment.name] = comment
        name, name_at = _sample_name(text, cut, len(text), forward=True)
        ahead = {comment.name: comment for comment in _comments(text, cut, name_at) if comment.keyword == "TYPE"}
        family = _family(name, {**types, **ahead})
        declared = None if family in ahead else types.get(family)
        next_header = helps.get(family, "") + (declared.line if declared else "")
        yield first_line_no - header.count("\n"), header + text[start:cut]
        first_line_no += text.count("\n", start, cut)
        start, header = cut, next_header
    if start < len(text):
        yield first_line_no - header.count("\n"), header + text[start:]


def _comments(text: str, start: int, end: int) -> Iterator[_Comment]:
    """The ``# HELP`` and ``# TYPE`` lines starting in ``text[start:end]``, read as the parser reads them."""
    for comment in _COMMENT_LINE_RE.finditer(text, start, end):
        parts = comment.group().lstrip(" \t").split(None, 3)
        if len(parts) >= 3 and parts[0] == "#" and parts[1] in ("HELP", "TYPE"):
            declared = parts[3].strip() if len(parts) > 3 and parts[1] == "TYPE" else ""
            line = comment.group() if comment.group().endswith("\n") else comment.group() + "\n"
            yield _Comment(comment.start(), parts[1], parts[2], declared, line)


def _sample_name(text: str, start: int, end: int, forward: bool) -> tuple[str | None, int]:
    """The metric name of the first (``forward``) or last sample line in ``text[start:end]``, and where that
    line starts; (None, ``end``) if there is none."""
    lines = _lines_from(text, start, end) if forward else _lines_back(text, start, end)
    for line_start, line in lines:
        line = line.lstrip(" \t")
        if line and not line.isspace() and line[0] != "#":
            brace = line.find("{")
            return (line[:brace].rstrip(" \t") if brace >= 0 else line.split()[0]), line_start
    return None, end


def _lines_from(text: str, start: int, end: int) -> Iterator[tuple[int, str]]:
    while start < end:
        line_end = text.find("\n", start, end)
        line_end = end if line_end < 0 else line_end
        yield start, text[start:line_end]
        start = line_end + 1


def _lines_back(text: str, start: int, end: int) -> Iterator[tuple[int, str]]:
    if text[end - 1 : end] == "\n" and end > start:
        end -= 1
    while end > start:
        line_start = text.rfind("\n", start, end) + 1 or start
        yield line_start, text[line_start:end]
        end = line_start - 1


def _family(name: str | None, types: dict[str, _Comment]) -> str | None:
    """The family a sample name belongs to, by the # TYPE lines seen (as the parser assigns it)."""
    if name is None or name in types:
        return name
    for suffix in ("_total", "_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and base in types and suffix in _OWNED_SUFFIXES.get(types[base].type, ()):
            return base
    return name
