"""`outbox soak`: constant load for a long time, memory and throughput minute by minute.

A producer in this process commits ``rate`` webhook messages a second (a
transaction every 100 ms); worker processes deliver them to the benchmark
receiver (a process of its own) which answers a share of requests with 503,
so retries run all along; retention and the workers' own vacuuming run as in
production. Every minute one line: what was enqueued, what the
``outbox.throughput`` view says was delivered and failed and the delivery
latency, the queue, each worker's resident memory, and the outbox tables'
size on disk. A steady system shows flat lines: memory that keeps growing is
a leak, a queue that keeps growing is a worker that cannot keep up, and
throughput that sinks while the rate stays is something getting slower.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import asyncpg
import psutil

from outbox.db.connect import connect
from outbox.devtools.bench.http import add_endpoint
from outbox.devtools.bench.transport import start_receiver
from outbox.devtools.processes import spawn_worker
from outbox.produce.enqueue import enqueue_many

ENDPOINT = "soak"
TICK = 0.1  # seconds between producer transactions


@dataclass
class Minute:
    minute: int  # since the start
    enqueued: int
    delivered: int  # from outbox.throughput, for the wall-clock minute just ended
    failed: int
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    queued: int
    worker_rss_mb: list[float]
    tables_mb: float


@dataclass
class Soak:
    minutes: list[Minute]
    rate: float
    workers: int
    concurrency: int
    fail_share: float
    worker_restarts: int

    def summary(self) -> dict[str, Any]:
        """Figures over the run, skipping the first two minutes (start-up, warm-up)."""
        steady = self.minutes[2:] or self.minutes
        rss = [max(m.worker_rss_mb) for m in steady if m.worker_rss_mb]
        delivered = [m.delivered for m in steady]
        return {
            "minutes": len(self.minutes),
            "enqueued": sum(m.enqueued for m in self.minutes),
            "delivered_per_minute": {
                "min": min(delivered),
                "median": statistics.median(delivered),
                "max": max(delivered),
            },
            "rss_mb_first": rss[0] if rss else None,
            "rss_mb_last": rss[-1] if rss else None,
            "rss_mb_max": max(rss) if rss else None,
            "queued_max": max(m.queued for m in steady),
            "queued_last": self.minutes[-1].queued,
            "tables_mb_last": self.minutes[-1].tables_mb,
            "worker_restarts": self.worker_restarts,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": "soak",
            "rate": self.rate,
            "workers": self.workers,
            "concurrency": self.concurrency,
            "fail_share": self.fail_share,
            "summary": self.summary(),
            "by_minute": [asdict(m) for m in self.minutes],
        }


def render_minute(m: Minute) -> str:
    latency = (
        f"p50 {m.p50_latency_ms:.0f} ms p95 {m.p95_latency_ms:.0f} ms"
        if m.p50_latency_ms is not None and m.p95_latency_ms is not None
        else "latency -"
    )
    rss = "/".join(f"{v:.0f}" for v in m.worker_rss_mb) or "-"
    return (
        f"minute {m.minute:>3}: enqueued {m.enqueued:>7,}  delivered {m.delivered:>7,}  "
        f"failed {m.failed:>6,}  {latency}  queued {m.queued:>6,}  "
        f"worker RSS {rss} MB  tables {m.tables_mb:,.0f} MB"
    )


START_SHARE = 0.25

_MINUTE = """
SELECT coalesce(sum(delivered), 0) AS delivered, coalesce(sum(failed), 0) AS failed,
       max(p50_latency_ms) AS p50, max(p95_latency_ms) AS p95
  FROM outbox.throughput WHERE endpoint = $1 AND minute = $2
"""
_TABLES = """
SELECT sum(pg_total_relation_size(c.oid)) / 1048576.0
  FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
 WHERE n.nspname = 'outbox' AND c.relkind = 'r'
