"""Managing endpoints and the settings ``outbox.enqueue()`` enforces.

Thin async functions over an asyncpg connection; the CLI calls these, and so
can applications. SQL lives in ``sql/queries.sql``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from outbox.errors import EndpointExistsError, EndpointInUseError, InvalidInputError
from outbox.models import EndpointConfig
from outbox.sql import QUERIES

# Removal waits at most this long for producers already inserting.
_REMOVE_LOCK_TIMEOUT = "5s"


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    """An endpoint as listed: never the secret, only whether one is set."""

    name: str
    channel: str
    url: str | None
    has_secret: bool
    headers: dict[str, str]
    timeout_ms: int
    connect_timeout_ms: int
    max_attempts: int
    retry_window: timedelta
    created_at: datetime
    unfinished: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "channel": self.channel,
            "url": self.url,
            "has_secret": self.has_secret,
            "headers": sorted(self.headers),  # names only: values may be credentials
            "timeout_ms": self.timeout_ms,
            "connect_timeout_ms": self.connect_timeout_ms,
            "max_attempts": self.max_attempts,
            "retry_window_seconds": self.retry_window.total_seconds(),
            "created_at": self.created_at.isoformat(),
            "unfinished": self.unfinished,
        }


async def add_endpoint(conn: asyncpg.Connection, config: EndpointConfig) -> None:
    """Register an endpoint; an existing name is an error, not an update."""
    name = await conn.fetchval(
        QUERIES["endpoint_insert"],
        config.name,
        config.channel,
        config.url,
        config.secret.get_secret_value() if config.secret else None,
        json.dumps(config.headers),
        round(config.timeout * 1000),
        round(config.connect_timeout * 1000),
        config.max_attempts,
        config.retry_window,
    )
    if name is None:
        raise EndpointExistsError("name", f"endpoint {config.name!r} already exists")


async def list_endpoints(conn: asyncpg.Connection) -> list[EndpointInfo]:
    rows = await conn.fetch(QUERIES["endpoint_list"])
    return [
        EndpointInfo(
            name=r["name"],
            channel=r["channel"],
            url=r["url"],
            has_secret=r["has_secret"],
            headers=_as_dict(r["headers"]),
            timeout_ms=r["timeout_ms"],
            connect_timeout_ms=r["connect_timeout_ms"],
            max_attempts=r["max_attempts"],
            retry_window=r["retry_window"],
            created_at=r["created_at"],
            unfinished=r["unfinished"],
        )
        for r in rows
    ]


async def remove_endpoint(conn: asyncpg.Connection, name: str) -> None:
    """Remove an endpoint that has no unfinished messages.

    Refused with `EndpointInUseError` while messages are pending, scheduled or
    in flight: removing it would strand them.
    """
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{_REMOVE_LOCK_TIMEOUT}'")
        await conn.execute(QUERIES["endpoint_lock_messages"])
        unfinished = await conn.fetchval(QUERIES["endpoint_unfinished"], name)
        if unfinished:
            raise EndpointInUseError(name, unfinished)
        if await conn.fetchval(QUERIES["endpoint_delete"], name) is None:
            raise InvalidInputError("name", f"unknown endpoint {name!r}")


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    max_payload_bytes: int
    dedupe_window_seconds: int


async def get_config(conn: asyncpg.Connection) -> OutboxConfig:
    row = await conn.fetchrow(QUERIES["config_get"])
    assert row is not None, "outbox.config has one row (created by the migration)"
    return OutboxConfig(row["max_payload_bytes"], row["dedupe_window_seconds"])


async def set_config(
    conn: asyncpg.Connection,
    *,
    max_payload_bytes: int | None = None,
    dedupe_window_seconds: int | None = None,
) -> OutboxConfig:
    if max_payload_bytes is not None and not 1 <= max_payload_bytes <= 64 * 1024 * 1024:
        raise InvalidInputError("max_payload_bytes", "must be between 1 and 67108864")
    if dedupe_window_seconds is not None and dedupe_window_seconds < 1:
        raise InvalidInputError("dedupe_window_seconds", "must be at least 1")
    row = await conn.fetchrow(QUERIES["config_set"], max_payload_bytes, dedupe_window_seconds)
    assert row is not None
    return OutboxConfig(row["max_payload_bytes"], row["dedupe_window_seconds"])


def _as_dict(value: Any) -> dict[str, str]:
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value)
