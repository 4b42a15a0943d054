"""The embedded local store: Parseable's rows as files on disk, read with DataFusion.

Layout, like Parseable's own: ``<root>/<stream>/date=YYYY-MM-DD/hour=HH/`` (UTC, by the
rows' ``p_timestamp``) holding

* ``cycle-<p_timestamp ms>-<random>.jsonl.gz``: one per scrape cycle, its rows as gzipped JSON
  lines, so the scrape process writes them without PyArrow (like Parseable's own staging files;
  earlier versions wrote ``cycle-*.parquet``, which are read the same way);
* ``compacted-<ms>.parquet``: every row of the hour's cycle files up to that ``p_timestamp``.

Every file is written under a dot-name of its own and renamed, so a reader never sees a torn
file, two overlapping compactions never rename each other's half-written bytes, and a crash
leaves at most a stray temporary file, which compaction deletes an hour on. A reader lists a
folder once and reads its newest compacted file plus the cycle files after it. Compaction
writes the new file before deleting what it replaced, and retention deletes whole hours, so a
listing is never wrong, only sometimes stale: a query that loses a file to them mid-read
lists again.

Not DuckDB: Ray's label keys collide by case (``Version``/``version``), which Parquet and
DataFusion keep apart, and a DuckDB reader would block this writer.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from raymetrics_pipeline.common.files import remove_stale_temporaries, write_atomically
from raymetrics_pipeline.dataset.names import RECEIVED_AT, validate_dataset_name

_FILE_RE = re.compile(r"(cycle|compacted)-(\d+)(?:-[0-9a-f]+)?\.(?:parquet|jsonl\.gz)")
_HOUR = timedelta(hours=1)
# A cycle file this old can no longer be joined by one with an earlier p_timestamp.
COMPACTION_SETTLE = timedelta(minutes=2)
_STALE_TEMPORARY_SECONDS = 3_600


class StoreEmpty(LookupError):
    """Nothing has been written to the local store yet."""


@dataclass(frozen=True)
class HourFolder:
    path: Path
    start: datetime  # UTC

    @property
    def end(self) -> datetime:
        return self.start + _HOUR

    def listing(self) -> tuple[list[Path], list[Path]]:
        """The files to read (the newest compacted file and the cycle files written after it,
        so each row once) and the files a compaction has already replaced."""
        compacted: list[tuple[int, Path]] = []
        cycles: list[tuple[int, Path]] = []
        for entry in os.scandir(self.path):
            match = _FILE_RE.fullmatch(entry.name)
            if match:
                (cycles if match.group(1) == "cycle" else compacted).append((int(match.group(2)), Path(entry.path)))
        compacted.sort()
        covered = compacted[-1][0] if compacted else -1
        visible = [path for _, path in compacted[-1:]] + [path for millis, path in sorted(cycles) if millis > covered]
        replaced = [path for _, path in compacted[:-1]] + [path for millis, path in cycles if millis <= covered]
        return visible, replaced

    def visible_files(self) -> list[Path]:
        return self.listing()[0]


@dataclass
class CompactionReport:
    hours_compacted: int = 0
    files_before: int = 0
    files_after: int = 0
    rows_compacted: int = 0
    bytes_before: int = 0
    bytes_after: int = 0


@dataclass
class RetentionReport:
    hours_deleted: int = 0
    files_deleted: int = 0
    bytes_deleted: int = 0


def _millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _file_millis(path: Path) -> int:
    """The ``p_timestamp`` (ms) a store file's name carries: its cycle's, or the newest a compaction took."""
    return int(_FILE_RE.fullmatch(path.name).group(2))


def read_rows(path: Path) -> list[dict]:
    """A cycle file as ``LocalStore.write`` wrote it: gzipped JSON, a row a line."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


