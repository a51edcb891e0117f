"""The `memory` scenario: a worker's resident memory at ``--concurrency 500``.

One worker process delivers a webhook backlog to the benchmark receiver (a
process of its own) with 500 requests in flight, the ledger written as usual.
Its resident set is sampled twice a second, and its peak (the kernel's
``VmHWM``, which catches what sampling would miss) read before it stops.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

from outbox.db.connect import connect
from outbox.devtools.bench.common import Figure, bar, fill_backlog, remaining
from outbox.devtools.bench.http import ENDPOINT, add_endpoint
from outbox.devtools.bench.transport import start_receiver
from outbox.devtools.processes import spawn_worker


def _status_kb(pid: int, field: str) -> int:
    """A ``VmRSS``/``VmHWM``-style field of /proc/<pid>/status, in kB (Linux)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


async def one_round(db: str, url: str, n: int, concurrency: int) -> tuple[float, float]:
    """(peak RSS, median RSS while delivering), in MB."""
    conn = await connect(db)
    try:
        await add_endpoint(conn, url)
        await fill_backlog(conn, ENDPOINT, n)
        proc = spawn_worker(db, "--concurrency", str(concurrency), "--poll-interval", "0.05")
        samples: list[int] = []
        try:
            with bar(f"delivering at concurrency {concurrency}", n) as update:
                while (left := await remaining(conn, ENDPOINT)) > 0:
                    if proc.poll() is not None:
                        raise RuntimeError(f"the worker exited with {proc.returncode}")
                    if left < n:  # delivering: the pool and the sessions are up
                        samples.append(_status_kb(proc.pid, "VmRSS"))
                    update(n - left)
                    await asyncio.sleep(0.5)
            peak = _status_kb(proc.pid, "VmHWM")
        finally:
            proc.terminate()
            proc.wait(30)
        steady = statistics.median(samples) if samples else float(peak)
        return peak / 1024, steady / 1024
    finally:
        await conn.close()


async def run(
    db: str,
    *,
    messages: int = 50_000,
    concurrency: int = 500,
    rounds: int = 3,
    progress: Any = None,
) -> dict[str, Any]:
    receiver, url = start_receiver()
    peak = Figure("memory_peak_rss", "MB")
    steady = Figure("memory_median_rss", "MB")
    try:
        for _ in range(rounds):
            p, s = await one_round(db, url, messages, concurrency)
            peak.rounds.append(p)
            steady.rounds.append(s)
            if progress:
                progress(peak.name, p)
    finally:
        receiver.terminate()
        receiver.wait(10)
    return {
        "scenario": "memory",
        "messages": messages,
        "concurrency": concurrency,
        peak.name: peak.to_json(),
        steady.name: steady.to_json(),
        "max_peak_rss_mb": max(peak.rounds),
    }
