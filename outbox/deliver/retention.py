"""Retention: the ledger, dead letters and spent idempotency keys are pruned
by age (``outbox.config.attempts_retention``, ``dead_letters_retention`` and
``dedupe_window``), in small batches, each its own short transaction, by one
pruner at a time across the fleet (a session advisory lock). Workers do it
every few minutes; ``outbox prune`` does it now.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from outbox.db.queries import QUERIES

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn = asyncpg.Connection | PoolConnectionProxy[asyncpg.Record]

BATCH = 5000


@dataclass(frozen=True, slots=True)
class Pruned:
    attempts: int = 0
    dead_letters: int = 0
    idempotency_keys: int = 0

    @property
    def total(self) -> int:
        return self.attempts + self.dead_letters + self.idempotency_keys


async def prune(
    conn: Conn,
    *,
    batch: int = BATCH,
    max_batches: int | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> Pruned | None:
    """Prune what is past retention; None if another pruner is at it.

    ``max_batches`` bounds the work per table (a worker's periodic run);
    without it everything due goes."""
    if not await conn.fetchval(QUERIES["prune_lock"]):
        return None
    try:
        attempts = 0
        for _ in _rounds(max_batches):
            row = await conn.fetchrow(QUERIES["prune_attempts"], batch)
            assert row is not None
            attempts += row["deleted"]
            if progress is not None and row["deleted"]:
                progress("attempts", row["deleted"])
            if row["reached_young"] or not row["deleted"]:
                break
        await conn.fetchval(QUERIES["prune_rollups"])
        dead = await _drain(
            conn, "prune_dead_letters", "dead_letters", batch, max_batches, progress
        )
        keys = await _drain(
            conn, "prune_idempotency_keys", "idempotency_keys", batch, max_batches, progress
        )
        return Pruned(attempts, dead, keys)
    finally:
        await conn.fetchval(QUERIES["prune_unlock"])


async def _drain(
    conn: Conn,
    query: str,
    what: str,
    batch: int,
    max_batches: int | None,
    progress: Callable[[str, int], None] | None,
) -> int:
    total = 0
    for _ in _rounds(max_batches):
        n = int(await conn.fetchval(QUERIES[query], batch))
        total += n
        if progress is not None and n:
            progress(what, n)
        if n < batch:
            break
    return total


def _rounds(limit: int | None) -> range:
    return range(limit if limit is not None else 1 << 62)
