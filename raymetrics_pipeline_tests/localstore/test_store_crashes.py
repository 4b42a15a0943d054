"""The local store under kill -9: real processes stopped at chosen calls, then the real files checked.

Whenever a writer or a compactor dies, every acknowledged row must read exactly once through the
query layer the rollups use, a cycle in flight reads whole or not at all, and whatever the dead
process left must be hidden from readers and gone after the store's upkeep.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from raymetrics_pipeline.localstore.backend import LocalStoreBackend, StoreUpkeep
from raymetrics_pipeline.localstore.sql import LocalSql
from raymetrics_pipeline.localstore.store import COMPACTION_SETTLE, LocalStore
from raymetrics_pipeline_tests.localstore.store_process import cycle_rows

REPO = Path(__file__).resolve().parents[2]
EVERYTHING = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
ROWS_PER_CYCLE = 3
SCRAPE_INTERVAL = timedelta(seconds=15)
# A complete hour in the past, so a compaction at its end plus the settle time takes all of it.
PAST_HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
AFTER_PAST_HOUR = PAST_HOUR + timedelta(hours=1) + COMPACTION_SETTLE


def millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def planned_cycles(first_seq: int, count: int, start: datetime = PAST_HOUR) -> list[list[int]]:
    """``[first_seq, rows, p_timestamp ms]`` of ``count`` cycles one scrape interval apart."""
    return [
        [first_seq + index * ROWS_PER_CYCLE, ROWS_PER_CYCLE, millis(start + index * SCRAPE_INTERVAL)]
        for index in range(count)
    ]


def seqs(cycles: list[list[int]]) -> set[int]:
    return {seq for first, count, _ in cycles for seq in range(first, first + count)}


def write_cycles(store: LocalStore, cycles: list[list[int]]) -> None:
    """Cycles written by this process, as a scrape run that was not killed would."""
    for first, count, stamp in cycles:
        received = datetime.fromtimestamp(stamp / 1000, UTC)
        store.write(cycle_rows(first, count, received), received)


class StoreProcess:
    """A ``store_process`` job in a child process, which the test kills -9, releases or waits for."""

    def __init__(self, workdir: Path, name: str, job: dict) -> None:
        self.log = workdir / f"{name}.log"
        self.marker = workdir / f"{name}.stopped"
        self.stderr = workdir / f"{name}.stderr"
        spec = {"log": str(self.log), "marker": str(self.marker), **job}
        command = [sys.executable, "-m", "raymetrics_pipeline_tests.localstore.store_process", json.dumps(spec)]
        with open(self.stderr, "wb") as stderr:
            self.popen = subprocess.Popen(command, cwd=REPO, stderr=stderr)

    def events(self, kind: str | None = None) -> list[dict]:
        if not self.log.exists():
            return []
        lines = self.log.read_text().split("\n")[:-1]  # a line still being appended has no newline yet
        return [event for event in map(json.loads, lines) if kind in (None, event["event"])]

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.popen.poll() is None, f"exited ({self.popen.returncode}) before {what}: {self.errors()}"
            assert time.monotonic() < deadline, f"no {what} within {timeout} s"
            time.sleep(0.005)

    def wait_until_stopped(self) -> None:
        self.wait_until(self.marker.exists, "its stop")

    def wait_until_ready(self) -> None:
        self.wait_until(lambda: bool(self.events("ready")), "ready")

    def kill(self) -> None:
        os.kill(self.popen.pid, signal.SIGKILL)
        assert self.popen.wait(timeout=30) == -signal.SIGKILL

    def kill_when_stopped(self) -> None:
        self.wait_until_stopped()
        self.kill()

    def release(self) -> None:
        Path(f"{self.marker}.release").touch()

    def finish(self) -> None:
        assert self.popen.wait(timeout=60) == 0, self.errors()

    def errors(self) -> str:
        return self.stderr.read_text()


@pytest.fixture
def backend(tmp_path) -> LocalStoreBackend:
    return LocalStoreBackend(tmp_path / "store", "raymetrics", retention_days=365)


@pytest.fixture
def start(tmp_path, backend) -> Iterator[Callable[..., StoreProcess]]:
    """Start a named job on the test's store; any child still alive at the end is killed."""
    started: list[StoreProcess] = []

    def start_job(name: str, **job) -> StoreProcess:
        started.append(StoreProcess(tmp_path, name, {"root": str(backend.store.directory.parent), **job}))
        return started[-1]

    yield start_job
    for process in started:
        if process.popen.poll() is None:
            process.kill()


