"""The embedded local store on real files: layout, listing, compaction, retention, and reads that never double-count."""

import re
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raymetrics_pipeline.localstore.arrow import files_dataset, rows_table
from raymetrics_pipeline.localstore.store import (
    COMPACTION_SETTLE,
    CompactionReport,
    LocalStore,
    RetentionReport,
    StoreEmpty,
    read_rows,
)

T0 = datetime(2026, 11, 28, 8, 15, tzinfo=UTC)
HOUR_8 = datetime(2026, 11, 28, 8, tzinfo=UTC)


def cycle(received: datetime, *values: float, **extra: list) -> list[dict]:
    """One scrape cycle's rows, all stamped ``received`` as the real writer does; ``extra`` labels a value each."""
    stamp = millis(received)
    return [
        {"p_timestamp": stamp, "metric_name": f"m{i}", "data_point_value": value}
        | {label: labelled[i] for label, labelled in extra.items()}
        for i, value in enumerate(values)
    ]


def rows(table: pa.Table) -> Counter:
    """A table's rows as a multiset, so order is ignored but duplicates are not."""
    return Counter(tuple(sorted(row.items())) for row in table.to_pylist())


def read(files) -> pa.Table:
    return files_dataset(files).to_table()


def millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def hour_8(store: LocalStore):
    (folder,) = store.hours(HOUR_8, HOUR_8 + timedelta(hours=1))
    return folder


def write_hour_8(store: LocalStore) -> list[datetime]:
    """Three cycles into 08:00-09:00, written out of order, one of them with an extra label."""
    moments = [T0, T0 - timedelta(minutes=10), T0 + timedelta(minutes=30)]
    store.write(cycle(moments[0], 1.0, 2.0), moments[0])
    store.write(cycle(moments[1], 3.0, Version=["2.9"]), moments[1])
    store.write(cycle(moments[2], 4.0, 5.0, 6.0), moments[2])
    return moments


