"""Parser for the Prometheus text exposition format 0.0.4.

Written here rather than taken from ``prometheus_client`` because that parser is slow on
Ray's scrapes (about 15k samples/s) and rewrites counter names (it strips and re-adds
``_total``), while users' SQL depends on names exactly as Ray exposes them. A malformed
line is reported with its line number and skipped, so one bad line never costs the rest
of the scrape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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
# Label sets with blanks or escapes go through these general patterns.
_PAIR = r'[ \t]*[a-zA-Z_][a-zA-Z0-9_]*[ \t]*=[ \t]*"(?:[^"\\\n]|\\.)*"[ \t]*'
_LABELS_RE = re.compile(rf"(?:{_PAIR}(?:,{_PAIR})*,?)?[ \t]*")
_PAIR_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\.)*)"')
_ESCAPE_RE = re.compile(r"\\(.)")
_LABEL_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_HELP_ESCAPES = {"\\": "\\", "n": "\n"}
_TIMESTAMP_RE = re.compile(r"-?[0-9]+")


class LabelSet:
    """A series' label names and values, in exposition order; iterates as ``(name, value)`` pairs.

    Names and values are kept as two tuples because every series of a family shares one
    names tuple: converting and encoding then work per layout, not per label.
    """

    __slots__ = ("keys", "values")

    def __init__(self, keys: tuple[str, ...], values: tuple[str, ...]) -> None:
        self.keys = keys
        self.values = values

    def __iter__(self):
        return zip(self.keys, self.values, strict=True)

    def __len__(self) -> int:
        return len(self.keys)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelSet) and self.keys == other.keys and self.values == other.values

    def __hash__(self) -> int:
        return hash((self.keys, self.values))

    def __repr__(self) -> str:
        return f"LabelSet({tuple(self)!r})"


NO_LABELS = LabelSet((), ())


@dataclass(slots=True)
class Sample:
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


class _LineError(ValueError):
    pass


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
    if len(_key_layouts) > 10_000:
        _key_layouts.clear()
    keys = tuple(piece[1:-1] for piece in pieces)
    plain = len(set(keys)) == len(keys) and all(_PLAIN_KEY_PIECE_RE.fullmatch(piece) for piece in pieces)
    _key_layouts[pieces] = keys if plain else None  # duplicates are reported by the general path
    return _key_layouts[pieces]


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
    if not _LABELS_RE.fullmatch(text):
        raise _LineError("malformed label set")
    pairs = _PAIR_RE.findall(text)
    keys = tuple(key for key, _ in pairs)
    if len(set(keys)) != len(keys):
        raise _LineError("duplicate label name")
    return LabelSet(keys, tuple(_unescape(v, _LABEL_ESCAPES, strict=True) if "\\" in v else v for _, v in pairs))


def _cut_plain_label(text: str, name: str) -> tuple[str, str] | None:
    """``text`` without its ``name="value"`` pair, and the value, when written plainly.

    Without escapes, quotes alternate between opening and closing a value, so an even
    count of them before a match puts it at a label name, not inside a value.
    """
    needle = name + '="'
    at = text.find(needle)
    while at >= 0 and not ((at == 0 or text[at - 1] == ",") and text.count('"', 0, at) % 2 == 0):
        at = text.find(needle, at + 1)
    if at < 0:
        return None
    start = at + len(needle)
    end = text.find('"', start)
    if end < 0:
        return None
    if at == 0:
        return text[end + 2 :] if text[end + 1 : end + 2] == "," else text[end + 1 :], text[start:end]
    return text[: at - 1] + text[end + 1 :], text[start:end]


def _labels_and_bound(text: str, bound_name: str, labels_by_text: dict[str, LabelSet]) -> tuple[LabelSet, str | None]:
    cut = None if "\\" in text else _cut_plain_label(text, bound_name)
    if cut is not None:
        series_text, bound = cut
        labels = labels_by_text.get(series_text)
        if labels is None:
            labels = labels_by_text[series_text] = parse_labels(series_text)
        if bound_name in labels.keys:
            raise _LineError("duplicate label name")
        return labels, bound
    labels = parse_labels(text)
    if bound_name not in labels.keys:
        return labels, None
    index = labels.keys.index(bound_name)
    keys, values = labels.keys, labels.values
    return LabelSet(keys[:index] + keys[index + 1 :], values[:index] + values[index + 1 :]), values[index]


def parse(text: str) -> Exposition:
    """Parse one scrape body; never raises on bad content."""
    families: dict[str, MetricFamily] = {}
    owner_of_sample_name: dict[str, MetricFamily] = {}
    bound_label_of_sample_name: dict[str, str] = {}
    # Histogram _sum/_count lines and some other series repeat a label text within a scrape.
    labels_by_text: dict[str, LabelSet] = {}
    errors: list[ParseError] = []
    sample_count = 0

    def family(name: str) -> MetricFamily:
        found = families.get(name)
        if found is None:
            found = families[name] = MetricFamily(name)
        return found

    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line or line.isspace():
            continue
        if line[0] in " \t":
            line = line.lstrip(" \t")
        try:
            if line[0] == "#":
                _parse_comment(line, family, owner_of_sample_name, bound_label_of_sample_name)
                continue
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
                bound_name = bound_label_of_sample_name.get(name)
                if bound_name is not None:
                    labels, bound = _labels_and_bound(label_text, bound_name, labels_by_text)
                else:
                    labels = labels_by_text.get(label_text)
                    if labels is None:
                        labels = labels_by_text[label_text] = parse_labels(label_text)
                value_parts = line[close + 1 :].split()
            if name not in owner_of_sample_name and not _NAME_RE.fullmatch(name):
                raise _LineError(f"invalid metric name {name!r}")
            if len(value_parts) == 1:
                timestamp_ms = None
            elif len(value_parts) == 2 and _TIMESTAMP_RE.fullmatch(value_parts[1]):
                timestamp_ms = int(value_parts[1])
            else:
                raise _LineError("expected a value and an optional integer timestamp in milliseconds")
            try:
                value = float(value_parts[0])
            except ValueError:
                value = None
            if value is None or "_" in value_parts[0]:  # Go's ParseFloat takes no "1_000"
                raise _LineError(f"invalid value {value_parts[0]!r}")
        except _LineError as error:
            errors.append(ParseError(line_no, str(error), line[:300]))
            continue
        owner = owner_of_sample_name.get(name)
        if owner is None:
            owner = owner_of_sample_name[name] = family(name)
        owner.samples.append(Sample(name, labels, value, timestamp_ms, line_no, bound))
        sample_count += 1

    return Exposition([f for f in families.values() if f.samples], errors, sample_count)


def _parse_comment(line, family, owner_of_sample_name, bound_label_of_sample_name) -> None:
    parts = line.split(None, 3)
    if len(parts) < 3 or parts[1] not in ("HELP", "TYPE"):
        return  # an ordinary comment
    keyword, name = parts[1], parts[2]
    if not _NAME_RE.fullmatch(name):
        raise _LineError(f"invalid metric name {name!r} in # {keyword}")
    rest = parts[3].rstrip("\r") if len(parts) > 3 else ""
    target = family(name)
    if keyword == "HELP":
        target.help = _unescape(rest, _HELP_ESCAPES, strict=False) if "\\" in rest else rest
        return
    metric_type = rest.strip()
    if metric_type not in METRIC_TYPES:
        raise _LineError(f"unknown metric type {metric_type!r} (expected one of {sorted(METRIC_TYPES)})")
    if target.samples:
        raise _LineError(f"# TYPE for {name!r} after its samples")
    target.type = metric_type
    for suffix in _OWNED_SUFFIXES[metric_type]:
        owner_of_sample_name.setdefault(name + suffix, target)
    if metric_type in _BOUND_LABEL_SUFFIXES:
        suffix, bound_name = _BOUND_LABEL_SUFFIXES[metric_type]
        if owner_of_sample_name[name + suffix] is target:
            bound_label_of_sample_name[name + suffix] = bound_name
