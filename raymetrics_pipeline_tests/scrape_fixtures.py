"""Locate captured Ray scrapes: the project's own (always there) and ../shared's (when present)."""

import re
from dataclasses import dataclass
from pathlib import Path

PROJECT_FIXTURES = Path(__file__).parent / "fixtures" / "ray-2.60"
SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ray-2.60"
_NAME_RE = re.compile(r"scrape_(\d+)_(\d+)\.txt")


@dataclass(frozen=True)
class ScrapeFixture:
    path: Path
    session: str
    scrape_time_unix_nano: int
    port: int

    @property
    def id(self) -> str:
        origin = "shared" if SHARED_FIXTURES in self.path.parents else "project"
        return f"{origin}/{self.session}/{self.path.name}"

    def text(self) -> str:
        return self.path.read_text()


def scrape_fixtures(include_shared: bool = True) -> list[ScrapeFixture]:
    roots = [PROJECT_FIXTURES] + ([SHARED_FIXTURES] if include_shared and SHARED_FIXTURES.is_dir() else [])
    found = []
    for root in roots:
        for path in sorted(root.glob("session_*/scrape_*.txt")):
            match = _NAME_RE.fullmatch(path.name)
            found.append(ScrapeFixture(path, path.parent.name, int(match.group(1)), int(match.group(2))))
    return found


def rounds(fixtures: list[ScrapeFixture]) -> list[list[ScrapeFixture]]:
    """Fixtures grouped by scrape round (one file per endpoint, taken together), oldest first."""
    grouped: list[list[ScrapeFixture]] = []
    for fixture in sorted(fixtures, key=lambda f: (f.path.parent, f.scrape_time_unix_nano)):
        current = grouped[-1] if grouped else []
        if not current or current[0].path.parent != fixture.path.parent or fixture.port in {f.port for f in current}:
            grouped.append(current := [])
        current.append(fixture)
    return grouped
