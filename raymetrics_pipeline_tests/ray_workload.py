"""Workload run as a Ray job by the test harness and the fixture capture.

    python ray_workload.py [--tasks 200] [--failing 20] [--actor-calls 50]
                           [--objects 10] [--object-mb 20] [--hold-seconds 25]
                           [--holders 0] [--holder-mb 4] [--holder-objects 10] [--holder-kib 50]

Stand-alone on purpose (it is uploaded alone as the job's working_dir): only
``ray`` and the standard library are imported (numpy is not a dependency of
``ray[default]``).

* ``--tasks`` short tasks that succeed  -> ``ray_tasks{State="FINISHED"}``
* ``--failing`` tasks that raise         -> ``ray_tasks{State="FAILED"}``
* one actor with ``--actor-calls`` calls -> ``ray_actors``, actor task states
* ``--objects`` byte strings of ``--object-mb`` MiB put in the object store and kept
  referenced for ``--hold-seconds``       -> ``ray_object_store_memory`` bytes
* ``--holders`` actors (``num_cpus=0``, so they all fit on a 2-CPU node), each a worker
  process of its own that, before the hold starts, puts ``--holder-mb`` MiB with ``ray.put``
  (shared memory: ``Location="MMAP_SHM"``) and asks the next holder for
  ``--holder-objects`` byte strings of ``--holder-kib`` KiB. Replies under Ray's 100 KiB
  inline limit stay in the asking worker's own memory, so each holder reports
  about ``holder_objects * holder_kib`` KiB in its own
  ``ray_object_store_memory{Location="WORKER_HEAP", WorkerId=...}`` series during the hold
  (8 holders: 8 such series besides the driver's and the idle workers'). 0 = none.
Prints one JSON line with what it did and exits 0.
"""

from __future__ import annotations

import argparse
import json
import time

import ray


@ray.remote
def square(i: int) -> int:
    time.sleep(0.01)
    return i * i


class WorkloadError(Exception):
    pass


@ray.remote(max_retries=0)
def fail(i: int) -> None:
    time.sleep(0.01)
    raise WorkloadError(f"intentional failure {i}")


@ray.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def add(self, k: int) -> int:
        self.n += k
        return self.n


@ray.remote(num_cpus=0, max_concurrency=2)  # two threads: it answers its neighbour while it waits for its own replies
class Holder:
    def __init__(self) -> None:
        self.refs: list = []

    def blob(self, kib: int) -> bytes:
        return b"x" * (kib * 1024)

    def hold(self, peer, mb: int, objects: int, kib: int) -> int:
        if mb:
            self.refs.append(ray.put(b"h" * (mb * 1024 * 1024)))
        replies = [peer.blob.remote(kib) for _ in range(objects)]
        ray.wait(replies, num_returns=len(replies), fetch_local=True)
        self.refs += replies
        return len(self.refs)


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    """The workload's knobs; the capture script takes the same ones and passes them on."""
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--failing", type=int, default=20)
    parser.add_argument("--actor-calls", type=int, default=50)
    parser.add_argument("--objects", type=int, default=10)
    parser.add_argument("--object-mb", type=int, default=20)
    parser.add_argument("--hold-seconds", type=float, default=25.0)
    parser.add_argument("--holders", type=int, default=0)
    parser.add_argument("--holder-mb", type=int, default=4)
    parser.add_argument("--holder-objects", type=int, default=10)
    parser.add_argument("--holder-kib", type=int, default=50)


def main() -> None:
    p = argparse.ArgumentParser()
    add_workload_arguments(p)
    args = p.parse_args()

    t0 = time.time()
    ray.init()  # RAY_ADDRESS is set by the job supervisor
    job_id = ray.get_runtime_context().get_job_id()

    ok = ray.get([square.remote(i) for i in range(args.tasks)])
    assert ok == [i * i for i in range(args.tasks)]

    failed = 0
    for ref in [fail.remote(i) for i in range(args.failing)]:
        try:
            ray.get(ref)
        except ray.exceptions.RayTaskError:
            failed += 1
    assert failed == args.failing, failed

    counter = Counter.remote()
    total = ray.get([counter.add.remote(1) for _ in range(args.actor_calls)])[-1]
    assert total == args.actor_calls

    holders = [Holder.remote() for _ in range(args.holders)]
    held = ray.get(
        [
            h.hold.remote(holders[(i + 1) % len(holders)], args.holder_mb, args.holder_objects, args.holder_kib)
            for i, h in enumerate(holders)
        ]
    )

    size = args.object_mb * 1024 * 1024
    refs = [ray.put(bytes([i % 256]) * size) for i in range(args.objects)]
    put_at = time.time()
    time.sleep(args.hold_seconds)  # keep the objects referenced (in plasma) for the scrapes
    assert ray.get(refs[-1])[0] == (args.objects - 1) % 256
    del refs

    ray.kill(counter)
    for h in holders:
        ray.kill(h)
    print(
        json.dumps(
            {
                "job_id": job_id,
                "tasks_ok": len(ok),
                "tasks_failed": failed,
                "actor_calls": total,
                "objects": args.objects,
                "object_mb": args.object_mb,
                "objects_put_at": put_at,
                "hold_seconds": args.hold_seconds,
                "holders": len(holders),
                "holder_refs": sum(held),
                "seconds": round(time.time() - t0, 2),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