def test_write_files_a_cycle_under_its_utc_hour_with_no_temporary_left(tmp_path):
    """A cycle received at 00:30 in UTC+1 belongs to the previous UTC day's hour 23."""
    store = LocalStore(tmp_path)
    received = datetime(2026, 11, 29, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    path = store.write(cycle(received, 1.0), received)
    assert path.parent == tmp_path / "raymetrics" / "date=2026-11-28" / "hour=23"
    assert re.fullmatch(rf"cycle-{millis(received)}-[0-9a-f]+\.jsonl\.gz", path.name)
    assert [entry.name for entry in path.parent.iterdir()] == [path.name]
    assert read_rows(path) == cycle(received, 1.0)


def test_cycle_files_earlier_versions_wrote_as_parquet_are_read_and_compacted_with_the_new_ones(tmp_path):
    """Each cycle used to be a Parquet file: a store upgraded in place reads both kinds and compacts them into one."""
    store = LocalStore(tmp_path)
    new = store.write(cycle(T0, 1.0), T0)
    earlier = T0 - timedelta(minutes=5)
    old = new.parent / f"cycle-{millis(earlier)}-abcd1234.parquet"
    pq.write_table(rows_table(cycle(earlier, 2.0, Version=["2.9"])), old)
    assert store.files() == [old, new]
    expected = rows(rows_table(cycle(earlier, 2.0, Version=["2.9"]) + cycle(T0, 1.0)))
    assert rows(read(store.files())) == expected
    store.compact(T0 + timedelta(hours=2))
    (compacted,) = store.files()
    assert compacted.name.startswith("compacted-") and rows(read([compacted])) == expected


def test_listing_ignores_temporaries_and_foreign_files(tmp_path):
    """A crash leaves a dot-temporary behind; neither it nor an unrelated file may be read."""
    store = LocalStore(tmp_path)
    path = store.write(cycle(T0, 1.0), T0)
    (path.parent / f".cycle-{millis(T0) + 1}-abcd.parquet.tmp").write_bytes(b"torn")
    (path.parent / "notes.parquet").write_bytes(b"not ours")
    assert hour_8(store).listing() == ([path], [])
    assert store.files() == [path]


def test_files_selects_only_hours_overlapping_the_range(tmp_path):
    """[start, end) is half-open: an hour that ends at ``start`` or begins at ``end`` is out."""
    store = LocalStore(tmp_path)
    p7, p8, p9 = (store.write(cycle(T0 + timedelta(hours=h), 1.0), T0 + timedelta(hours=h)) for h in (-1, 0, 1))
    nine = HOUR_8 + timedelta(hours=1)
    assert store.files(HOUR_8, nine) == [p8]
    assert store.files(HOUR_8 - timedelta(minutes=1), nine) == [p7, p8]
    assert store.files(T0, T0 + timedelta(minutes=1)) == [p8]
    assert store.files(nine, nine + timedelta(hours=5)) == [p9]
    assert store.files() == [p7, p8, p9]


def test_files_read_together_union_columns_and_keeps_case_distinct_labels_apart(tmp_path):
    """Ray's ``Version`` and ``version`` labels are different columns; a missing column reads as null."""
    store = LocalStore(tmp_path)
    files = [
        store.write(cycle(T0, 1.0, Version=["2.9"]), T0),
        store.write(cycle(T0, 2.0, version=["3.0"]), T0),
        store.write(cycle(T0, 3.0), T0),
    ]
    table = read(files)
    assert set(table.column_names) == {"p_timestamp", "metric_name", "data_point_value", "Version", "version"}
    stamp = T0.replace(tzinfo=None)
    base = {"p_timestamp": stamp, "metric_name": "m0"}
    expected = [
        base | {"data_point_value": 1.0, "Version": "2.9", "version": None},
        base | {"data_point_value": 2.0, "Version": None, "version": "3.0"},
        base | {"data_point_value": 3.0, "Version": None, "version": None},
    ]
    assert rows(table) == rows(pa.Table.from_pylist(expected))


def test_compact_takes_only_cycles_older_than_the_settle_time_even_in_the_current_hour(tmp_path):
    """A run may still be writing a cycle stamped up to COMPACTION_SETTLE ago; newer ones wait beside the merge."""
    store = LocalStore(tmp_path)
    moments = write_hour_8(store)  # 08:05, 08:15, 08:45
    nine = HOUR_8 + timedelta(hours=1)
    store.write(cycle(nine, 7.0), nine)
    before = read(store.files())
    report = store.compact(moments[2] + COMPACTION_SETTLE - timedelta(milliseconds=1))
    assert (report.hours_compacted, report.files_before, report.files_after, report.rows_compacted) == (1, 2, 1, 3)
    assert [path.name for path in store.files()] == [
        f"compacted-{millis(moments[0])}.parquet",
        *(path.name for path in store.files()[1:]),
    ] and len(store.files()) == 3, "08:15 merged with 08:05; 08:45 and 09:00 still on their own"
    report = store.compact(nine + COMPACTION_SETTLE)  # the boundary counts as settled
    assert (report.hours_compacted, report.files_before, report.files_after, report.rows_compacted) == (2, 3, 2, 7)
    assert [path.name.split("-")[0] for path in store.files()] == ["compacted", "compacted"]
    assert rows(read(store.files())) == rows(before)


def test_compact_merges_an_hour_into_one_sorted_file_once(tmp_path):
    """Every row survives exactly once, sorted by p_timestamp, in a file named for the newest cycle."""
    store = LocalStore(tmp_path)
    moments = write_hour_8(store)
    mixed = T0 + timedelta(minutes=20)  # rows out of order within a file: only the sort can order them
    store.write(cycle(mixed, 7.0) + cycle(HOUR_8 + timedelta(minutes=1), 8.0), mixed)
    before_files = store.files()
    before = rows(read(before_files))
    bytes_before = sum(path.stat().st_size for path in before_files)

    report = store.compact(T0 + timedelta(hours=2))

    folder = hour_8(store)
    target = folder.path / f"compacted-{millis(max(moments))}.parquet"
    assert folder.listing() == ([target], [])
    assert [entry.name for entry in folder.path.iterdir()] == [target.name]
    table = pq.read_table(target)
    assert rows(read([target])) == before
    stamps = table.column("p_timestamp").to_pylist()
    assert stamps == sorted(stamps)
    assert report == CompactionReport(
        hours_compacted=1,
        files_before=4,
        files_after=1,
        rows_compacted=8,
        bytes_before=bytes_before,
        bytes_after=target.stat().st_size,
    )
    assert store.compact(T0 + timedelta(hours=3)) == CompactionReport()


def test_a_late_cycle_stays_visible_and_the_next_compaction_folds_it_in(tmp_path):
    """A cycle newer than the compacted file is not covered by it, so it must be read, then merged."""
    store = LocalStore(tmp_path)
    moments = write_hour_8(store)
    store.compact(T0 + timedelta(hours=2))
    (compacted,) = store.files()
    late = max(moments) + timedelta(minutes=5)
    late_path = store.write(cycle(late, 8.0), late)
    assert hour_8(store).listing() == ([compacted, late_path], [])
    expected = rows(read([compacted, late_path]))
    assert sum(expected.values()) == 7

    report = store.compact(T0 + timedelta(hours=2))

    assert (report.hours_compacted, report.files_before, report.files_after, report.rows_compacted) == (1, 2, 1, 7)
    folder = hour_8(store)
    target = folder.path / f"compacted-{millis(late)}.parquet"
    assert [entry.name for entry in folder.path.iterdir()] == [target.name]
    assert rows(read(store.files())) == expected


def test_files_left_by_an_interrupted_compaction_are_hidden_then_deleted(tmp_path):
    """A compaction that stopped before its deletes leaves replaced files; they are never read twice."""
    store = LocalStore(tmp_path)
    write_hour_8(store)
    originals = store.files()
    saved = tmp_path / "saved"
    saved.mkdir()
    for path in originals:
        shutil.copy(path, saved / path.name)
    before = rows(read(originals))
    store.compact(T0 + timedelta(hours=2))
    (compacted,) = store.files()
    for path in originals:  # as if the compaction had died just after writing its file
        shutil.copy(saved / path.name, path)
    older = compacted.with_name(f"compacted-{millis(T0)}.parquet")
    shutil.copy(saved / originals[0].name, older)

    visible, replaced = hour_8(store).listing()
    assert visible == [compacted]
    assert sorted(replaced) == sorted([*originals, older])
    assert rows(read(store.files())) == before

    assert store.compact(T0 + timedelta(hours=2)).hours_compacted == 0
    assert [entry.name for entry in compacted.parent.iterdir()] == [compacted.name]
    assert rows(read(store.files())) == before


def test_a_reader_racing_compaction_fails_loudly_rather_than_double_counting(tmp_path):
    """A stale listing loses its files (the query layer retries on FileNotFoundError); a fresh one reads each
    row once, including in the window where the compacted file exists and the cycle files are not yet gone."""
    store = LocalStore(tmp_path)
    write_hour_8(store)
    nine = HOUR_8 + timedelta(hours=1)
    store.write(cycle(nine, 7.0), nine)
    stale = store.files()
    saved = {path: path.read_bytes() for path in stale}
    before = rows(read(stale))

    store.compact(nine + COMPACTION_SETTLE + timedelta(minutes=1))

    with pytest.raises(FileNotFoundError):
        read(stale)
    assert rows(read(store.files())) == before
    for path, content in saved.items():  # between compaction's write and its deletes
        path.write_bytes(content)
    assert rows(read(stale)) == before
    assert rows(read(store.files())) == before


def test_delete_before_removes_whole_hours_that_ended_by_the_cutoff(tmp_path):
    """Retention drops finished hours (and emptied date folders) only; later hours stay readable."""
    store = LocalStore(tmp_path)
    yesterday = datetime(2026, 11, 27, 23, 15, tzinfo=UTC)
    yesterday_path = store.write(cycle(yesterday, 1.0), yesterday)
    write_hour_8(store)
    gone = [yesterday_path, *hour_8(store).visible_files()]
    nine = T0 + timedelta(hours=1)
    kept = store.write(cycle(nine, 9.0), nine)
    gone_bytes = sum(path.stat().st_size for path in gone)
    assert store.size_bytes() == gone_bytes + kept.stat().st_size

    cutoff = HOUR_8 + timedelta(hours=1)
    assert store.delete_before(cutoff) == RetentionReport(hours_deleted=2, files_deleted=4, bytes_deleted=gone_bytes)

    assert not (store.directory / "date=2026-11-27").exists()
    assert not (store.directory / "date=2026-11-28" / "hour=08").exists()
    assert store.files() == [kept]
    assert rows(read([kept])) == rows(rows_table(cycle(nine, 9.0)))
    assert store.size_bytes() == kept.stat().st_size
    assert store.delete_before(cutoff + timedelta(minutes=59)) == RetentionReport()


def test_newest_file_is_the_latest_cycle_and_an_empty_store_says_where_it_looked(tmp_path):
    """The error must name the folder, since an empty store usually means the wrong path."""
    store = LocalStore(tmp_path / "store")
    with pytest.raises(StoreEmpty, match=re.escape(str(store.directory))):
        store.newest_file()
    nine = T0 + timedelta(hours=1)
    newest = store.write(cycle(nine, 1.0), nine)
    store.write(cycle(nine - timedelta(minutes=5), 2.0), nine - timedelta(minutes=5))
    store.write(cycle(T0, 3.0), T0)
    assert store.newest_file() == newest


@pytest.mark.parametrize("name", ["bad name", "select", "métriques"])
def test_a_bad_stream_name_is_rejected(tmp_path, name):
    """Parseable refuses such a dataset name (and one that is not ASCII cannot travel in its header), so the store
    must too, before touching the disk."""
    with pytest.raises(ValueError, match=f"PARSEABLE_STREAM={name!r}"):
        LocalStore(tmp_path, name)
    assert list(tmp_path.iterdir()) == []