@dataclass
class Ledger:
    """What the writers logged: the cycles they began, and those whose write returned."""

    begun: dict[int, range]
    acknowledged: set[int]

    @classmethod
    def of(cls, *processes: StoreProcess) -> "Ledger":
        events = [event for process in processes for event in process.events()]  # one reading of each live log
        begun = {e["first"]: range(e["first"], e["first"] + e["count"]) for e in events if e["event"] == "begin"}
        acknowledged = {seq for e in events if e["event"] == "done" for seq in begun[e["first"]]}
        return cls(begun, acknowledged)

    @property
    def in_flight(self) -> list[range]:
        """Cycles begun and never acknowledged (a cycle is acknowledged whole, so its first row stands for it)."""
        return [cycle for first, cycle in self.begun.items() if first not in self.acknowledged]


def stored_seqs(store: LocalStore) -> Counter[int]:
    """Each row's ``seq`` as the query layer reads it, with how often it was read."""
    return Counter(int(row["seq"]) for row in LocalSql(store).run("SELECT seq FROM raymetrics", *EVERYTHING))


def assert_each_row_once(read: Counter[int], ledger: Ledger) -> set[int]:
    """Every acknowledged row read once, no row read twice or out of nowhere, cycles in flight whole or absent."""
    present = set(read)
    assert not {seq for seq, times in read.items() if times > 1}, "doubled rows"
    assert not ledger.acknowledged - present, "acknowledged rows lost"
    assert present <= {seq for cycle in ledger.begun.values() for seq in cycle}, "rows never written"
    for cycle in ledger.in_flight:
        assert present.isdisjoint(cycle) or present.issuperset(cycle), f"cycle {cycle} torn"
    return present


def leftovers(store: LocalStore) -> list[str]:
    """Every file a reader skips: temporaries, and files a newer compacted file replaced."""
    visible = set(store.files())
    return sorted(path.name for path in store.directory.rglob("*") if path.is_file() and path not in visible)


def upkeep(backend: LocalStoreBackend) -> StoreUpkeep:
    """The upkeep job two hours on, when whatever the dead process left counts as stale."""
    return backend.maintain(datetime.now(UTC) + timedelta(hours=2))


def assert_upkeep_leaves_exactly(backend: LocalStoreBackend, expected: set[int]) -> None:
    upkeep(backend)
    assert leftovers(backend.store) == []
    assert stored_seqs(backend.store) == Counter(expected)
    files = backend.store.files()
    assert all(path.name.startswith("compacted-") for path in files), "upkeep folds each hour into one file"
    assert len({path.parent for path in files}) == len(files)