class LocalStore:
    """One stream's rows under ``root/<stream>``."""

    def __init__(self, root: Path | str, stream: str = "raymetrics") -> None:
        self.stream = validate_dataset_name(stream)
        self.directory = Path(root) / self.stream

    @property
    def location(self) -> str:
        return f"local store {self.directory}"

    def write(self, rows: list[dict], received: datetime) -> Path:
        """Add one cycle's ``rows`` (``localstore.rows``, all stamped ``received``, their ``p_timestamp``) as a new
        file."""
        received = received.astimezone(UTC)
        folder = self.directory / received.strftime("date=%Y-%m-%d/hour=%H")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"cycle-{_millis(received)}-{secrets.token_hex(4)}.jsonl.gz"
        lines = "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows)
        return write_atomically(path, lambda handle: handle.write(gzip.compress(lines.encode(), compresslevel=1)))

    def hours(self, start: datetime | None = None, end: datetime | None = None) -> Iterator[HourFolder]:
        """Hour folders overlapping ``[start, end)``, oldest first."""
        if not self.directory.is_dir():
            return
        for date_dir in sorted(self.directory.glob("date=*")):
            for hour_dir in sorted(date_dir.glob("hour=*")):
                try:
                    begins = datetime.strptime(f"{date_dir.name[5:]} {hour_dir.name[5:]}", "%Y-%m-%d %H")
                except ValueError:
                    continue  # not ours
                folder = HourFolder(hour_dir, begins.replace(tzinfo=UTC))
                if (start is None or folder.end > start) and (end is None or folder.start < end):
                    yield folder

    def files(self, start: datetime | None = None, end: datetime | None = None) -> list[Path]:
        return [path for folder in self.hours(start, end) for path in folder.visible_files()]

    def newest_file(self) -> Path:
        for folder in reversed(list(self.hours())):
            files = folder.visible_files()
            if files:
                return files[-1]
        raise StoreEmpty(f"the local store at {self.directory} holds no data yet: has a scrape run finished?")

    def size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self._own_files(self.directory.rglob("*")))

    @staticmethod
    def _own_files(paths: Iterator[Path]) -> list[Path]:
        return [path for path in paths if _FILE_RE.fullmatch(path.name)]

    def compact(self, now: datetime | None = None) -> CompactionReport:
        """Merge each hour's files into one, sorted by ``p_timestamp``; safe while cycles write.

        Only cycle files older than ``COMPACTION_SETTLE`` are merged, so no run still writing
        can add a file the new compacted one would wrongly hide; newer ones stay visible beside
        it and are merged next time. Run often, this keeps every hour to a few files.
        """
        from raymetrics_pipeline.localstore.arrow import files_dataset, write_parquet  # PyArrow: not when scraping

        now = now or datetime.now(UTC)
        settled = _millis(now - COMPACTION_SETTLE)
        report = CompactionReport()
        for folder in self.hours(end=now):
            remove_stale_temporaries(folder.path, _STALE_TEMPORARY_SECONDS, now.timestamp())
            files, replaced = folder.listing()
            for path in replaced:  # left behind by a compaction that stopped before its deletes
                path.unlink(missing_ok=True)
            ready = [path for path in files if _file_millis(path) <= settled]
            if not ready or (len(ready) == 1 and ready[0].name.startswith("compacted-")):
                continue
            table = files_dataset(ready).to_table().sort_by(RECEIVED_AT)
            target = folder.path / f"compacted-{max(map(_file_millis, ready))}.parquet"
            bytes_before = sum(path.stat().st_size for path in ready)
            write_atomically(target, partial(write_parquet, table))
            for path in ready:
                if path != target:
                    path.unlink(missing_ok=True)
            report.hours_compacted += 1
            report.files_before += len(ready)
            report.files_after += 1
            report.rows_compacted += table.num_rows
            report.bytes_before += bytes_before
            report.bytes_after += target.stat().st_size
        return report

    def delete_before(self, cutoff: datetime) -> RetentionReport:
        """Delete every hour that ended at or before ``cutoff``."""
        report = RetentionReport()
        for folder in self.hours(end=cutoff):
            if folder.end > cutoff:
                continue
            files = self._own_files(folder.path.iterdir())
            report.files_deleted += len(files)
            report.bytes_deleted += sum(path.stat().st_size for path in files)
            report.hours_deleted += 1
            shutil.rmtree(folder.path, ignore_errors=True)
            try:
                folder.path.parent.rmdir()  # the date folder, once its last hour is gone
            except OSError:
                pass
        return report
