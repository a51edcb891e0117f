"""Managing endpoints: add, change, list, pause, resume, unblock, remove.

Every setting is handled the same way, from its declaration
(`outbox.settings.endpoint`): the statements that add and change endpoints
get their columns from it, and listing shows what it says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from outbox._redact import redact_url
from outbox.db.pgerror import translate
from outbox.db.queries import QUERIES
from outbox.deliver.channels import registry
from outbox.deliver.channels.spec import ChannelSpec
from outbox.errors import (
    DatabaseError,
    EndpointExistsError,
    EndpointInUseError,
    InvalidInputError,
)
from outbox.operate.endpoint_config import EndpointConfig, EndpointUpdate, channel_problem
from outbox.settings import endpoint as declared

# Removal waits at most this long for producers already inserting.
_REMOVE_LOCK_TIMEOUT = "5s"
# Checks that only the combination of old and new settings can break.
_CONSTRAINT_PROBLEMS = {
    "endpoints_breaker_cooldown_positive": (
        "breaker_cooldown",
        "must not be longer than breaker_max_cooldown (change both together)",
    ),
}


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    """An endpoint as listed: its settings as the declaration shows them (never
    a secret or a header's value), its state and its unfinished messages."""

    name: str
    channel: str
    settings: dict[str, Any]  # by name, as the declaration reads them from the row
    created_at: datetime
    unfinished: int
    rotating_secret: bool
    state: str
    state_reason: str | None

    def to_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"name": self.name, "channel": self.channel}
        for setting in declared.SETTINGS:
            shown |= setting.listed(self.settings.get(setting.name))
        return shown | {
            "created_at": self.created_at.isoformat(),
            "unfinished": self.unfinished,
            "rotating_secret": self.rotating_secret,
            "state": self.state,
            "state_reason": self.state_reason,
        }

    def limits(self) -> str:
        """The settings that have a summary, in a few words (``20/s, key 1s, ordered``)."""
        parts = (
            s.summary(self.settings[s.name])
            for s in declared.SETTINGS
            if s.summary is not None and self.settings.get(s.name)
        )
        return ", ".join(p for p in parts if p)


async def add_endpoint(conn: asyncpg.Connection, config: EndpointConfig) -> None:
    """Register an endpoint; an existing name is an error, not an update."""
    spec = registry.channel(config.channel)
    values = config.settings()
    statement = (
        QUERIES["endpoint_insert"]
        .replace("{columns}", ", ".join(s.column for s in declared.SETTINGS))
        .replace(
            "{values}",
            ", ".join(f"${i}{s.kind.cast()}" for i, s in enumerate(declared.SETTINGS, start=3)),
        )
    )
    arguments = [s.kind.to_db(values[s.name]) for s in declared.SETTINGS]
    try:
        async with conn.transaction():  # the channel's row and the endpoint, or neither
            await _ensure_channel(conn, spec)
            name = await conn.fetchval(statement, config.name, config.channel, *arguments)
    except asyncpg.PostgresError as exc:
        raise _refused(exc) from None
    if name is None:
        raise EndpointExistsError("name", f"endpoint {config.name!r} already exists")


async def _ensure_channel(conn: asyncpg.Connection, spec: ChannelSpec) -> None:
    """The channel's row of outbox.channels, for a channel installed after `outbox migrate`."""
    await conn.execute(QUERIES["channels_upsert"], json.dumps([spec.catalog_row()]))


async def list_endpoints(conn: asyncpg.Connection) -> list[EndpointInfo]:
    rows = await conn.fetch(QUERIES["endpoint_list"])
    return [
        EndpointInfo(
            name=r["name"],
            channel=r["channel"],
            settings=_listed_settings(r),
            created_at=r["created_at"],
            unfinished=r["unfinished"],
            rotating_secret=r["rotating"],
            state=r["state"] or "active",
            state_reason=r["disabled_reason"]
            or r["paused_reason"]
            or (r["last_failure"] if r["consecutive_failures"] else None),
        )
        for r in rows
    ]


