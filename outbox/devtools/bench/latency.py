"""The `latency` scenario: commit-to-receipt time at a steady enqueue rate.

A worker process runs with wake-ups on; one producer commits single-message
transactions at a steady rate; the receiver (a thread of this process)
stamps each arrival. Latency is arrival time minus commit time, on the same
clock. With a worker URL of its own (a PgBouncer in front of the database),
the worker runs ``--pooled`` there and LISTENs, unless told not to, on the
database's own URL.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from outbox._redact import redact_url
from outbox.db.connect import connect
from outbox.devtools.bench.common import ensure_endpoint
from outbox.devtools.processes import spawn_worker
from outbox.devtools.receiver import Receiver
from outbox.produce.enqueue import enqueue

ENDPOINT = "bench-latency"


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1]


async def one_round(
    url: str,
    rate: float,
    seconds: float,
    worker_args: tuple[str, ...] = (),
    worker_url: str | None = None,
) -> dict[str, Any]:
    conn = await connect(url)
    committed: dict[str, float] = {}
    with Receiver() as rx:
        # The receiver is on loopback, which the SSRF guard refuses unless allowed.
        await ensure_endpoint(
            conn, ENDPOINT, "webhook", url=rx.url("/latency"), allow_networks=("127.0.0.0/8",)
        )
        # A worker of an earlier run may have left wakeup_until ahead: reset it,
        # so that "ready" below means this run's worker is listening.
        await conn.execute("UPDATE outbox.config SET wakeup_until = '-infinity'")
        if worker_url is None:
            proc = spawn_worker(url, "--concurrency", "100", *worker_args)
        else:
            proc = spawn_worker(
                worker_url, "--pooled", "--concurrency", "100", *worker_args,
                env={"OUTBOX_LISTEN_URL": url},
            )  # fmt: skip
        try:
            await _ready(conn, rx, listening="--no-listen" not in worker_args)
            total = int(rate * seconds)
            start = time.monotonic()
            for k in range(total):
                delay = start + k / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                async with conn.transaction():
                    message_id = await enqueue(conn, ENDPOINT, {"k": k})
                committed[str(message_id)] = time.time()
            rx.wait_for(lambda: committed.keys() <= rx.ids(), timeout=30)
        finally:
            proc.terminate()
            proc.wait(30)
            await conn.close()
    arrivals = {r.message_id: r.arrived for r in rx.snapshot() if r.message_id}
    latencies = [(arrivals[i] - t) * 1000 for i, t in committed.items() if i in arrivals]
    return {
        "messages": len(committed),
        "received": len(latencies),
        "p50_ms": _percentile(latencies, 0.50),
        "p95_ms": _percentile(latencies, 0.95),
        "p99_ms": _percentile(latencies, 0.99),
        "max_ms": max(latencies),
    }


async def _ready(conn: Any, rx: Receiver, *, listening: bool) -> None:
    """Until the worker listens (it asks producers for wake-ups), or, polling
    only, has delivered a first message (which the latencies leave out)."""
    deadline = time.monotonic() + 30
    if not listening:
        async with conn.transaction():
            first = str(await enqueue(conn, ENDPOINT, {"warm-up": True}))
        if not rx.wait_for(lambda: first in rx.ids(), timeout=30):
            raise RuntimeError("the worker did not become ready")
        return
    while not await conn.fetchval("SELECT wakeup_until > now() FROM outbox.config"):
        if time.monotonic() > deadline:
            raise RuntimeError("the worker did not become ready")
        await asyncio.sleep(0.05)


async def run(
    url: str,
    *,
    rate: float = 500.0,
    seconds: float = 10.0,
    rounds: int = 3,
    progress: Any = None,
    worker_args: tuple[str, ...] = (),
    worker_url: str | None = None,
) -> dict[str, Any]:
    """Each percentile is the median of its value in ``rounds`` separate runs;
    ``worker_args`` go to the worker (``--no-listen``: it polls only);
    ``worker_url``: where the worker connects, pooled (see the module)."""
    runs: list[dict[str, Any]] = []
    for _ in range(rounds):
        runs.append(await one_round(url, rate, seconds, worker_args, worker_url))
        if progress:
            progress("latency p50 ms", runs[-1]["p50_ms"])
            progress("latency p99 ms", runs[-1]["p99_ms"])
    result: dict[str, Any] = {
        "scenario": "latency",
        "worker_args": list(worker_args),
        "worker_through": None if worker_url is None else redact_url(worker_url),
        "rate_per_second": rate,
        "seconds": seconds,
        "messages": sum(r["messages"] for r in runs),
        "received": sum(r["received"] for r in runs),
        "rounds": runs,
    }
    for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
        result[key] = statistics.median(r[key] for r in runs)
    return result
