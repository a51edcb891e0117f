"""Connecting to PostgreSQL: URL forms, asyncpg connections, error wrapping."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from outbox._redact import redact_text, redact_url
from outbox.errors import DatabaseError

# What talking to the database can raise when it is down, restarting or
# refusing: the worker logs these, backs off and carries on. InternalClientError
# is what asyncpg raises when a connection broke in the middle of a protocol
# exchange (seen when PostgreSQL restarted under a claim); it is not an
# InterfaceError.
DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    asyncio.TimeoutError,
)


def describe(exc: BaseException) -> str:
    """One line saying what the database (or the way to it) answered: the error's
    type and first line, redacted, with a hint where the cause is known."""
    said = redact_text(str(exc)).strip().splitlines()
    line = f"{type(exc).__name__}: {said[0]}" if said else type(exc).__name__
    if isinstance(exc, asyncpg.UndefinedTableError | asyncpg.InvalidSchemaNameError):
        line += " (has `outbox migrate` run on this database?)"
    return line


def asyncpg_url(url: str) -> str:
    """The URL as asyncpg wants it (``postgresql://``)."""
    for prefix in ("postgresql+asyncpg://", "postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def sqlalchemy_async_url(url: str) -> str:
    """The URL as SQLAlchemy's asyncpg dialect wants it."""
    return "postgresql+asyncpg://" + asyncpg_url(url)[len("postgresql://") :]


async def init_connection(conn: asyncpg.Connection) -> None:
    """Codecs every `outbox` connection uses: jsonb and json as Python objects."""
    for name in ("jsonb", "json"):
        await conn.set_type_codec(
            name, schema="pg_catalog", encoder=_dumps, decoder=json.loads, format="text"
        )


def _dumps(value: Any) -> str:
    if isinstance(value, str):  # already serialised by the caller
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


async def connect(url: str, **kwargs: Any) -> asyncpg.Connection:
    """Open one connection; failures become a `DatabaseError` without the password."""
    try:
        conn: asyncpg.Connection = await asyncpg.connect(asyncpg_url(url), **kwargs)
    except DB_ERRORS as exc:
        raise DatabaseError(
            f"cannot connect to {redact_url(url)}: {redact_text(str(exc), (url,))}"
        ) from None
    await init_connection(conn)
    return conn


@contextlib.asynccontextmanager
async def connection(url: str, **kwargs: Any) -> AsyncIterator[asyncpg.Connection]:
    """``async with connection(url) as conn:`` — opened and always closed."""
    conn = await connect(url, **kwargs)
    try:
        yield conn
    finally:
        await conn.close()


def command_connection(
    url: str, **kwargs: Any
) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
    """A command's connection (``outbox stats``, ``endpoint``, ``dead``...): a few
    statements each, so no prepared-statement cache, which also lets it run
    through a pooler in transaction mode (PgBouncer), where a statement
    prepared on one server connection is not on the next."""
    return connection(url, statement_cache_size=0, **kwargs)
