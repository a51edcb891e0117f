"""The receiver's inbox: act on each webhook once, however often it arrives.

Delivery is at least once: a worker that dies after the receiver answered but
before it recorded the answer sends the message again, with the same
``webhook-id``. The inbox is a table in the receiver's own database holding
the ids it has acted on. `first_delivery` inserts the id in the caller's open
transaction, the one that also writes the effect:

* the first delivery inserts it and gets True: do the work, commit both;
* a duplicate finds it and gets False: do nothing, answer 2xx all the same;
* if the transaction rolls back, the id goes with the effect, and the next
  delivery is a first one again.

Two copies arriving at once cannot both win: the second insert waits for the
first transaction and then sees its row (at READ COMMITTED, PostgreSQL's
default; at REPEATABLE READ or SERIALIZABLE the second fails with a
serialization error instead, answer 5xx and the retry is a duplicate).

The table is `inbox.sql` (``outbox_inbox``); `create_inbox` applies it, and
`inbox_ddl` gives it under another name for the receiver's own migrations.
Keep ids for longer than a sender can redeliver: with ``outbox`` that is the
endpoint's ``max_age``, plus however long a dead letter may wait before
someone requeues it (a requeued message keeps its id). `prune_inbox` removes
older ones in short batches.
"""

from __future__ import annotations

import re
from datetime import timedelta
from importlib import resources
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection as SAConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from outbox.errors import NotInTransactionError

INBOX_TABLE = "outbox_inbox"
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?")
_DDL_NAMES = re.compile(r"\boutbox_inbox(_received_at)?\b")


def inbox_ddl(table: str = INBOX_TABLE) -> str:
    """The inbox's ``CREATE TABLE``/``CREATE INDEX`` statements, for ``table``
    (``name`` or ``schema.name``, lower case)."""
    ddl = resources.files(__package__).joinpath("inbox.sql").read_text(encoding="utf-8")
    if table == INBOX_TABLE:
        return ddl
    quoted = _quoted(table)
    index = f'"{table.rsplit(".", 1)[-1]}_received_at"'
    return _DDL_NAMES.sub(lambda m: index if m.group(1) else quoted, ddl)


async def create_inbox(conn: Any, table: str = INBOX_TABLE) -> None:
    """Create the inbox table if it is not there (asyncpg, or SQLAlchemy async)."""
    ddl = inbox_ddl(table)
    if isinstance(conn, AsyncSession | AsyncConnection):
        for statement in _statements(ddl):
            await conn.execute(text(statement))
    else:
        await conn.execute(ddl)


def create_inbox_sync(conn: Session | SAConnection, table: str = INBOX_TABLE) -> None:
    """`create_inbox` for a synchronous SQLAlchemy ``Session`` or ``Connection``."""
    for statement in _statements(inbox_ddl(table)):
        conn.execute(text(statement))


async def first_delivery(conn: Any, webhook_id: str, *, table: str = INBOX_TABLE) -> bool:
    """Record ``webhook_id`` in the open transaction; True if it is the first time.

    ``conn``: an asyncpg connection inside ``async with conn.transaction()``,
    or a SQLAlchemy ``AsyncSession``/``AsyncConnection`` (whose transaction
    begins with its first statement). Commit together with the effect.
    """
    statement = _insert(table, webhook_id)
    if isinstance(conn, AsyncSession | AsyncConnection):
        result = await conn.execute(text(statement.replace("$1", ":id")), {"id": webhook_id})
        return result.scalar() is not None
    is_in_transaction = getattr(conn, "is_in_transaction", None)
    if is_in_transaction is None:
        raise TypeError(
            "first_delivery() takes an asyncpg connection or a SQLAlchemy "
            f"AsyncSession/AsyncConnection, not {type(conn).__name__}; "
            "for a synchronous Session use first_delivery_sync()"
        )
    if not is_in_transaction():
        raise NotInTransactionError(
            "first_delivery() must run in the transaction that writes the webhook's effect: "
            "wrap both in `async with conn.transaction():`, or a duplicate could act twice"
        )
    return await conn.fetchval(statement, webhook_id) is not None


def first_delivery_sync(
    session: Session | SAConnection, webhook_id: str, *, table: str = INBOX_TABLE
) -> bool:
    """`first_delivery` for a synchronous SQLAlchemy ``Session`` or ``Connection``."""
    statement = _insert(table, webhook_id)
    result = session.execute(text(statement.replace("$1", ":id")), {"id": webhook_id})
    return result.scalar() is not None


async def prune_inbox(
    conn: Any, older_than: timedelta, *, table: str = INBOX_TABLE, batch: int = 10_000
) -> int:
    """Delete ids received more than ``older_than`` ago, ``batch`` rows per
    statement (each its own short transaction); returns how many went.

    ``conn``: an asyncpg connection outside any transaction.
    """
    if older_than <= timedelta(0) or batch < 1:
        raise ValueError("prune_inbox() needs a positive older_than and batch")
    quoted = _quoted(table)
    statement = (
        f"DELETE FROM {quoted} WHERE webhook_id IN (SELECT webhook_id FROM {quoted}"
        " WHERE received_at < now() - $1::interval LIMIT $2)"
    )
    removed = 0
    while True:
        status = await conn.execute(statement, older_than, batch)
        count = int(status.rsplit(" ", 1)[-1])
        removed += count
        if count < batch:
            return removed


def _insert(table: str, webhook_id: str) -> str:
    """The inbox insert (after checking the id): a row back means the first delivery."""
    if not isinstance(webhook_id, str) or not webhook_id:
        raise ValueError("webhook_id: must be a non-empty string (the webhook-id header)")
    return (
        f"INSERT INTO {_quoted(table)} (webhook_id) VALUES ($1)"
        " ON CONFLICT (webhook_id) DO NOTHING RETURNING true"
    )


def _quoted(table: str) -> str:
    if not _NAME.fullmatch(table):
        raise ValueError(f"table: {table!r} is not a lower-case table name (name or schema.name)")
    return ".".join(f'"{part}"' for part in table.split("."))


def _statements(ddl: str) -> list[str]:
    lines = [line for line in ddl.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