@pytest.mark.parametrize(
    ("stop", "in_flight_kept", "temporaries_left"),
    [
        ({"call": "write", "nth": 2, "moment": "midway"}, False, 1),
        ({"call": "replace", "nth": 2, "moment": "before"}, False, 1),
        ({"call": "replace", "nth": 2, "moment": "after"}, True, 0),
    ],
    ids=["while-writing", "between-write-and-rename", "right-after-rename"],
)
def test_a_cycle_killed_mid_write_is_whole_or_absent_and_its_temporary_goes(
    backend, start, stop, in_flight_kept, temporaries_left
):
    """The second of three cycles dies: the first stays, the second is all there (renamed) or not at all."""
    store = backend.store
    cycles = planned_cycles(0, 4)
    writer = start("writer", task="cycles", cycles=cycles[:3], stop=stop)
    writer.kill_when_stopped()

    ledger = Ledger.of(writer)
    assert (sorted(ledger.begun), ledger.acknowledged) == ([0, 3], seqs(cycles[:1]))
    present = assert_each_row_once(stored_seqs(store), ledger)
    assert present == seqs(cycles[: 2 if in_flight_kept else 1])
    assert [name.startswith(".cycle-") and name.endswith(".tmp") for name in leftovers(store)] == [
        True
    ] * temporaries_left

    write_cycles(store, cycles[3:])  # the next scrape run
    assert_upkeep_leaves_exactly(backend, present | seqs(cycles[3:]))


@pytest.mark.parametrize(
    ("stop", "left"),
    [
        ({"call": "write", "nth": 1, "moment": "midway"}, ["temporary"]),
        ({"call": "replace", "nth": 1, "moment": "before"}, ["temporary"]),
        ({"call": "replace", "nth": 1, "moment": "after"}, ["compacted", "cycle", "cycle", "cycle"]),
        ({"call": "unlink", "nth": 3, "moment": "before"}, ["cycle", "cycle"]),
    ],
    ids=["while-writing", "between-write-and-rename", "after-rename-before-deletes", "midway-through-deletes"],
)
def test_a_compaction_killed_anywhere_hides_what_it_left_and_upkeep_finishes_it(backend, start, stop, left):
    """An hour of an earlier compacted file and three cycles is compacted again, and the compactor dies."""
    store = backend.store
    cycles = planned_cycles(0, 7)
    write_cycles(store, cycles[:3])
    store.compact(AFTER_PAST_HOUR)
    write_cycles(store, cycles[3:6])
    compactor = start("compactor", task="compact", now_millis=millis(AFTER_PAST_HOUR), stop=stop)
    compactor.kill_when_stopped()

    assert ["temporary" if name.startswith(".") else name.split("-")[0] for name in leftovers(store)] == left
    assert stored_seqs(store) == Counter(seqs(cycles[:6]))

    write_cycles(store, cycles[6:])  # a scrape run carries on
    assert_upkeep_leaves_exactly(backend, seqs(cycles))


def test_two_compactors_at_once_one_killed_while_writing_lose_nothing(backend, start):
    """Overlapping upkeep runs compact the same hour into the same file name: one dies while writing it,
    the other renames its own file; a shared temporary would hand it the dead one's half-written bytes."""
    store = backend.store
    cycles = planned_cycles(0, 4)
    write_cycles(store, cycles)
    job = {"task": "compact", "now_millis": millis(AFTER_PAST_HOUR)}
    first = start("first-compactor", **job, stop={"call": "replace", "nth": 1, "moment": "before"})
    first.wait_until_stopped()
    second = start("second-compactor", **job, stop={"call": "write", "nth": 1, "moment": "midway"})
    second.kill_when_stopped()
    first.release()
    first.finish()

    assert stored_seqs(store) == Counter(seqs(cycles))
    assert [name.startswith(".compacted-") for name in leftovers(store)] == [True]
    assert_upkeep_leaves_exactly(backend, seqs(cycles))


def test_two_scrape_cycles_racing_into_the_same_hour_and_millisecond_both_stay(backend, start, tmp_path):
    """Overlapping scrape runs may stamp the same millisecond: both cycles' files must stay, each read once."""
    go = tmp_path / "go"
    stamps = planned_cycles(0, 10)
    writers = [
        start(f"writer-{w}", task="cycles", start_file=str(go), cycles=[[w * 1000 + f, n, ms] for f, n, ms in stamps])
        for w in range(2)
    ]
    for writer in writers:
        writer.wait_until_ready()
    go.touch()
    for writer in writers:
        writer.finish()

    expected = {w * 1000 + seq for w in range(2) for seq in seqs(stamps)}
    assert len(backend.store.files()) == 20
    assert stored_seqs(backend.store) == Counter(expected)
    assert_upkeep_leaves_exactly(backend, expected)


