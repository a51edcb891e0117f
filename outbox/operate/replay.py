"""Sending again what was delivered, from the payloads kept in
``outbox.delivered`` (for ``outbox.config.delivered_retention``): one message
(`resend`), or everything an endpoint was delivered in a window (`replay`).

A message sent again keeps its id (receivers deduplicate on ``webhook-id``,
and get an ``outbox-replay: 1`` header to tell a replay from a duplicate),
its attempts are marked ``replay`` in the ledger, and it waits for its
endpoint's limits like any message. The SQL is ``outbox.resend()`` and
``outbox.replay()`` (``db/schema/replay.sql``), which the owner and
``outbox_operator`` may call.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from outbox.db.pgerror import translate
from outbox.db.queries import QUERIES
from outbox.errors import InvalidInputError

BATCH = 500


@dataclass(frozen=True, slots=True)
class Replayed:
    resent: int  # messages queued again
    skipped: int  # queued already (sent again before, not delivered yet)
    until: datetime  # the window's end, as fixed when the replay began


async def resend(
    conn: asyncpg.Connection, message_id: uuid.UUID, endpoint: str | None = None
) -> uuid.UUID:
    """Send delivered message ``message_id`` again, to ``endpoint`` (None: its own)."""
    try:
        sent: uuid.UUID = await conn.fetchval(QUERIES["message_resend"], message_id, endpoint)
    except asyncpg.PostgresError as exc:
        raise translate(exc) from exc
    return sent


async def replay(
    conn: asyncpg.Connection,
    endpoint: str,
    since: datetime,
    until: datetime | None = None,
    *,
    topic: str | None = None,
    batch: int = BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> Replayed:
    """Send again everything ``endpoint`` was delivered from ``since`` to ``until``
    (None, or later than now: now, fixed at the start), of topics the pattern
    ``topic`` matches (None: all), oldest first, in batches of ``batch``, each
    its own transaction; ``progress(resent, skipped)`` after each."""
    if batch < 1:
        raise InvalidInputError("batch", "must be at least 1")
    now: datetime = await conn.fetchval(QUERIES["database_now"])
    # Never past now, fixed here for every batch: what this replay sends is kept
    # again when delivered, after now, and must not come round again.
    until = now if until is None else min(until, now)
    resent = skipped = 0
    after_at: datetime | None = None
    after_id: int | None = None
    while True:
        try:
            row = await conn.fetchrow(
                QUERIES["replay_batch"], endpoint, since, until, topic, after_at, after_id, batch
            )
        except asyncpg.PostgresError as exc:
            raise translate(exc) from exc
        assert row is not None
        resent += row["resent"]
        skipped += row["skipped"]
        if progress is not None:
            progress(resent, skipped)
        if row["done"] or row["next_id"] is None:
            return Replayed(resent, skipped, until)
        after_at, after_id = row["next_at"], row["next_id"]


async def replay_total(
    conn: asyncpg.Connection, endpoint: str, since: datetime, until: datetime
) -> int:
    """How many kept deliveries of ``endpoint`` lie in the window (a progress total)."""
    return int(await conn.fetchval(QUERIES["replay_count"], endpoint, since, until))
