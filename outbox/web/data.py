"""What the dashboard's pages read: ``db/sql/web.sql`` and `outbox.operate`.

Every function takes an asyncpg connection and returns plain values for a
template. Nothing here reads a secret: endpoints come from
``outbox.endpoint_settings``, which has none.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from outbox.db.queries import QUERIES
from outbox.errors import ConfigurationError
from outbox.operate.dead import DeadLetter, count_dead, dead_letters
from outbox.operate.messages import MessageStory, message_story

STATES = ("pending", "scheduled", "in flight", "dead")


@dataclass(frozen=True, slots=True)
class Access:
    """What the connected role may do."""

    role: str
    read_messages: bool  # messages, dead letters, the ledger
    act: bool  # the operator's functions

    @property
    def read_only(self) -> bool:
        return not self.act


async def access(conn: asyncpg.Connection) -> Access:
    try:
        row = await conn.fetchrow(QUERIES["web_access"])
    except (asyncpg.UndefinedFunctionError, asyncpg.UndefinedTableError,
            asyncpg.InvalidSchemaNameError) as exc:  # fmt: skip
        raise ConfigurationError(
            "the database has no outbox schema, or an older one than this outbox: "
            f"run `outbox migrate` ({type(exc).__name__})"
        ) from None
    assert row is not None
    return Access(row["role"], bool(row["read_messages"]), bool(row["act"]))


async def overview(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(QUERIES["web_overview"])]


async def throughput(conn: asyncpg.Connection, endpoint: str | None = None) -> dict[str, list[int]]:
    """Per minute of the last hour: ``minute`` (Unix s), ``delivered``, ``failed``."""
    rows = await conn.fetch(QUERIES["web_throughput"], endpoint)
    return {
        "minute": [r["minute"] for r in rows],
        "delivered": [r["delivered"] for r in rows],
        "failed": [r["failed"] for r in rows],
    }


async def endpoint(conn: asyncpg.Connection, name: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(QUERIES["web_endpoint"], name)
    return None if row is None else dict(row)


async def blocked_keys(
    conn: asyncpg.Connection, name: str, limit: int = 100
) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(QUERIES["web_blocked_keys"], name, limit)]


async def recent_attempts(
    conn: asyncpg.Connection, name: str, limit: int = 50
) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(QUERIES["web_recent_attempts"], name, limit)]


async def endpoint_names(conn: asyncpg.Connection) -> list[str]:
    return [r[0] for r in await conn.fetch(QUERIES["web_endpoint_names"])]


async def messages(
    conn: asyncpg.Connection,
    *,
    message_id: uuid.UUID | None = None,
    key: str | None = None,
    endpoint: str | None = None,
    state: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    rows = await conn.fetch(QUERIES["web_messages"], message_id, key, endpoint, state, limit)
    return [dict(r) for r in rows]


async def story(conn: asyncpg.Connection, message_id: uuid.UUID) -> MessageStory:
    return await message_story(conn, message_id)


async def dead(
    conn: asyncpg.Connection,
    *,
    endpoint: str | None,
    since: datetime | None,
    until: datetime | None,
    error: str | None,
    limit: int = 200,
) -> tuple[list[DeadLetter], int]:
    """The newest ``limit`` dead letters that match, and how many match in all."""
    letters = await dead_letters(
        conn, endpoint=endpoint, since=since, until=until, error=error, limit=limit
    )
    total = await count_dead(conn, endpoint=endpoint, since=since, until=until, error=error)
    return letters, total
