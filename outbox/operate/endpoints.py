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

from outbox.db.queries import QUERIES
from outbox.errors import EndpointExistsError, EndpointInUseError, InvalidInputError
from outbox.operate.endpoint_config import EndpointConfig, EndpointUpdate

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
    policy: dict[str, Any]
    state: str
    state_reason: str | None

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
            **self.policy,
            "state": self.state,
            "state_reason": self.state_reason,
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
        config.rate_limit,
        config.rate_burst,
        _ms(config.key_interval),
        _ms(config.group_key_interval),
        config.ordered,
        config.on_dead,
        config.breaker_failures,
        config.breaker_cooldown,
        config.breaker_max_cooldown,
        config.disable_after,
        list(config.allow_networks) or None,
        _ms(config.coalesce),
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
            policy={
                "rate_limit": r["rate_limit"],
                "rate_burst": r["rate_burst"],
                "key_interval_ms": r["key_interval_ms"],
                "group_key_interval_ms": r["group_key_interval_ms"],
                "coalesce_ms": r["coalesce_ms"],
                "ordered": r["ordered"],
                "on_dead": r["on_dead"],
                "breaker_failures": r["breaker_failures"],
                "breaker_cooldown_seconds": r["breaker_cooldown"].total_seconds(),
                "breaker_max_cooldown_seconds": r["breaker_max_cooldown"].total_seconds(),
                "disable_after_seconds": r["disable_after"].total_seconds(),
                "allow_networks": list(r["allow_networks"] or []),
                "rotating_secret": bool(r["rotating"]),
            },
            state=r["state"] or "active",
            state_reason=r["disabled_reason"]
            or r["paused_reason"]
            or (r["last_failure"] if r["consecutive_failures"] else None),
        )
        for r in rows
    ]


async def update_endpoint(conn: asyncpg.Connection, name: str, changes: EndpointUpdate) -> None:
    """Change the settings given in ``changes``; the rest stay as they are."""
    patch: dict[str, Any] = {}
    simple = {
        "url": changes.url,
        "headers": changes.headers,
        "max_attempts": changes.max_attempts,
        "rate_limit": changes.rate_limit,
        "rate_burst": changes.rate_burst,
        "ordered": changes.ordered,
        "on_dead": changes.on_dead,
        "breaker_failures": changes.breaker_failures,
        "timeout_ms": _ms(changes.timeout),
        "connect_timeout_ms": _ms(changes.connect_timeout),
        "key_interval_ms": _ms(changes.key_interval),
        "group_key_interval_ms": _ms(changes.group_key_interval),
        "coalesce_ms": _ms(changes.coalesce),
        "retry_window_seconds": _seconds(changes.retry_window),
        "breaker_cooldown_seconds": _seconds(changes.breaker_cooldown),
        "breaker_max_cooldown_seconds": _seconds(changes.breaker_max_cooldown),
        "disable_after_seconds": _seconds(changes.disable_after),
        "allow_networks": list(changes.allow_networks)
        if changes.allow_networks is not None
        else None,
    }
    patch.update({k: v for k, v in simple.items() if v is not None})
    for cleared in changes.clear:
        patch[_CLEARED_COLUMN[cleared]] = None
    if changes.secret is not None:
        patch["secret"] = changes.secret.get_secret_value()
        patch["secret_grace_seconds"] = changes.secret_grace.total_seconds()
    if not patch:
        raise InvalidInputError("changes", "nothing to change: give at least one setting")
    try:
        updated = await conn.fetchval(QUERIES["endpoint_update"], name, json.dumps(patch))
    except asyncpg.CheckViolationError as exc:
        field, problem = _CONSTRAINT_PROBLEMS.get(
            exc.constraint_name or "", ("settings", "the new settings do not fit together")
        )
        raise InvalidInputError(field, problem) from None
    if updated is None:
        raise InvalidInputError("name", f"unknown endpoint {name!r}")


async def pause_endpoint(conn: asyncpg.Connection, name: str, reason: str | None = None) -> None:
    """Stop delivering to ``name`` now; its messages stay parked and spend no attempts."""
    reason = reason or "paused by an operator"
    if await conn.fetchval(QUERIES["endpoint_pause"], name, reason) is None:
        raise InvalidInputError("name", f"unknown endpoint {name!r}")


async def resume_endpoint(conn: asyncpg.Connection, name: str) -> None:
    """Deliver to ``name`` again: un-pause, re-enable, close its circuit, and restart
    the retry windows of its parked messages."""
    async with conn.transaction():
        if await conn.fetchval(QUERIES["endpoint_resume"], name) is None:
            raise InvalidInputError("name", f"unknown endpoint {name!r}")
        await conn.execute(QUERIES["endpoint_restart_windows"], name)


async def unblock_key(conn: asyncpg.Connection, name: str, key: str) -> int:
    """Release a key blocked after a dead letter; returns how many messages it frees."""
    async with conn.transaction():
        if await conn.fetchval(QUERIES["endpoint_key_blocked"], name, key) is None:
            raise InvalidInputError("key", f"key {key!r} of endpoint {name!r} is not blocked")
        return len(await conn.fetch(QUERIES["endpoint_unblock"], name, key))


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


_CONSTRAINT_PROBLEMS = {
    "endpoints_breaker_cooldown_positive": (
        "breaker_cooldown",
        "must not be longer than breaker_max_cooldown (change both together)",
    ),
    "endpoints_webhook_url": ("url", "a webhook endpoint needs an http:// or https:// URL"),
}

_CLEARED_COLUMN = {
    "rate_limit": "rate_limit",
    "key_interval": "key_interval_ms",
    "group_key_interval": "group_key_interval_ms",
    "coalesce": "coalesce_ms",
    "allow_networks": "allow_networks",
}


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else max(1, round(seconds * 1000))


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def _as_dict(value: Any) -> dict[str, str]:
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value)
