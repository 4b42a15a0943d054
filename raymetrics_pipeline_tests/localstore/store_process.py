"""A local-store writer or compactor in a process of its own, for the tests that kill it -9.

``python -m raymetrics_pipeline_tests.localstore.store_process '<json job>'`` runs one job on the
real store code. A job may name a call to stop at (the Nth file the store writes, ``os.replace`` or
``os.unlink``): the process then writes a marker file and waits there, so the parent can kill it
at exactly that point, or let it go on by creating the release file. Each cycle is logged before
its write starts and after it returns, so the parent knows which rows were acknowledged and which
were in flight. Every row carries a unique ``seq``, so a lost or doubled row shows by name.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from raymetrics_pipeline.localstore import store
from raymetrics_pipeline.localstore.store import COMPACTION_SETTLE, LocalStore

# A child whose parent died before killing or releasing it gives up rather than linger.
_ORPHAN_SECONDS = 60.0


def cycle_rows(first_seq: int, count: int, received: datetime) -> list[dict]:
    """One cycle's rows, all stamped ``received`` as the sink stamps them, numbered from ``first_seq`` (a text
    column, as a Ray label is)."""
    stamp = int(received.timestamp() * 1000)
    return [{"p_timestamp": stamp, "seq": str(seq)} for seq in range(first_seq, first_seq + count)]


def from_millis(millis: int) -> datetime:
    return datetime.fromtimestamp(millis / 1000, UTC)


def wait_for(path: str) -> None:
    deadline = time.monotonic() + _ORPHAN_SECONDS
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            os._exit(3)
        time.sleep(0.005)


class Job:
    """One job on the real store code, logging its events to ``spec["log"]``."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.store = LocalStore(spec["root"])
        self._log = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def log(self, event: str, **fields) -> None:
        """One line per event in a single append, so a kill never leaves half a line."""
        os.write(self._log, (json.dumps({"event": event, **fields}) + "\n").encode())

    def write_cycle(self, first_seq: int, count: int, received: datetime) -> None:
        """Log, write, log again with how long after its stamp the write returned (the settle time's premise)."""
        millis = int(received.timestamp() * 1000)
        self.log("begin", first=first_seq, count=count, millis=millis)
        self.store.write(cycle_rows(first_seq, count, received), received)
        self.log("done", first=first_seq, count=count, millis=millis, seconds=time.time() - received.timestamp())

    def cycles(self) -> None:
        """Write the listed cycles ``[first_seq, count, millis]`` in order, once ``start_file`` exists."""
        if "start_file" in self.spec:
            wait_for(self.spec["start_file"])
        for first_seq, count, millis in self.spec["cycles"]:
            self.write_cycle(first_seq, count, from_millis(millis))

    def compact(self) -> None:
        report = self.store.compact(from_millis(self.spec["now_millis"]))
        self.log("compacted", rows=report.rows_compacted, files=report.files_before)

    def churn(self) -> None:
        """Cycles on a simulated clock ``step_millis`` apart, compacting every few, as scrape runs and upkeep would."""
        first_seq, received = self.spec["first_seq"], from_millis(self.spec["first_millis"])
        count, step = self.spec["rows_per_cycle"], timedelta(milliseconds=self.spec["step_millis"])
        deadline = time.monotonic() + _ORPHAN_SECONDS
        for written in itertools.count(1):
            self.write_cycle(first_seq, count, received)
            if written % self.spec["compact_every"] == 0:
                self.store.compact(received + COMPACTION_SETTLE)  # everything written so far has settled
            first_seq, received = first_seq + count, received + step
            if time.monotonic() > deadline:
                return

    def live_writer(self) -> None:
        """Cycles stamped with the real clock, as the sink stamps them, a few milliseconds apart."""
        first_seq, count = self.spec["first_seq"], self.spec["rows_per_cycle"]
        for _ in range(self.spec["cycles_count"]):
            self.write_cycle(first_seq, count, datetime.now(UTC))
            first_seq += count
            time.sleep(self.spec["pause_seconds"])

    def live_compactor(self) -> None:
        """Compact over and over until ``stop_file`` exists, with the settle time shrunk to ``settle_seconds``."""
        shift = COMPACTION_SETTLE - timedelta(seconds=self.spec["settle_seconds"])
        while not os.path.exists(self.spec["stop_file"]):
            report = self.store.compact(datetime.now(UTC) + shift)
            self.log("compacted", rows=report.rows_compacted, files=report.files_before)
            time.sleep(self.spec["pause_seconds"])


def stop_at(call: str, nth: int, moment: str, marker: Path) -> None:
    """Make the ``nth`` call of ``call`` stop ``moment`` ("before", "after", or for ``write``, the store
    writing a file, "midway": half its bytes written) and wait there for ``marker.release``."""

    def stopped() -> None:
        marker.write_text(str(os.getpid()))
        wait_for(f"{marker}.release")

    calls = 0
    if call == "write":
        real_write_atomically = store.write_atomically

        def write_atomically(path, write):
            nonlocal calls
            calls += 1
            if calls != nth:
                return real_write_atomically(path, write)

            def halfway(handle) -> None:
                encoded = io.BytesIO()
                write(encoded)
                data = encoded.getvalue()
                handle.write(data[: len(data) // 2])
                handle.flush()
                stopped()
                handle.write(data[len(data) // 2 :])

            return real_write_atomically(path, halfway)

        store.write_atomically = write_atomically
        return
    real = getattr(os, call)

    def wrapper(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == nth and moment == "before":
            stopped()
        result = real(*args, **kwargs)
        if calls == nth and moment == "after":
            stopped()
        return result

    setattr(os, call, wrapper)


def main(spec: dict) -> None:
    job = Job(spec)
    if "stop" in spec:
        stop_at(**spec["stop"], marker=Path(spec["marker"]))
    job.log("ready")
    getattr(job, spec["task"])()
    job.log("finished")


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
