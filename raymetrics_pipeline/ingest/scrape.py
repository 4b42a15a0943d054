"""Concurrent scrapes of Prometheus endpoints, each cut off at a total deadline, and a cheap probe of them.

httpx's timeouts are per phase (connect, each read), so an endpoint that drips a byte a
second would never time out; the whole request is therefore wrapped in one deadline.
"""

from __future__ import annotations

import asyncio
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from dataclasses import dataclass

import httpx

from raymetrics_pipeline.common import USER_AGENT

# Fluent Bit sends no Accept header and gets text 0.0.4; ask for exactly that so
# prometheus_client targets do not answer in OpenMetrics.
ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
MAX_BODY_BYTES = 64 * 1024 * 1024
# Scrapes in flight at once. An exporter takes tens of milliseconds to render its answer: with 1,000 targets
# that answer after 100 ms, 16 at a time took 8 s, 64 at a time 3 s (benchmarks/thousand_targets.py).
MAX_CONCURRENT_SCRAPES = 64


@dataclass
class ScrapeResult:
    target: str
    scrape_time_unix_nano: int
    duration_seconds: float
    status: int | None = None
    body: str = ""
    bytes: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


async def _scrape_one(client: httpx.AsyncClient, target: str, limit: asyncio.Semaphore, timeout: float) -> ScrapeResult:
    async with limit:
        started = time.monotonic()

        async def fetch() -> ScrapeResult:
            async with client.stream("GET", f"http://{target}/metrics") as response:
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        raise ValueError(f"body larger than {MAX_BODY_BYTES} bytes")
                    chunks.append(chunk)
            result = ScrapeResult(target, time.time_ns(), time.monotonic() - started, response.status_code)
            result.bytes = size
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}"
            else:
                result.body = b"".join(chunks).decode("utf-8", errors="replace")
            return result

        try:
            return await asyncio.wait_for(fetch(), timeout)
        except TimeoutError:
            error = f"no complete response within {timeout:g} s"
        except httpx.HTTPError as error_:
            error = f"{type(error_).__name__}: {error_}" if str(error_) else type(error_).__name__
        except ValueError as error_:
            error = str(error_)
        return ScrapeResult(target, time.time_ns(), time.monotonic() - started, error=error)


async def scrape_all_async(
    targets: list[str], timeout_seconds: float, max_concurrency: int = MAX_CONCURRENT_SCRAPES
) -> list[ScrapeResult]:
    limit = asyncio.Semaphore(max_concurrency)
    limits = httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=0)
    headers = {"Accept": ACCEPT, "User-Agent": USER_AGENT}
    async with httpx.AsyncClient(timeout=timeout_seconds, limits=limits, headers=headers, trust_env=False) as client:
        return list(await asyncio.gather(*(_scrape_one(client, t, limit, timeout_seconds) for t in targets)))


def scrape_all(
    targets: list[str], timeout_seconds: float, max_concurrency: int = MAX_CONCURRENT_SCRAPES
) -> list[ScrapeResult]:
    """Scrape every target at once; one slow, dead or broken target never holds up the others."""
    return asyncio.run(scrape_all_async(targets, timeout_seconds, max_concurrency))


@dataclass(frozen=True)
class Probe:
    """Whether a target accepted a TCP connection; ``error`` says why not."""

    target: str
    error: str = ""

    @property
    def answers(self) -> bool:
        return not self.error


def _split(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


def _connect(target: str, timeout_seconds: float) -> Probe:
    try:
        with socket.create_connection(_split(target), timeout=timeout_seconds):
            return Probe(target)
    except ConnectionRefusedError:
        return Probe(target, "connection refused")
    except TimeoutError:
        return Probe(target, f"no answer within {timeout_seconds:g} s")
    except socket.gaierror as error:
        return Probe(target, f"unknown host ({error.strerror})")
    except (OSError, ValueError) as error:
        return Probe(target, getattr(error, "strerror", None) or str(error) or type(error).__name__)


def probe_all(targets: list[str], timeout_seconds: float = 0.5, max_concurrency: int = 64) -> list[Probe]:
    """Try a TCP connection to every ``host:port`` at once, in about ``timeout_seconds`` at most in total.

    Only opens and closes a connection (no HTTP), so it costs the targets nothing. A target not
    done in time (a slow name lookup, more targets than ``max_concurrency``) counts as not answering.
    """
    if not targets:
        return []
    pool = ThreadPoolExecutor(max_workers=min(max_concurrency, len(targets)), thread_name_prefix="probe")
    futures = [pool.submit(_connect, target, timeout_seconds) for target in targets]
    done, _ = wait_for_futures(futures, timeout=timeout_seconds + 0.2)
    pool.shutdown(wait=False, cancel_futures=True)  # never wait for a lookup that hangs
    return [
        future.result() if future in done else Probe(target, f"no answer within {timeout_seconds:g} s")
        for target, future in zip(targets, futures, strict=True)
    ]
