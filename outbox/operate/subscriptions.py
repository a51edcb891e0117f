"""Subscriptions: which endpoints get a copy of what is published on which
topics (``outbox.subscriptions``, read by ``outbox.publish()``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from outbox.db.pgerror import translate
from outbox.db.queries import QUERIES
from outbox.errors import InvalidInputError, UnknownEndpointError


@dataclass(frozen=True, slots=True)
class Subscription:
    id: int
    endpoint: str
    topic: str  # the pattern: order.*, order.#, order.created
    filter: dict[str, Any] | None
    paused_at: datetime | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Subscription:
        found = None if row["filter"] is None else json.loads(row["filter"])
        return cls(
            row["id"], row["endpoint"], row["topic"], found, row["paused_at"], row["created_at"]
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "endpoint": self.endpoint,
            "topic": self.topic,
            "filter": self.filter,
            "paused_at": None if self.paused_at is None else self.paused_at.isoformat(),
            "created_at": self.created_at.isoformat(),
        }


async def add_subscription(
    conn: asyncpg.Connection, endpoint: str, topic: str, filter: dict[str, Any] | None = None
) -> Subscription:
    """Subscribe ``endpoint`` to the topic pattern ``topic``; ``filter``: only
    payloads that contain it (JSON containment, ``payload @> filter``)."""
    if filter is not None and not isinstance(filter, dict):
        raise InvalidInputError("filter", "must be a JSON object (the payload must contain it)")
    try:
        async with conn.transaction():
            row = await conn.fetchrow(
                QUERIES["subscription_add"],
                endpoint,
                topic,
                None if filter is None else json.dumps(filter),
            )
    except asyncpg.ForeignKeyViolationError:
        raise UnknownEndpointError("endpoint", f"unknown endpoint {endpoint!r}") from None
    except asyncpg.UniqueViolationError:
        raise InvalidInputError(
            "topic", f"{endpoint} subscribes to {topic!r} already (remove it to change its filter)"
        ) from None
    except asyncpg.PostgresError as exc:
        raise translate(exc) from exc
    return Subscription.from_row(row)


async def list_subscriptions(
    conn: asyncpg.Connection, endpoint: str | None = None
) -> list[Subscription]:
    return [
        Subscription.from_row(r) for r in await conn.fetch(QUERIES["subscription_list"], endpoint)
    ]


async def remove_subscription(conn: asyncpg.Connection, endpoint: str, topic: str) -> None:
    if await conn.fetchval(QUERIES["subscription_remove"], endpoint, topic) is None:
        raise _missing(endpoint, topic)


async def pause_subscription(
    conn: asyncpg.Connection, endpoint: str, topic: str, *, paused: bool = True
) -> None:
    """Pause (or resume) a subscription: while paused, publishing makes it no copy
    (what is published meanwhile is not sent to it later, either)."""
    if await conn.fetchval(QUERIES["subscription_pause"], endpoint, topic, paused) is None:
        raise _missing(endpoint, topic)


def _missing(endpoint: str, topic: str) -> InvalidInputError:
    return InvalidInputError("topic", f"{endpoint} has no subscription to {topic!r}")
