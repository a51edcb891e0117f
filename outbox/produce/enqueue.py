"""Enqueue messages inside the caller's transaction.

Every call here runs ``outbox.enqueue()`` / ``outbox.enqueue_many()`` on the
connection or session it is given, joining that connection's open transaction.
Nothing here commits: commit and the message exists; roll back (also to a
savepoint) and it never did.

* ``await enqueue(conn, ...)`` — an asyncpg connection (or pool connection), or
  a SQLAlchemy ``AsyncSession`` / ``AsyncConnection``;
* ``enqueue_sync(session, ...)`` — a SQLAlchemy ``Session`` / ``Connection``;
* ``enqueue_many`` / ``enqueue_many_sync`` — many messages in one round trip.

Arguments are checked in Python first (precise messages, and the caller's
transaction stays usable); the SQL function then checks what needs the
database (the endpoint, its channel's rules, the size limit). Either way a
rejected message raises `InvalidInputError` and writes nothing — but a
rejection by the database aborts the caller's transaction, as any failed
statement does in PostgreSQL; use a savepoint to carry on after one.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import ValidationError

from outbox.db.pgerror import translate
from outbox.db.queries import QUERIES
from outbox.errors import InvalidInputError, to_input_error
from outbox.produce.checks import is_sqlalchemy_async, named_query, require_transaction, row_values
from outbox.produce.message import Message
from outbox.produce.rules import (
    KEY_MAX_CHARS,
    PRIORITY_MAX,
    PRIORITY_MIN,
    escaped_nul,
    payload_json,
)
from outbox.produce.trace import current_trace
from outbox.settings.endpoint import ENDPOINT_NAME_PATTERN
from outbox.settings.values import text_problem

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection as SAConnection
    from sqlalchemy.orm import Session

__all__ = ["enqueue", "enqueue_many", "enqueue_many_sync", "enqueue_sync"]

_ENQUEUE = QUERIES["enqueue"]
_ENQUEUE_MANY = QUERIES["enqueue_many"]


class _Row(NamedTuple):
    endpoint: str
    payload: str
    key: str | None
    idempotency_key: str | None
    priority: int
    deliver_at: datetime | None
    headers: str | None
    traceparent: str | None
    tracestate: str | None


def _prepare(
    message: Message | Mapping[str, Any],
    prefix: str = "",
    trace: tuple[str | None, str | None] = (None, None),
) -> _Row:
    """A message's row, checked by `Message`; ``trace``: the context it gets
    when it carries none of its own (the caller's current span's)."""
    if not isinstance(message, Message):
        try:
            message = Message.model_validate(message)
        except ValidationError as exc:
            raise to_input_error(exc, prefix) from None
    return _Row(message.endpoint, *row_values(message, prefix, trace))


# Message.endpoint's pattern; used with fullmatch(), which (like pydantic) lets
# no trailing newline through "$".
_ENDPOINT_NAME = re.compile(ENDPOINT_NAME_PATTERN)
# The usual traceparent (version 00, non-zero ids): the others go through check_trace().
_TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
# payload_json()'s settings in one reusable encoder: json.dumps() builds one per call.
_PAYLOAD_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _payload_json(payload: dict[str, Any]) -> str:
    """payload_json(payload), faster; payload_json() itself reports any problem."""
    try:
        text = _PAYLOAD_ENCODER.encode(payload)
    except (ValueError, TypeError, RecursionError):
        return payload_json(payload)
    if ("\\u0000" in text and escaped_nul(text)) or (
        not text.isascii() and text_problem(text)
    ):  # the rare cases: payload_json() names the problem
        return payload_json(payload)
    return text


def _one(
    endpoint: str,
    payload: Mapping[str, Any],
    key: str | None,
    idempotency_key: str | None,
    priority: int,
    deliver_at: datetime | None,
    headers: Mapping[str, str] | None,
    traceparent: str | None,
    tracestate: str | None,
) -> _Row:
    """The arguments of outbox.enqueue() for one message, checked; with no trace
    context given, the current span's."""
    if traceparent is None and tracestate is None:
        traceparent, tracestate = current_trace()
    row = _plain(
        endpoint, payload, key, idempotency_key, priority, deliver_at, headers, traceparent,
        tracestate,
    )  # fmt: skip
    if row is not None:
        return row
    return _prepare(
        {
            "endpoint": endpoint,
            "payload": payload,
            "key": key,
            "idempotency_key": idempotency_key,
            "priority": priority,
            "deliver_at": deliver_at,
            "headers": headers,
            "traceparent": traceparent,
            "tracestate": tracestate,
        }
    )


