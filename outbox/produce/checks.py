"""What every producer call checks, whether it enqueues or publishes: what kind
of connection it was given (an asyncpg connection in a transaction, or a
SQLAlchemy session or connection), and the row values a message or an event
carries after where it goes.

SQLAlchemy is imported only when a caller hands us one of its objects: a
service on asyncpg, and a worker, never load it.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from outbox.db.queries import QUERIES
from outbox.errors import NotInTransactionError
from outbox.produce.message import Event, Message
from outbox.produce.rules import payload_json
from outbox.produce.trace import check_trace

__all__ = ["is_sqlalchemy_async", "named_query", "require_transaction", "row_values"]


def is_sqlalchemy_async(conn: Any) -> bool:
    """Whether ``conn`` is a SQLAlchemy ``AsyncSession`` or ``AsyncConnection``
    (or of a subclass); SQLAlchemy is imported only when ``conn`` is its."""
    if not any(c.__module__.startswith("sqlalchemy.") for c in type(conn).__mro__):
        return False
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    return isinstance(conn, AsyncSession | AsyncConnection)


@functools.cache
def named_query(name: str) -> Any:
    """The named statement ``name`` as a SQLAlchemy ``text()`` clause, made on first use."""
    from sqlalchemy import text

    return text(QUERIES[name])


def row_values(
    fields: Message | Event, prefix: str, trace: tuple[str | None, str | None]
) -> tuple[Any, ...]:
    """What a message's or an event's row holds after where it goes: the payload's
    JSON, key, idempotency key, priority, schedule, headers' JSON, and its trace
    context (its own, checked, else ``trace``)."""
    if fields.traceparent is not None or fields.tracestate is not None:
        trace = check_trace(fields.traceparent, fields.tracestate, prefix)
    return (
        payload_json(fields.payload, f"{prefix}payload"),
        fields.key,
        fields.idempotency_key,
        fields.priority,
        fields.deliver_at,
        None if fields.headers is None else json.dumps(fields.headers, ensure_ascii=False),
        *trace,
    )


def require_transaction(conn: Any, name: str = "enqueue") -> None:
    """``conn`` is an asyncpg connection in a transaction, or a clear error naming
    ``name`` (the producer call: enqueue, publish...)."""
    is_in_transaction = getattr(conn, "is_in_transaction", None)
    if is_in_transaction is None:
        raise TypeError(
            f"{name}() takes an asyncpg connection or a SQLAlchemy AsyncSession/AsyncConnection, "
            f"not {type(conn).__name__}; for a synchronous Session use {name}_sync()"
        )
    if not is_in_transaction():
        raise NotInTransactionError(
            f"{name}() must run inside the transaction that writes your business data: "
            "wrap it in `async with conn.transaction():`"
        )
