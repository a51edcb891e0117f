"""Dead letters: list them, requeue them, purge them.

Long operations work in batches (short transactions, no long locks) and
report progress through a callback.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from outbox.db.queries import QUERIES
from outbox.errors import InvalidInputError

BATCH = 1000
Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message_id: uuid.UUID
    endpoint: str
    key: str | None
    attempts: int
    last_error: str | None
    reason: str | None
    created_at: datetime
    dead_at: datetime
    payload: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "message_id": str(self.message_id),
            "endpoint": self.endpoint,
            "key": self.key,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "reason": self.reason,
            "created_at": self.created_at.isoformat(),
            "dead_at": self.dead_at.isoformat(),
            "payload": self.payload,
        }


async def dead_letters(
    conn: asyncpg.Connection,
    *,
    endpoint: str | None = None,
    since: datetime | None = None,
    error: str | None = None,
    limit: int = 100,
    until: datetime | None = None,
) -> list[DeadLetter]:
    """Dead letters, newest first, dead at or after ``since`` and before
    ``until``; ``error`` matches text in the last error or the reason."""
    if limit < 1:
        raise InvalidInputError("limit", "must be at least 1")
    rows = await conn.fetch(QUERIES["dead_list"], endpoint, since, error, limit, until)
    return [
        DeadLetter(
            r["message_id"],
            r["endpoint"],
            r["key"],
            r["attempts"],
            r["last_error"],
            r["reason"],
            r["created_at"],
            r["dead_at"],
            json.loads(r["payload"]),
        )
        for r in rows
    ]


async def requeue(
    conn: asyncpg.Connection,
    *,
    ids: Sequence[uuid.UUID] | None = None,
    endpoint: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    error: str | None = None,
    everything: bool = False,
    progress: Progress | None = None,
) -> int:
    """Move dead letters back to the queue, due now, attempts from zero; their
    history stays in the ledger. By ``ids``, or by filters (``error``: text in
    the last error or the reason), or ``everything`` (asked for explicitly: no
    filter at all is not taken to mean "all"). Returns how many were requeued."""
    if ids is not None and (endpoint or since or until or error or everything):
        raise InvalidInputError("ids", "give message ids or filters, not both")
    if ids is None and not (endpoint or since or until or error or everything):
        raise InvalidInputError(
            "filter", "say which dead letters: ids, an endpoint, a time range, or all"
        )
    id_list = list(ids) if ids is not None else None
    moved = 0
    while True:
        async with conn.transaction():
            n = int(
                await conn.fetchval(
                    QUERIES["dead_requeue"],
                    id_list,
                    endpoint,
                    since,
                    until,
                    everything,
                    error,
                    BATCH,
                )
            )
        moved += n
        if progress is not None and n:
            progress(n)
        if n < BATCH or id_list is not None:
            return moved


async def purge(
    conn: asyncpg.Connection,
    *,
    older_than: timedelta,
    endpoint: str | None = None,
    progress: Progress | None = None,
) -> int:
    """Delete dead letters that died more than ``older_than`` ago, in batches."""
    if older_than < timedelta(0):
        raise InvalidInputError("older_than", "must not be negative")
    removed = 0
    while True:
        n = int(
            await conn.fetchval(QUERIES["dead_purge"], older_than.total_seconds(), endpoint, BATCH)
        )
        removed += n
        if progress is not None and n:
            progress(n)
        if n < BATCH:
            return removed


async def count_dead(
    conn: asyncpg.Connection,
    *,
    endpoint: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    error: str | None = None,
) -> int:
    """How many dead letters match these filters (``error``: text in the last
    error or the reason)."""
    value = await conn.fetchval(QUERIES["dead_count"], endpoint, since, until, error)
    return int(value)