def _plain(
    endpoint: Any,
    payload: Any,
    key: Any,
    idempotency_key: Any,
    priority: Any,
    deliver_at: Any,
    headers: Any,
    traceparent: Any,
    tracestate: Any,
) -> _Row | None:
    """A plain message's row, or None when it is not plain.

    Most messages are plain: a str endpoint, a dict payload, ASCII keys, an int
    priority, no schedule, no headers, no trace context or the usual one
    (version 00, no tracestate). Those are checked right here, by the
    same rules as `Message`, which would hand them back unchanged; building the
    model costs more than the rest of the Python side of an enqueue. Anything
    else, and every mistake, goes through `Message` for its exact error.
    """
    if (
        deliver_at is None
        and headers is None
        and tracestate is None
        and (
            traceparent is None
            or (type(traceparent) is str and _TRACEPARENT.fullmatch(traceparent) is not None)
        )
        and type(endpoint) is str
        and _ENDPOINT_NAME.fullmatch(endpoint) is not None
        and type(payload) is dict
        and (
            key is None
            or (
                type(key) is str
                and key.isascii()
                and 0 < len(key) <= KEY_MAX_CHARS
                and "\x00" not in key
            )
        )
        and (
            idempotency_key is None
            or (
                type(idempotency_key) is str
                and idempotency_key.isascii()
                and 0 < len(idempotency_key) <= KEY_MAX_CHARS
                and "\x00" not in idempotency_key
            )
        )
        and type(priority) is int
        and PRIORITY_MIN <= priority <= PRIORITY_MAX
    ):
        for name in payload:
            if type(name) is not str:
                return None
        return _Row(
            endpoint, _payload_json(payload), key, idempotency_key, priority, None, None,
            traceparent, None,
        )  # fmt: skip
    return None


def _columns(rows: Sequence[_Row]) -> list[list[Any] | None]:
    """Parallel arrays for outbox.enqueue_many(); an all-NULL column is sent as NULL."""
    columns: list[list[Any] | None] = []
    for i, values in enumerate(zip(*rows, strict=True)):
        optional = i >= 2
        columns.append(None if optional and all(v is None for v in values) else list(values))
    if columns[4] is not None and all(v == 0 for v in columns[4]):
        columns[4] = None  # every priority is the default
    return columns


_FIELDS = frozenset(_Row._fields)


def _rows(messages: Iterable[Message | Mapping[str, Any]]) -> list[_Row]:
    """Each message checked: a plain dict by `_plain`'s fast path, anything else
    (and every mistake) through `Message`, its fields named ``messages[i].``.
    A message without a trace context of its own gets the current span's."""
    rows: list[_Row] = []
    trace = current_trace()
    for i, m in enumerate(messages):
        row = None
        if type(m) is dict and m.keys() <= _FIELDS:
            get = m.get
            traceparent, tracestate = get("traceparent"), get("tracestate")
            if traceparent is None and tracestate is None:
                traceparent, tracestate = trace
            with contextlib.suppress(InvalidInputError):  # named after its index below
                row = _plain(
                    get("endpoint"),
                    get("payload"),
                    get("key"),
                    get("idempotency_key"),
                    get("priority", 0),
                    get("deliver_at"),
                    get("headers"),
                    traceparent,
                    tracestate,
                )
        rows.append(row if row is not None else _prepare(m, f"messages[{i}].", trace))
    return rows


