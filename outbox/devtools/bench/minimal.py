"""A second ceiling for the `drain` scenario: the hot path's limit on this
machine, on minimal tables of its own.

The shape: uuid ids, jsonb payloads and a ledger row per attempt; two loops
on one event loop (uvloop under `outbox bench`), each with its connection,
each claiming 200 rows under a fresh lease token with ``FOR UPDATE SKIP
LOCKED``, then one statement that deletes the claimed rows under their token
and inserts their ledger rows. No per-message Python beyond building two
arrays, no endpoint, no limits: what any queue with a lease and a ledger
must at least pay here.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg

from outbox.db.connect import connect
from outbox.deliver.session import WORKER_SESSION_SETTINGS

SCHEMA = "outbox_bench_minimal"
BATCH = 200
LOOPS = 2

_SETUP = f"""
DROP SCHEMA IF EXISTS {SCHEMA} CASCADE;
CREATE SCHEMA {SCHEMA};
CREATE TABLE {SCHEMA}.jobs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq bigint GENERATED ALWAYS AS IDENTITY,
    payload jsonb NOT NULL,
    lease uuid,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX jobs_due_idx ON {SCHEMA}.jobs (seq) WHERE lease IS NULL;
CREATE TABLE {SCHEMA}.ledger (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id uuid NOT NULL,
    started_at timestamptz NOT NULL,
    outcome text NOT NULL);
"""
_FILL = f"""
INSERT INTO {SCHEMA}.jobs (payload)
SELECT jsonb_build_object('event', 'order.created', 'n', g) FROM generate_series(1, $1) AS g
"""
_CLAIM = f"""
WITH due AS (SELECT id FROM {SCHEMA}.jobs WHERE lease IS NULL ORDER BY seq LIMIT {BATCH}
             FOR UPDATE SKIP LOCKED)
UPDATE {SCHEMA}.jobs AS j SET lease = $1 FROM due WHERE j.id = due.id RETURNING j.id, j.payload
"""
_FINISH = f"""
WITH gone AS (DELETE FROM {SCHEMA}.jobs AS j WHERE j.id = ANY($1::uuid[]) AND j.lease = $2
              RETURNING j.id)
INSERT INTO {SCHEMA}.ledger (job_id, started_at, outcome)
SELECT id, now(), 'delivered' FROM gone
"""


async def rate(url: str, n: int) -> float:
    """Messages per second through the minimal hot path, for a backlog of ``n``."""
    admin = await connect(url)
    try:
        await admin.execute(_SETUP)
        await admin.execute(_FILL, n)
        await admin.execute(f"VACUUM ANALYZE {SCHEMA}.jobs")
        await admin.execute("CHECKPOINT")
        # The worker's session settings (asynchronous commit among them), as for
        # the other ceiling: each pays the same for a commit.
        conns = [
            await asyncpg.connect(url, server_settings=WORKER_SESSION_SETTINGS)
            for _ in range(LOOPS)
        ]
        try:
            start = time.perf_counter()
            done = sum(await asyncio.gather(*(_loop(c) for c in conns)))
            elapsed = time.perf_counter() - start
        finally:
            for c in conns:
                await c.close()
        return done / elapsed
    finally:
        await admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        await admin.close()


async def _loop(conn: asyncpg.Connection) -> int:
    done = 0
    while True:
        token = uuid.uuid4()
        rows = await conn.fetch(_CLAIM, token)
        if not rows:
            return done
        await conn.execute(_FINISH, [r["id"] for r in rows], token)
        done += len(rows)