"""


async def _produce(url: str, rate: float, stop: asyncio.Event, counter: list[int]) -> None:
    """Commit ``rate`` messages a second, a transaction every TICK, until stopped."""
    conn = await connect(url)
    try:
        owed = 0.0
        next_tick = time.monotonic()
        while not stop.is_set():
            owed += rate * TICK
            n = int(owed)
            owed -= n
            if n:
                async with conn.transaction():
                    await enqueue_many(
                        conn,
                        [
                            {"endpoint": ENDPOINT, "payload": {"n": counter[0] + i}}
                            for i in range(n)
                        ],
                    )
                counter[0] += n
            next_tick += TICK
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    finally:
        await conn.close()


def _rss_mb(proc: Any) -> float | None:
    try:
        return float(psutil.Process(proc.pid).memory_info().rss) / 1048576
    except psutil.Error:
        return None


async def run(
    url: str,
    *,
    minutes: float = 30.0,
    rate: float = 1000.0,
    workers: int = 2,
    concurrency: int = 100,
    fail_share: float = 0.02,
    on_minute: Callable[[Minute], None] | None = None,
) -> Soak:
    receiver, target = start_receiver("--fail-share", str(fail_share))
    try:
        conn: asyncpg.Connection = await connect(url)
    except BaseException:
        receiver.terminate()
        raise
    fleet = _Fleet(url, concurrency)
    stop = asyncio.Event()
    counter = [0]
    soak = Soak([], rate, workers, concurrency, fail_share, 0)
    now: datetime
    try:
        await add_endpoint(conn, target, ENDPOINT)
        # Lines follow wall-clock minutes, as outbox.throughput does, read a
        # second into the next one (the last results are flushed by then).
        # One line per wall-clock minute, ceil(minutes) of them; the first
        # covers the part of a minute the run started in, so a run starts at
        # least START_SHARE of a minute before the next one (else it waits for
        # it): a first line of a few seconds would hold the workers' start only.
        now = await conn.fetchval("SELECT clock_timestamp()")
        left = 60 - now.second - now.microsecond / 1e6
        if left < 60 * START_SHARE:
            await asyncio.sleep(left)
        fleet.start(workers)
        producer = asyncio.create_task(_produce(url, rate, stop, counter))
        while len(soak.minutes) < math.ceil(minutes):
            now = await conn.fetchval("SELECT clock_timestamp()")
            await asyncio.sleep(61 - now.second - now.microsecond / 1e6)
            if producer.done():
                producer.result()  # raise what stopped it
            fleet.replace_dead()  # report it, and keep the load on
            enqueued = counter[0] - sum(m.enqueued for m in soak.minutes)
            soak.minutes.append(await _minute(conn, len(soak.minutes) + 1, enqueued, fleet))
            if on_minute:
                on_minute(soak.minutes[-1])
        stop.set()
        await producer
    finally:
        stop.set()
        fleet.stop()
        receiver.terminate()
        receiver.wait(10)
        await conn.close()
    soak.worker_restarts = fleet.restarts
    return soak


class _Fleet:
    """The soak's worker processes."""

    def __init__(self, url: str, concurrency: int) -> None:
        self.url = url
        self.concurrency = concurrency
        self.procs: list[Any] = []
        self.restarts = 0

    def _spawn(self) -> Any:
        # Quick retries (the receiver's 503s are momentary), as a service
        # with a flaky but healthy receiver would configure them.
        env = {"OUTBOX_BACKOFF_BASE": "0.5", "OUTBOX_BACKOFF_CAP": "10"}
        return spawn_worker(self.url, "--concurrency", str(self.concurrency), env=env)

    def start(self, n: int) -> None:
        self.procs = [self._spawn() for _ in range(n)]

    def replace_dead(self) -> None:
        for i, proc in enumerate(self.procs):
            if proc.poll() is not None:
                self.restarts += 1
                self.procs[i] = self._spawn()

    def rss_mb(self) -> list[float]:
        return [v for p in self.procs if (v := _rss_mb(p)) is not None]

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _minute(conn: asyncpg.Connection, number: int, enqueued: int, fleet: _Fleet) -> Minute:
    """The wall-clock minute just ended, from outbox.throughput and the tables."""
    ended: datetime = await conn.fetchval(
        "SELECT date_trunc('minute', now()) - interval '1 minute'"
    )
    row = await conn.fetchrow(_MINUTE, ENDPOINT, ended)
    assert row is not None
    queued = await conn.fetchval(
        "SELECT count(*) FROM outbox.messages WHERE endpoint = $1", ENDPOINT
    )
    return Minute(
        minute=number,
        enqueued=enqueued,
        delivered=int(row["delivered"]),
        failed=int(row["failed"]),
        p50_latency_ms=row["p50"],
        p95_latency_ms=row["p95"],
        queued=int(queued),
        worker_rss_mb=fleet.rss_mb(),
        tables_mb=float(await conn.fetchval(_TABLES)),
    )