def test_two_live_writers_and_a_compactor_never_lose_or_double_a_row_for_a_reader(backend, start, tmp_path):
    """Two writers stamp cycles with the real clock while a third process compacts every half second (the
    settle time shrunk to 1.5 s) and this one reads: every read sees each row acknowledged before it once."""
    settle_seconds = 1.5
    stop = tmp_path / "stop-compacting"
    compactor = start(
        "compactor", task="live_compactor", settle_seconds=settle_seconds, pause_seconds=0.5, stop_file=str(stop)
    )
    writers = [
        start(
            f"writer-{w}",
            task="live_writer",
            first_seq=w * 1_000_000,
            rows_per_cycle=ROWS_PER_CYCLE,
            cycles_count=60,
            pause_seconds=0.05,
        )
        for w in range(2)
    ]
    reads = 0
    while any(writer.popen.poll() is None for writer in writers):
        acknowledged_before = Ledger.of(*writers).acknowledged
        if acknowledged_before:  # before the first file, the query layer rightly says the store is empty
            read = stored_seqs(backend.store)
            assert_each_row_once(read, Ledger(Ledger.of(*writers).begun, acknowledged_before))
            reads += 1
    for writer in writers:
        writer.finish()
    merged_while_writing = sum(event["rows"] for event in compactor.events("compacted"))
    stop.touch()
    compactor.finish()

    ledger = Ledger.of(*writers)
    assert len(ledger.acknowledged) == 2 * 60 * ROWS_PER_CYCLE and not ledger.in_flight
    slowest = max(event["seconds"] for writer in writers for event in writer.events("done"))
    assert slowest < settle_seconds, "a write outlasted the settle time: the test's premise, not the store, broke"
    assert merged_while_writing > 0 and reads > 5, "the race was not exercised"
    assert stored_seqs(backend.store) == Counter(ledger.acknowledged)
    assert_upkeep_leaves_exactly(backend, ledger.acknowledged)


def kill_a_writing_compacting_process_at_random_moments(backend, start, iterations: int, seed: int) -> None:
    """Each round a fresh process carries on the same store (as the next scrape run would), writing cycles on a
    simulated clock and compacting every few, and is killed -9 after a random delay; rows once read must stay."""
    rng = random.Random(seed)
    store, processes, kept = backend.store, [], set()
    first_seq, first_millis = 0, millis(datetime.now(UTC) - timedelta(days=30))
    for round_number in range(iterations):
        churn = start(
            f"churn-{round_number}",
            task="churn",
            first_seq=first_seq,
            first_millis=first_millis,
            step_millis=60_000,
            rows_per_cycle=ROWS_PER_CYCLE,
            compact_every=rng.randint(1, 8),
        )
        churn.wait_until_ready()
        time.sleep(rng.uniform(0.0, 0.4))
        churn.kill()
        processes.append(churn)
        present = assert_each_row_once(stored_seqs(store), Ledger.of(*processes))
        assert present >= kept, f"round {round_number} (seed {seed}) lost rows read before"
        kept = present
        if rng.random() < 0.2:
            assert_upkeep_leaves_exactly(backend, kept)
        if begun := churn.events("begin"):
            first_seq = begun[-1]["first"] + ROWS_PER_CYCLE
            first_millis = begun[-1]["millis"] + 60_000
    assert_upkeep_leaves_exactly(backend, kept)


def test_a_writer_and_compactor_killed_at_random_moments_loses_and_doubles_nothing(backend, start):
    kill_a_writing_compacting_process_at_random_moments(backend, start, iterations=8, seed=8)


@pytest.mark.long
def test_a_writer_and_compactor_killed_at_random_moments_many_times(backend, start):
    kill_a_writing_compacting_process_at_random_moments(backend, start, iterations=300, seed=300)
