"""Publish events on topics inside the caller's transaction.

``outbox.publish()`` makes one message for each endpoint with a matching,
unpaused subscription (``outbox subscription add ENDPOINT --topic 'order.*'``)
whose filter the payload contains, and returns their ids: none when nothing
subscribes, which is not an error. As with `outbox.produce.enqueue`, nothing
here commits, and a rejected event writes nothing.

* ``await publish(conn, topic, payload, ...)`` — asyncpg, or SQLAlchemy
  ``AsyncSession`` / ``AsyncConnection``;
* ``publish_sync(session, ...)`` — SQLAlchemy ``Session`` / ``Connection``;
* ``publish_many`` / ``publish_many_sync`` — many events in one round trip,
  one list of ids per event, in order.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import ValidationError

from outbox.db.pgerror import translate
from outbox.db.queries import QUERIES
from outbox.errors import to_input_error
from outbox.produce.checks import is_sqlalchemy_async, named_query, require_transaction, row_values
from outbox.produce.message import Event
from outbox.produce.trace import current_trace

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection as SAConnection
    from sqlalchemy.orm import Session

__all__ = ["publish", "publish_many", "publish_many_sync", "publish_sync"]

_PUBLISH = QUERIES["publish"]
_PUBLISH_MANY = QUERIES["publish_many"]


class _Row(NamedTuple):
    topic: str
    payload: str
    key: str | None
    idempotency_key: str | None
    priority: int
    deliver_at: datetime | None
    headers: str | None
    traceparent: str | None
    tracestate: str | None


def _row(
    event: Event | Mapping[str, Any],
    prefix: str = "",
    trace: tuple[str | None, str | None] = (None, None),
) -> _Row:
    """An event's row, checked by `Event`; ``trace``: the context it gets when it
    carries none of its own (the caller's current span's)."""
    if not isinstance(event, Event):
        try:
            event = Event.model_validate(event)
        except ValidationError as exc:
            raise to_input_error(exc, prefix) from None
    return _Row(event.topic, *row_values(event, prefix, trace))


def _one(topic: str, payload: Mapping[str, Any], **fields: Any) -> _Row:
    given = {k: v for k, v in fields.items() if v is not None}
    return _row({"topic": topic, "payload": payload, **given}, trace=current_trace())


def _columns(rows: Sequence[_Row]) -> list[list[Any] | None]:
    """Parallel arrays for outbox.publish_many(); an all-NULL column is sent as NULL."""
    return [
        None if i >= 2 and all(v is None for v in values) else list(values)
        for i, values in enumerate(zip(*rows, strict=True))
    ]


def _rows(events: Iterable[Event | Mapping[str, Any]]) -> list[_Row]:
    trace = current_trace()
    return [_row(e, f"messages[{i}].", trace) for i, e in enumerate(events)]


def _ids(value: Any) -> list[uuid.UUID]:
    return [v if isinstance(v, uuid.UUID) else uuid.UUID(str(v)) for v in value or ()]


_NAMES = (
    "topics",
    "payloads",
    "keys",
    "idempotency_keys",
    "priorities",
    "deliver_ats",
    "headers",
    "traceparents",
    "tracestates",
)


async def publish(
    conn: Any,
    topic: str,
    payload: Mapping[str, Any],
    *,
    key: str | None = None,
    idempotency_key: str | None = None,
    priority: int = 0,
    deliver_at: datetime | None = None,
    headers: Mapping[str, str] | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> list[uuid.UUID]:
    """Publish one event in ``conn``'s open transaction: the ids of the messages
    made, one per subscribed endpoint (empty: nothing subscribes)."""
    row = _one(
        topic, payload, key=key, idempotency_key=idempotency_key, priority=priority,
        deliver_at=deliver_at, headers=headers, traceparent=traceparent, tracestate=tracestate,
    )  # fmt: skip
    try:
        if is_sqlalchemy_async(conn):
            result = await conn.execute(named_query("publish_named"), row._asdict())
            return _ids(result.scalar_one())
        require_transaction(conn, "publish")
        return _ids(await conn.fetchval(_PUBLISH, *row))
    except Exception as exc:
        raise translate(exc) from exc  # translate() returns exc itself when it is not ours


async def publish_many(
    conn: Any, events: Iterable[Event | Mapping[str, Any]]
) -> list[list[uuid.UUID]]:
    """Publish many events in one round trip: for each, in order, its ids. One
    refused event rejects them all (its index is in the error's ``field``)."""
    rows = _rows(events)
    if not rows:
        return []
    try:
        if is_sqlalchemy_async(conn):
            named = dict(zip(_NAMES, _columns(rows), strict=True))
            result = await conn.execute(named_query("publish_many_named"), named)
            found = result.all()
        else:
            require_transaction(conn, "publish_many")
            found = await conn.fetch(_PUBLISH_MANY, *_columns(rows))
    except Exception as exc:
        raise translate(exc) from exc  # translate() returns exc itself when it is not ours
    return [_ids(r[1]) for r in sorted(found, key=lambda r: r[0])]


def publish_sync(
    session: Session | SAConnection,
    topic: str,
    payload: Mapping[str, Any],
    *,
    key: str | None = None,
    idempotency_key: str | None = None,
    priority: int = 0,
    deliver_at: datetime | None = None,
    headers: Mapping[str, str] | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> list[uuid.UUID]:
    """`publish` for a synchronous SQLAlchemy ``Session`` or ``Connection``."""
    row = _one(
        topic, payload, key=key, idempotency_key=idempotency_key, priority=priority,
        deliver_at=deliver_at, headers=headers, traceparent=traceparent, tracestate=tracestate,
    )  # fmt: skip
    try:
        return _ids(session.execute(named_query("publish_named"), row._asdict()).scalar_one())
    except Exception as exc:
        raise translate(exc) from exc  # translate() returns exc itself when it is not ours


def publish_many_sync(
    session: Session | SAConnection, events: Iterable[Event | Mapping[str, Any]]
) -> list[list[uuid.UUID]]:
    """`publish_many` for a synchronous SQLAlchemy ``Session`` or ``Connection``."""
    rows = _rows(events)
    if not rows:
        return []
    named = dict(zip(_NAMES, _columns(rows), strict=True))
    try:
        found = session.execute(named_query("publish_many_named"), named).all()
    except Exception as exc:
        raise translate(exc) from exc  # translate() returns exc itself when it is not ours
    return [_ids(r[1]) for r in sorted(found, key=lambda r: r[0])]