def _as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _named(row: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(_Row._fields, row, strict=True))


def _named_many(rows: Sequence[_Row]) -> dict[str, Any]:
    names = (
        "endpoints",
        "payloads",
        "keys",
        "idempotency_keys",
        "priorities",
        "deliver_ats",
        "headers",
        "traceparents",
        "tracestates",
    )
    return dict(zip(names, _columns(rows), strict=True))


async def enqueue(
    conn: Any,
    endpoint: str,
    payload: Mapping[str, Any],
    *,
    key: str | None = None,
    idempotency_key: str | None = None,
    priority: int = 0,
    deliver_at: datetime | None = None,
    headers: Mapping[str, str] | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> uuid.UUID:
    """Enqueue one message in ``conn``'s open transaction and return its id.

    ``conn`` is an asyncpg connection (inside ``async with conn.transaction()``)
    or a SQLAlchemy ``AsyncSession`` / ``AsyncConnection``. ``traceparent`` and
    ``tracestate`` (W3C Trace Context) go with the message to its receiver; when
    neither is given, the current OpenTelemetry span's context is taken, if any.
    """
    row = _one(
        endpoint, payload, key, idempotency_key, priority, deliver_at, headers, traceparent,
        tracestate,
    )  # fmt: skip
    try:
        if is_sqlalchemy_async(conn):
            result = await conn.execute(named_query("enqueue_named"), _named(row))
            return _as_uuid(result.scalar_one())
        require_transaction(conn)
        return _as_uuid(await conn.fetchval(_ENQUEUE, *row))
    except Exception as exc:
        raise translate(exc) from exc  # translate() returns exc itself when it is not ours


async def enqueue_many(
    conn: Any, messages: Iterable[Message | Mapping[str, Any]]
) -> list[uuid.UUID]:
    """Enqueue many messages in one round trip; ids come back in input order.

    Every message is checked before anything is written; one bad message
    rejects the batch (its index is in the error's ``field``).
    """
    rows = _rows(messages)
    if not rows:
        return []
    try:
        if is_sqlalchemy_async(conn):
            result = await conn.execute(named_query("enqueue_many_named"), _named_many(rows))
            ids = result.scalar_one()
        else:
            require_transaction(conn)
            ids = await conn.fetchval(_ENQUEUE_MANY, *_columns(rows))
    except Exception as exc:
        raise translate(exc) from exc  # translate() returns exc itself when it is not ours
    return [_as_uuid(i) for i in ids]


def enqueue_sync(
    session: Session | SAConnection,
    endpoint: str,
    payload: Mapping[str, Any],
    *,
    key: str | None = None,
    idempotency_key: str | None = None,
    priority: int = 0,
    deliver_at: datetime | None = None,
    headers: Mapping[str, str] | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> uuid.UUID:
    """`enqueue` for a synchronous SQLAlchemy ``Session`` or ``Connection``."""
    row = _one(
        endpoint, payload, key, idempotency_key, priority, deliver_at, headers, traceparent,
        tracestate,
    )  # fmt: skip
    try:
        return _as_uuid(session.execute(named_query("enqueue_named"), _named(row)).scalar_one())
    except Exception as exc:
        raise translate(exc) from exc  # translate() returns exc itself when it is not ours


def enqueue_many_sync(
    session: Session | SAConnection, messages: Iterable[Message | Mapping[str, Any]]
) -> list[uuid.UUID]:
    """`enqueue_many` for a synchronous SQLAlchemy ``Session`` or ``Connection``."""
    rows = _rows(messages)
    if not rows:
        return []
    try:
        ids = session.execute(named_query("enqueue_many_named"), _named_many(rows)).scalar_one()
    except Exception as exc:
        raise translate(exc) from exc  # translate() returns exc itself when it is not ours
    return [_as_uuid(i) for i in ids]
