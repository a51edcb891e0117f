"""The `drain` scenario: one worker process empties a backlog of null-channel messages.

Held against two ceilings measured in the same run:

* a batched raw-SQL loop on the real schema that claims 500 rows per
  statement with FOR UPDATE SKIP LOCKED, then deletes them and writes their
  ledger rows from arrays in one statement: what PostgreSQL allows on these
  tables with no per-message Python work;
* the minimal hot path (`outbox.devtools.bench.minimal`): the same shape on
  minimal tables of its own, two loops: the hot path's limit on this machine.
"""

from __future__ import annotations

import time
from typing import Any

from outbox._redact import redact_url
from outbox.db.connect import connect
from outbox.deliver.session import WORKER_SESSION_SETTINGS
from outbox.devtools.bench import minimal
from outbox.devtools.bench.common import Figure, drain_rate, ensure_endpoint, fill_backlog
from outbox.devtools.processes import spawn_worker

ENDPOINT = "bench-drain"

_RAW_CLAIM = """
WITH due AS (SELECT id FROM outbox.messages
              WHERE endpoint = 'bench-drain' AND lease_token IS NULL AND attempts = 0
                AND available_at <= now()
              ORDER BY priority DESC, available_at, seq LIMIT 500 FOR UPDATE SKIP LOCKED)
UPDATE outbox.messages AS m SET lease_token = gen_random_uuid(), lease_expires_at = now() + interval '1 minute'
  FROM due WHERE m.id = due.id RETURNING m.id, m.lease_token
"""
_RAW_COMPLETE = """
WITH gone AS (DELETE FROM outbox.messages AS m USING unnest($1::uuid[], $2::uuid[]) AS r(id, token)
               WHERE m.id = r.id AND m.lease_token = r.token RETURNING m.id, m.endpoint, m.attempts)
INSERT INTO outbox.attempts (message_id, endpoint, attempt, started_at, duration_ms, outcome)
SELECT id, endpoint, attempts + 1, now(), 0, 'delivered' FROM gone
"""


async def _fill(url: str, n: int, *, vacuum: bool = True) -> None:
    conn = await connect(url)
    try:
        await ensure_endpoint(conn, ENDPOINT)
        await fill_backlog(conn, ENDPOINT, n, vacuum=vacuum)
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def raw_sql_rate(url: str, n: int) -> float:
    await _fill(url, n)
    # The worker's own session settings (asynchronous commit among them), so
    # that the ceiling and the worker pay the same for a commit.
    conn = await connect(url, server_settings=WORKER_SESSION_SETTINGS)
    try:
        start = time.perf_counter()
        done = 0
        while True:
            rows = await conn.fetch(_RAW_CLAIM)
            if not rows:
                break
            await conn.execute(
                _RAW_COMPLETE, [r["id"] for r in rows], [r["lease_token"] for r in rows]
            )
            done += len(rows)
        return done / (time.perf_counter() - start)
    finally:
        await conn.close()


async def worker_rate(
    url: str, n: int, concurrency: int, worker_url: str | None = None, *, vacuum: bool = True
) -> float:
    """One worker process's drain rate; ``worker_url``: it connects there (a pooler
    in front of the database) with --pooled, LISTENing on ``url``; not ``vacuum``:
    on a cold table (`fill_backlog`)."""
    await _fill(url, n, vacuum=vacuum)
    conn = await connect(url)
    since = await conn.fetchval("SELECT clock_timestamp()")
    flags = ("--concurrency", str(concurrency), "--batch-size", "500", "--poll-interval", "0.05")
    if worker_url is None:
        proc = spawn_worker(url, *flags)
    else:
        proc = spawn_worker(worker_url, *flags, "--pooled", env={"OUTBOX_LISTEN_URL": url})
    try:
        return await drain_rate(conn, ENDPOINT, n, since)
    finally:
        proc.terminate()
        proc.wait(30)
        await conn.close()


async def run(
    url: str,
    *,
    messages: int = 50_000,
    rounds: int = 3,
    concurrency: int = 500,
    progress: Any = None,
    worker_url: str | None = None,
) -> dict[str, Any]:
    """The worker against the raw-SQL ceiling; with ``worker_url``, also a worker
    through it (a pooler's URL, --pooled), in the same rounds."""
    ours = Figure("drain_worker", "messages/s")
    raw = Figure("drain_raw_sql_ceiling", "messages/s")
    least = Figure("drain_minimal_hot_path_ceiling", "messages/s")
    cold = Figure("drain_worker_cold_table", "messages/s")
    pooled = Figure("drain_worker_pooled", "messages/s")
    for _ in range(rounds):
        ours.rounds.append(await worker_rate(url, messages, concurrency))
        raw.rounds.append(await raw_sql_rate(url, messages))
        least.rounds.append(await minimal.rate(url, messages))
        cold.rounds.append(await worker_rate(url, messages, concurrency, vacuum=False))
        if worker_url is not None:
            pooled.rounds.append(await worker_rate(url, messages, concurrency, worker_url))
        if progress:
            for figure in (ours, raw, least, cold, pooled):
                if figure.rounds:
                    progress(figure.name, figure.rounds[-1])
    through = {}
    if worker_url is not None:
        through = {
            "worker_through": redact_url(worker_url),
            pooled.name: pooled.to_json(),
            "pooled_ratio_to_direct": pooled.median / ours.median,
        }
    return {
        "scenario": "drain",
        "messages": messages,
        "concurrency": concurrency,
        ours.name: ours.to_json(),
        raw.name: raw.to_json(),
        least.name: least.to_json(),
        "ratio_to_ceiling": ours.median / raw.median,
        "ratio_to_minimal_hot_path": ours.median / least.median,
        cold.name: cold.to_json(),
        # Right after a burst, before any ANALYZE, against the vacuumed rate.
        "cold_ratio_to_vacuumed": cold.median / ours.median,
        "ratio_by_round": [o / r for o, r in zip(ours.rounds, raw.rounds, strict=True)],
        **through,
    }
