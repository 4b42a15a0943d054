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

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_NAME_RE = re.compile(_NAME)
_PAIR = r'[ \t]*[a-zA-Z_][a-zA-Z0-9_]*[ \t]*=[ \t]*"(?:[^"\\\n]|\\.)*"[ \t]*'
# The common case (no escapes, no blanks) is checked and split with two cheap patterns;
# anything else goes through the general ones.
_PLAIN_PAIR = r'[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*"'
_PLAIN_LABELS_RE = re.compile(rf"(?:{_PLAIN_PAIR}(?:,{_PLAIN_PAIR})*,?)?")
_PLAIN_PAIR_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"')
_LABELS_RE = re.compile(rf"(?:{_PAIR}(?:,{_PAIR})*,?)?[ \t]*")
_PAIR_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\.)*)"')
_ESCAPE_RE = re.compile(r"\\(.)")
_LABEL_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_HELP_ESCAPES = {"\\": "\\", "n": "\n"}
_TIMESTAMP_RE = re.compile(r"-?[0-9]+")


@dataclass(slots=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float
    timestamp_ms: int | None
    line_no: int


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


def parse_value(text: str) -> float:
    """A sample value as Go's ParseFloat reads it (NaN, +Inf, -Inf included)."""
    try:
        value = float(text)
    except ValueError:
        raise _LineError(f"invalid value {text!r}") from None
    if "_" in text:
        raise _LineError(f"invalid value {text!r}")
    return value


def parse_labels(text: str) -> tuple[tuple[str, str], ...]:
    """The pairs inside ``{...}``, unescaped, in exposition order."""
    if "\\" not in text and _PLAIN_LABELS_RE.fullmatch(text):
        labels = tuple(_PLAIN_PAIR_RE.findall(text))
    elif _LABELS_RE.fullmatch(text):
        labels = tuple(
            (key, _unescape(value, _LABEL_ESCAPES, strict=True) if "\\" in value else value)
            for key, value in _PAIR_RE.findall(text)
        )
    else:
        raise _LineError("malformed label set")
    if len({key for key, _ in labels}) != len(labels):
        raise _LineError("duplicate label name")
    return labels


class Parser:
    """Parses scrapes; keeps label sets it has seen, since the same series return every scrape.

    The cache is bounded: it is dropped whole once it holds ``max_cached_label_sets``.
    """

    def __init__(self, max_cached_label_sets: int = 200_000) -> None:
        self._labels_by_text: dict[str, tuple[tuple[str, str], ...]] = {}
        self._valid_names: set[str] = set()
        self._max_cached = max_cached_label_sets

    def parse(self, text: str) -> Exposition:
        """Parse one scrape body; never raises on bad content."""
        if len(self._labels_by_text) > self._max_cached:
            self._labels_by_text.clear()
        labels_by_text = self._labels_by_text
        valid_names = self._valid_names
        families: dict[str, MetricFamily] = {}
        owner_of_sample_name: dict[str, MetricFamily] = {}
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
                    _parse_comment(line, family, owner_of_sample_name)
                    continue
                brace = line.find("{")
                if brace < 0:
                    name, *value_parts = line.split()
                    labels = ()
                else:
                    close = line.rfind("}")
                    if close < brace:
                        raise _LineError("unclosed label set")
                    name = line[:brace].rstrip(" \t")
                    label_text = line[brace + 1 : close]
                    labels = labels_by_text.get(label_text)
                    if labels is None:
                        labels = labels_by_text[label_text] = parse_labels(label_text)
                    value_parts = line[close + 1 :].split()
                if name not in valid_names:
                    if not _NAME_RE.fullmatch(name):
                        raise _LineError(f"invalid metric name {name!r}")
                    valid_names.add(name)
                if len(value_parts) == 1:
                    timestamp_ms = None
                elif len(value_parts) == 2 and _TIMESTAMP_RE.fullmatch(value_parts[1]):
                    timestamp_ms = int(value_parts[1])
                else:
                    raise _LineError("expected a value and an optional integer timestamp in milliseconds")
                value = parse_value(value_parts[0])
            except _LineError as error:
                errors.append(ParseError(line_no, str(error), line[:300]))
                continue
            owner = owner_of_sample_name.get(name)
            if owner is None:
                owner = owner_of_sample_name[name] = family(name)
            owner.samples.append(Sample(name, labels, value, timestamp_ms, line_no))
            sample_count += 1

        return Exposition([f for f in families.values() if f.samples], errors, sample_count)


def parse(text: str) -> Exposition:
    """Parse one scrape body with a fresh parser (no label-set cache carried over)."""
    return Parser().parse(text)


def _parse_comment(line, family, owner_of_sample_name) -> None:
    parts = line.split(None, 3)
    if len(parts) < 3 or parts[1] not in ("HELP", "TYPE"):
        return  # an ordinary comment
    keyword, name = parts[1], parts[2]
    if not re.fullmatch(_NAME, name):
        raise _LineError(f"invalid metric name {name!r} in # {keyword}")
    rest = parts[3].rstrip("\r") if len(parts) > 3 else ""
    target = family(name)
    if keyword == "HELP":
        target.help = _unescape(rest, _HELP_ESCAPES, strict=False)
        return
    metric_type = rest.strip()
    if metric_type not in METRIC_TYPES:
        raise _LineError(f"unknown metric type {metric_type!r} (expected one of {sorted(METRIC_TYPES)})")
    if target.samples:
        raise _LineError(f"# TYPE for {name!r} after its samples")
    target.type = metric_type
    for suffix in _OWNED_SUFFIXES[metric_type]:
        owner_of_sample_name.setdefault(name + suffix, target)
