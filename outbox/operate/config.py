"""The settings every producer and worker shares, in ``outbox.config``: the
limits ``outbox.enqueue()`` enforces, how long history is kept, where alerts go."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from outbox.db.queries import QUERIES
from outbox.errors import InvalidInputError


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    max_payload_bytes: int
    dedupe_window_seconds: int
    attempts_retention_seconds: int = 0
    dead_letters_retention_seconds: int = 0
    alert_endpoint: str | None = None
    alert_payload: dict[str, Any] | None = None
    alert_interval_seconds: int = 0
    delivered_retention_seconds: int = 0  # delivered payloads kept for replay; 0: none


async def get_config(conn: asyncpg.Connection) -> OutboxConfig:
    row = await conn.fetchrow(QUERIES["config_get"])
    kept = await conn.fetchrow(QUERIES["retention_get"])
    alerts = await conn.fetchrow(QUERIES["alerts_get"])
    assert row is not None, "outbox.config has one row (the migration's)"
    assert kept is not None
    assert alerts is not None
    return OutboxConfig(
        row["max_payload_bytes"],
        row["dedupe_window_seconds"],
        kept["attempts_seconds"],
        kept["dead_letters_seconds"],
        alerts["alert_endpoint"],
        json.loads(alerts["alert_payload"]),
        alerts["alert_interval_seconds"],
        kept["delivered_seconds"],
    )


_UNSET: Any = object()


async def set_alerts(
    conn: asyncpg.Connection,
    *,
    endpoint: str | None = _UNSET,
    payload: dict[str, Any] | None = None,
    interval_seconds: int | None = None,
) -> OutboxConfig:
    """Where alerts go (an endpoint name; None: no alerts), the payload they start
    from (e.g. ``{"chat_id": -1001234}`` for a Telegram chat) and how often at most
    one alert of a kind about an endpoint is sent."""
    change_endpoint = endpoint is not _UNSET
    if change_endpoint and endpoint is not None:
        target_payload = payload if payload is not None else (await get_config(conn)).alert_payload
        row = await conn.fetchrow(
            QUERIES["alert_payload_problem"], endpoint, json.dumps(target_payload or {})
        )
        if row is None:
            raise InvalidInputError("alert_endpoint", f"unknown endpoint {endpoint!r}")
        if row["problem"]:
            # 'SQLSTATE¦payload.field¦problem', as the channel's payload check says it.
            _, field, problem = row["problem"].split("¦", 2)
            raise InvalidInputError(
                "alert_payload",
                f"alerts to {endpoint!r} would be refused: {field} {problem}",
            )
    if interval_seconds is not None and interval_seconds < 1:
        raise InvalidInputError("alert_interval", "must be at least 1 second")
    await conn.execute(
        QUERIES["alerts_set"],
        change_endpoint,
        endpoint if change_endpoint else None,
        json.dumps(payload) if payload is not None else None,
        interval_seconds,
    )
    return await get_config(conn)


async def set_config(
    conn: asyncpg.Connection,
    *,
    max_payload_bytes: int | None = None,
    dedupe_window_seconds: int | None = None,
    attempts_retention_seconds: int | None = None,
    dead_letters_retention_seconds: int | None = None,
    delivered_retention_seconds: int | None = None,
) -> OutboxConfig:
    if max_payload_bytes is not None and not 1 <= max_payload_bytes <= 64 * 1024 * 1024:
        raise InvalidInputError("max_payload_bytes", "must be between 1 and 67108864")
    if dedupe_window_seconds is not None and dedupe_window_seconds < 1:
        raise InvalidInputError("dedupe_window_seconds", "must be at least 1")
    for field, value in (
        ("attempts_retention", attempts_retention_seconds),
        ("dead_letters_retention", dead_letters_retention_seconds),
    ):
        if value is not None and value < 1:
            raise InvalidInputError(field, "must be at least 1 second")
    if delivered_retention_seconds is not None and delivered_retention_seconds < 0:
        raise InvalidInputError("delivered_retention", "must not be negative (0: keep none)")
    async with conn.transaction():
        await conn.fetchrow(QUERIES["config_set"], max_payload_bytes, dedupe_window_seconds)
        await conn.fetchrow(
            QUERIES["retention_set"],
            attempts_retention_seconds,
            dead_letters_retention_seconds,
            delivered_retention_seconds,
        )
    return await get_config(conn)


# Checks that only the combination of old and new settings can break.
