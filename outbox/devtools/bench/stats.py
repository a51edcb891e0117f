"""`outbox bench stats`: how long `SELECT * FROM outbox.stats` takes on a big
history -- by default 1,000,000 ledger rows, all of them in the last hour (the
hard case: the view's window holds them all), and 100,000 queued messages,
over 10 endpoints. The rows are written straight into the tables (the ledger's
rollup trigger included) under endpoint names of their own, and removed
afterwards."""

from __future__ import annotations

import statistics
import time
from typing import Any

from outbox.db.connect import connect
from outbox.devtools.bench.common import ensure_endpoint

PREFIX = "bench-stats-"


async def run(
    url: str, *, attempts: int = 1_000_000, queued: int = 100_000, rounds: int = 7,
    progress: Any = None,
) -> dict[str, Any]:  # fmt: skip
    conn = await connect(url)
    try:
        await fill_history(conn, attempts, queued)
        timings = []
        for _ in range(rounds):
            start = time.perf_counter()
            rows = await conn.fetch("SELECT * FROM outbox.stats")
            timings.append((time.perf_counter() - start) * 1000)
            if progress:
                progress("stats_ms", timings[-1])
        ours = [r for r in rows if r["endpoint"].startswith(PREFIX)]
        return {
            "scenario": "stats",
            "attempts": attempts,
            "queued": queued,
            "endpoints": len(ours),
            "stats_ms": {"runs": timings, "median": statistics.median(timings)},
            "delivered_last_hour": sum(r["delivered_last_hour"] for r in ours),
        }
    finally:
        await clear(conn)
        await conn.close()


async def fill_history(conn: Any, attempts: int, queued: int, dead: int = 0) -> None:
    """10 endpoints of their own with ``attempts`` ledger rows in the last hour,
    ``queued`` messages and ``dead`` dead letters (over the last day), analyzed."""
    await clear(conn)
    for i in range(1, 11):
        await ensure_endpoint(conn, f"{PREFIX}{i}")
    spacing_ms = 3_500_000 / attempts  # all within the last hour
    await conn.execute(
        "INSERT INTO outbox.attempts (message_id, endpoint, attempt, started_at, duration_ms,"
        " outcome) SELECT gen_random_uuid(), $1 || (1 + i % 10), 1,"
        " now() - make_interval(secs => i * $2 / 1000.0), (i % 500)::float8,"
        " CASE WHEN i % 7 = 0 THEN 'retrying' ELSE 'delivered' END"
        " FROM generate_series(1, $3) AS i",
        PREFIX,
        spacing_ms,
        attempts,
    )
    await conn.execute(
        "INSERT INTO outbox.messages (endpoint, payload)"
        " SELECT $1 || (1 + i % 10), '{}' FROM generate_series(1, $2) AS i",
        PREFIX,
        queued,
    )
    await conn.execute(
        "INSERT INTO outbox.dead_letters (message_id, endpoint, key, payload, attempts,"
        " last_error, reason, created_at, dead_at)"
        " SELECT gen_random_uuid(), $1 || (1 + i % 10), 'k' || (i % 1000), '{\"i\": 1}', 25,"
        " CASE WHEN i % 3 = 0 THEN 'timeout: 10 s' ELSE 'HTTP 500' END, 'too many attempts',"
        " now() - interval '2 days', now() - make_interval(secs => i * 86400.0 / $2)"
        " FROM generate_series(1, $2) AS i",
        PREFIX,
        dead,
    )
    for table in ("attempts", "messages", "endpoints", "attempt_minutes", "latency_minutes",
                  "dead_letters"):  # fmt: skip
        await conn.execute(f"ANALYZE outbox.{table}")


async def clear(conn: Any) -> None:
    """Remove what `fill_history` wrote."""
    like = PREFIX + "%"
    await conn.execute("DELETE FROM outbox.dead_letters WHERE endpoint LIKE $1", like)
    await conn.execute("DELETE FROM outbox.messages WHERE endpoint LIKE $1", like)
    await conn.execute("DELETE FROM outbox.attempts WHERE endpoint LIKE $1", like)
    await conn.execute("DELETE FROM outbox.attempt_minutes WHERE endpoint LIKE $1", like)
    await conn.execute("DELETE FROM outbox.latency_minutes WHERE endpoint LIKE $1", like)
    await conn.execute("DELETE FROM outbox.endpoints WHERE name LIKE $1", like)
