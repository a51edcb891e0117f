"""How a worker's connections are set up: straight to PostgreSQL, or through a
connection pooler in transaction mode (PgBouncer), where nothing survives a
transaction.

Direct, the worker's settings are its sessions' own (sent at connect), and
each statement is its own transaction. Pooled, a pooler refuses those
settings at connect and would hand them to other clients anyway, so every
statement runs in a transaction that sets them first (``SET LOCAL``, gone at
its end), and prepared statements are not cached (asyncpg then parses each
statement in the same exchange that runs it). Nothing else a worker does
needs a session: its advisory locks are per transaction, VACUUM skips a
table another vacuum holds, and LISTEN runs on a direct connection of its
own (``OUTBOX_LISTEN_URL``) or not at all (``--no-listen``).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from outbox.db.connect import asyncpg_url

APPLICATION_NAME = "outbox-worker"

# The worker's statements each have one right plan: walk messages_first_idx or
# messages_retry_idx (or messages_lease_idx) in order and stop after the
# batch. The hot table's statistics are always stale (a bulk enqueue lands
# between two autoanalyze runs); with 50,000 fresh rows and old statistics the
# planner chose a bitmap scan that sorted the whole backlog on every claim
# (22 ms per claim, and growing with the backlog) instead of 0.5 ms. These
# settings apply only to the worker's own connections.
WORKER_SETTINGS = {
    "enable_seqscan": "off",
    "enable_bitmapscan": "off",
    "enable_sort": "off",
    # With sorts disabled, any plan that must sort costs ~1e10, which is past
    # jit_above_cost: each such statement was JIT-compiled (~110 ms, every time).
    "jit": "off",
    # A result the worker records may be lost in a crash of PostgreSQL itself: the
    # message is then delivered again (at least once), never lost.
    "synchronous_commit": "off",
}
WORKER_SESSION_SETTINGS = {**WORKER_SETTINGS, "application_name": APPLICATION_NAME}

# Pooled: what opens each transaction (one round trip, before the statement).
POOLED_BEGIN = "BEGIN; " + " ".join(f"SET LOCAL {k} = {v};" for k, v in WORKER_SETTINGS.items())


def pool_options(pooled: bool) -> dict[str, Any]:
    """asyncpg connection options of a worker's pool."""
    if pooled:
        # application_name is one of the few startup parameters PgBouncer passes on.
        return {
            "statement_cache_size": 0,
            "server_settings": {"application_name": APPLICATION_NAME},
        }
    return {"server_settings": WORKER_SESSION_SETTINGS}


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Return a connection to the pool as it is. asyncpg's default reset (advisory
    unlock, CLOSE ALL, UNLISTEN, RESET ALL) is a round trip on every release, 5%
    of a worker's time under load; worker connections keep no state between
    uses: session settings are the connection's own (or, pooled, each
    transaction's), advisory locks are per transaction, and LISTEN runs on a
    connection of its own outside the pool. A transaction left open is still
    rolled back: asyncpg does that before calling this."""


async def open_pool(url: str, *, pooled: bool, max_size: int = 4) -> asyncpg.Pool:
    """A worker's pool on ``url`` (raises what connecting raised)."""
    pool = await asyncpg.create_pool(
        asyncpg_url(url),
        min_size=1,
        max_size=max_size,
        command_timeout=60,
        reset=_keep_session,
        **pool_options(pooled),
    )
    assert pool is not None
    return pool
