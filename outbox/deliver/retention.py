"""Retention: the ledger, dead letters, kept payloads of delivered messages,
and spent idempotency keys and publications are pruned by age
(``outbox.config.attempts_retention``, ``dead_letters_retention``,
``delivered_retention`` and ``dedupe_window``), in small batches, each its
own short transaction, by one pruner at a time across the fleet (an advisory
lock each batch takes in its transaction). Workers do it every few minutes;
``outbox prune`` does it now.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
    delivered: int = 0  # kept payloads
    publications: int = 0

    @property
    def total(self) -> int:
        return (
            self.attempts
            + self.dead_letters
            + self.idempotency_keys
            + self.delivered
            + self.publications
        )


class _BusyError(Exception):
    """Another pruner holds the lock."""


async def _locked(conn: Conn, method: str, query: str, *args: Any) -> Any:
    """One batch as its own transaction, under the fleet's prune lock."""
    async with conn.transaction():
        if not await conn.fetchval(QUERIES["prune_lock"]):
            raise _BusyError
        return await getattr(conn, method)(QUERIES[query], *args)


async def prune(
    conn: Conn,
    *,
    batch: int = BATCH,
    max_batches: int | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> Pruned | None:
    """Prune what is past retention; None if another pruner is at it.

    Each batch is a transaction of its own that first takes the fleet's prune
    lock (nothing is held between them, so this works through a pooler in
    transaction mode); a pruner that finds the lock taken stops there.
    ``max_batches`` bounds the work per table (a worker's periodic run);
    without it everything due goes."""
    done = dict.fromkeys(
        ("attempts", "dead_letters", "idempotency_keys", "delivered", "publications"), 0
    )

    def note(what: str, n: int) -> None:
        done[what] += n
        if progress is not None and n:
            progress(what, n)

    try:
        for query, what in (("prune_attempts", "attempts"), ("prune_delivered", "delivered")):
            for _ in _rounds(max_batches):
                row = await _locked(conn, "fetchrow", query, batch)
                note(what, row["deleted"])
                if row["reached_young"] or not row["deleted"]:
                    break
        await _locked(conn, "fetchval", "prune_rollups")
        for query, what in (
            ("prune_dead_letters", "dead_letters"),
            ("prune_idempotency_keys", "idempotency_keys"),
            ("prune_publications", "publications"),
        ):
            for _ in _rounds(max_batches):
                n = int(await _locked(conn, "fetchval", query, batch))
                note(what, n)
                if n < batch:
                    break
    except _BusyError:
        if not any(done.values()):
            return None
    return Pruned(**done)


def _rounds(limit: int | None) -> range:
    return range(limit if limit is not None else 1 << 62)
