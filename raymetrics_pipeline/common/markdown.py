"""Markdown tables for Dagster's metadata panel (the UI renders ``MetadataValue.md``)."""

from collections.abc import Iterable, Sequence


def cell(value: object) -> str:
    """A value as a person reads it: no value as a dash, floats to three significant digits or whole thousands."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)
