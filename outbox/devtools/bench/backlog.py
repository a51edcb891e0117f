"""The `backlog` scenario: does a worker slow down as it works through a big backlog?

One worker process drains 1,000,000 null-channel messages. The rates come
from the ledger afterwards, not from polling during the run (counting a
million-row table would load the server being measured): each delivered
message has an attempt row with the time the attempt started, so the rate of
the first tenth is 100,000 / (start of message 100,000 - start of message 1),
and the same for the last tenth. A worker that scanned ever more dead rows or
lost its plan would show it as a last tenth slower than the first.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import datetime
from typing import Any

from outbox.db.connect import connect
from outbox.devtools.bench.common import Figure, bar, ensure_endpoint, fill_backlog
from outbox.devtools.processes import spawn_worker

ENDPOINT = "bench-backlog"

_DELETED = "SELECT n_tup_del FROM pg_stat_user_tables WHERE relid = 'outbox.messages'::regclass"


async def tenth_rates(conn: Any, began: datetime, n: int) -> tuple[float, float]:
    """Messages/s over the first and the last tenth of the ``n`` deliveries since
    ``began``, from the start times at four positions of the ledger's order (a
    backlog of 10,000,000 is not fetched whole)."""
    tenth = n // 10
    if tenth < 2:
        raise ValueError("too few deliveries to split into tenths")

    async def start(position: int) -> datetime:
        at: datetime = await conn.fetchval(
            "SELECT started_at FROM outbox.attempts WHERE endpoint = $1 AND started_at >= $2"
            " ORDER BY started_at OFFSET $3 LIMIT 1",
            ENDPOINT,
            began,
            position,
        )
        return at

    first = (await start(tenth - 1) - await start(0)).total_seconds()
    last = (await start(n - 1) - await start(n - tenth)).total_seconds()
    return (tenth - 1) / first, (tenth - 1) / last


async def one_round(
    url: str, n: int, concurrency: int, processes: int = 1
) -> tuple[float, float, float, int]:
    """(first tenth's rate, last tenth's rate, overall rate, worker processes that
    delivered) of one drain by ``processes`` worker processes (one supervisor's)."""
    conn = await connect(url)
    try:
        await ensure_endpoint(conn, ENDPOINT)
        await fill_backlog(conn, ENDPOINT, n)  # the endpoint's old ledger rows go too
        await conn.execute("CHECKPOINT")
        deleted0 = await conn.fetchval(_DELETED)
        began = await conn.fetchval("SELECT clock_timestamp()")
        flags = (
            "--concurrency",
            str(concurrency),
            "--batch-size",
            "500",
            "--poll-interval",
            "0.05",
        )
        proc = spawn_worker(url, *flags, "--processes", str(processes))
        try:
            started = time.perf_counter()
            with bar(f"draining {ENDPOINT}", n) as update:
                while True:
                    # Statistics lag by up to a second: a cheap progress signal,
                    # confirmed against the table before stopping.
                    done = await conn.fetchval(_DELETED) - deleted0
                    update(min(done, n))
                    if done >= n and not await conn.fetchval(
                        "SELECT EXISTS (SELECT 1 FROM outbox.messages WHERE endpoint = $1)",
                        ENDPOINT,
                    ):
                        break
                    if time.perf_counter() - started > 3600:
                        raise RuntimeError("the backlog did not drain within an hour")
                    await asyncio.sleep(0.5)
        finally:
            proc.terminate()
            proc.wait(30)
        row = await conn.fetchrow(
            "SELECT count(*) AS n, min(started_at) AS first, max(started_at) AS last,"
            " count(DISTINCT worker_id) AS workers FROM outbox.attempts WHERE endpoint = $1 AND started_at >= $2",
            ENDPOINT,
            began,
        )
        assert row is not None  # an aggregate always has its row
        if row["n"] < n:
            raise RuntimeError(f"only {row['n']} of {n} deliveries were recorded")
        first, last = await tenth_rates(conn, began, row["n"])
        overall = (row["n"] - 1) / (row["last"] - row["first"]).total_seconds()
        await conn.execute("DELETE FROM outbox.attempts WHERE endpoint = $1", ENDPOINT)
        return first, last, overall, row["workers"]
    finally:
        await conn.close()


async def run(
    url: str,
    *,
    messages: int = 1_000_000,
    rounds: int = 3,
    concurrency: int = 500,
    processes: int = 1,
    progress: Any = None,
) -> dict[str, Any]:
    first = Figure("backlog_first_tenth", "messages/s")
    last = Figure("backlog_last_tenth", "messages/s")
    overall = Figure("backlog_overall", "messages/s")
    ratios: list[float] = []
    seen: list[int] = []
    for _ in range(rounds):
        f, la, o, workers = await one_round(url, messages, concurrency, processes)
        seen.append(workers)
        first.rounds.append(f)
        last.rounds.append(la)
        overall.rounds.append(o)
        ratios.append(la / f)
        if progress:
            progress(first.name, f)
            progress(last.name, la)
    return {
        "scenario": "backlog",
        "messages": messages,
        "concurrency": concurrency,
        "processes": processes,
        "processes_that_delivered_by_round": seen,
        first.name: first.to_json(),
        last.name: last.to_json(),
        overall.name: overall.to_json(),
        "last_vs_first": statistics.median(ratios),
        "last_vs_first_by_round": ratios,
    }