def _listed_settings(row: Any) -> dict[str, Any]:
    """Every setting of an endpoint row, its URL's password masked (an
    `EndpointInfo` never holds a secret)."""
    settings = {s.name: s.kind.from_db(row[s.column]) for s in declared.SETTINGS}
    if settings.get("url"):
        settings["url"] = redact_url(settings["url"])
    return settings


async def update_endpoint(conn: asyncpg.Connection, name: str, changes: EndpointUpdate) -> None:
    """Change the settings given in ``changes``; the rest stay as they are."""
    values = changes.changes()
    cleared = sorted(changes.clear)
    both = set(values) & set(cleared)
    if both:
        raise InvalidInputError(sorted(both)[0], "is both given and cleared")
    if not values and not cleared:
        raise InvalidInputError("changes", "nothing to change: give at least one setting")
    channel = await conn.fetchval(QUERIES["endpoint_channel"], name)
    if channel is None:
        raise InvalidInputError("name", f"unknown endpoint {name!r}")
    problem = channel_problem(registry.channel(channel), values, adding=False)
    if problem:
        field, sep, rest = problem.partition(": ")
        raise InvalidInputError(field if sep else "settings", rest if sep else problem)
    assignments, arguments = _assignments(values, cleared, changes.secret_grace.total_seconds())
    statement = QUERIES["endpoint_update"].replace("{assignments}", ", ".join(assignments))
    try:
        await conn.fetchval(statement, name, *arguments)
    except asyncpg.PostgresError as exc:
        raise _refused(exc) from None


def _refused(exc: asyncpg.PostgresError) -> BaseException:
    """Our error for what the database refused. Never the driver's own: its
    detail shows the failing row, secret included."""
    if isinstance(exc, asyncpg.CheckViolationError):
        field, problem = _CONSTRAINT_PROBLEMS.get(
            exc.constraint_name or "", ("settings", "the settings do not fit together")
        )
        return InvalidInputError(field, problem)
    translated = translate(exc)
    if translated is exc:
        return DatabaseError(f"the endpoint could not be written ({type(exc).__name__})")
    return translated


def _assignments(
    values: dict[str, Any], cleared: list[str], grace_seconds: float
) -> tuple[list[str], list[Any]]:
    """``column = $n`` for each setting that changes ($1 is the endpoint's name)."""
    assignments: list[str] = []
    arguments: list[Any] = []
    for setting in declared.SETTINGS:
        if setting.name in values:
            arguments.append(setting.kind.to_db(values[setting.name]))
            n = len(arguments) + 1
            assignments.append(f"{setting.column} = ${n}{setting.kind.cast()}")
            if setting.name == "secret":  # a rotation: the old one signs for a grace period
                arguments.append(grace_seconds)
                assignments[-1:] = [
                    "previous_secret = secret",
                    f"previous_secret_until = now() + make_interval(secs => ${n + 1})",
                    assignments[-1],
                ]
        elif setting.name in cleared:
            assignments.append(f"{setting.column} = NULL")
    return assignments, arguments


async def pause_endpoint(conn: asyncpg.Connection, name: str, reason: str | None = None) -> None:
    """Stop delivering to ``name`` now; its messages stay parked and spend no attempts."""
    reason = reason or "paused by an operator"
    if not await conn.fetchval(QUERIES["endpoint_pause"], name, reason):
        raise InvalidInputError("name", f"unknown endpoint {name!r}")


async def resume_endpoint(conn: asyncpg.Connection, name: str) -> None:
    """Deliver to ``name`` again: un-pause, re-enable, close its circuit, and restart
    the retry windows of its parked messages."""
    if not await conn.fetchval(QUERIES["endpoint_resume"], name):
        raise InvalidInputError("name", f"unknown endpoint {name!r}")


async def unblock_key(conn: asyncpg.Connection, name: str, key: str) -> int:
    """Release a key blocked after a dead letter; returns how many messages it frees."""
    freed = await conn.fetchval(QUERIES["endpoint_unblock"], name, key)
    if freed is None:
        raise InvalidInputError("key", f"key {key!r} of endpoint {name!r} is not blocked")
    return int(freed)


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
