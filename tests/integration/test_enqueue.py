"""Transactional enqueue from asyncpg, SQLAlchemy (async and sync) and plain SQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import outbox
from outbox.db.connect import sqlalchemy_async_url


@pytest.fixture
async def endpoints(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """
        INSERT INTO outbox.endpoints (name, channel, url) VALUES
          ('hook', 'webhook', 'http://127.0.0.1:9/hook'),
          ('other', 'webhook', 'http://127.0.0.1:9/other'),
          ('nul', 'null', NULL)
        """
    )


async def count(conn: asyncpg.Connection, where: str = "true") -> int:
    value = await conn.fetchval(f"SELECT count(*) FROM outbox.messages WHERE {where}")
    assert isinstance(value, int)
    return value


pytestmark = pytest.mark.usefixtures("endpoints")


# -- asyncpg -----------------------------------------------------------------


async def test_commit_makes_the_message_exist(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        message_id = await outbox.enqueue(conn, "hook", {"order": 1}, key="order-1")
    assert isinstance(message_id, uuid.UUID)
    row = await conn.fetchrow("SELECT * FROM outbox.messages WHERE id = $1", message_id)
    assert row is not None
    assert row["payload"] == {"order": 1}
    assert row["key"] == "order-1"
    assert row["endpoint"] == "hook"
    assert row["lease_token"] is None


async def test_rollback_leaves_no_message(conn: asyncpg.Connection) -> None:
    tr = conn.transaction()
    await tr.start()
    await outbox.enqueue(conn, "hook", {"order": 2})
    await tr.rollback()
    assert await count(conn) == 0


async def test_rollback_to_a_savepoint_removes_only_the_inner_message(
    conn: asyncpg.Connection,
) -> None:
    async with conn.transaction():
        kept = await outbox.enqueue(conn, "hook", {"kept": True})
        inner = conn.transaction()  # nested: a savepoint
        await inner.start()
        await outbox.enqueue(conn, "hook", {"kept": False})
        await inner.rollback()
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM outbox.messages")]
    assert ids == [kept]


async def test_enqueue_never_commits_on_its_own(database_url: str) -> None:
    writer = await outbox_connect(database_url)
    reader = await outbox_connect(database_url)
    try:
        tr = writer.transaction()
        await tr.start()
        message_id = await outbox.enqueue(writer, "hook", {"x": 1})
        assert await reader.fetchval("SELECT count(*) FROM outbox.messages") == 0
        await tr.commit()
        assert (
            await reader.fetchval("SELECT count(*) FROM outbox.messages WHERE id = $1", message_id)
            == 1
        )
    finally:
        await writer.close()
        await reader.close()


async def test_enqueue_outside_a_transaction_is_refused(conn: asyncpg.Connection) -> None:
    with pytest.raises(outbox.NotInTransactionError, match=r"conn\.transaction\(\)"):
        await outbox.enqueue(conn, "hook", {"x": 1})
    assert await count(conn) == 0


async def test_enqueue_works_on_a_pool_connection(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        async with pool.acquire() as pc, pc.transaction():
            message_id = await outbox.enqueue(pc, "hook", {"pooled": True})
        async with pool.acquire() as pc:
            assert (
                await pc.fetchval(
                    "SELECT payload->>'pooled' FROM outbox.messages WHERE id=$1", message_id
                )
                == "true"
            )
    finally:
        await pool.close()


async def test_a_callers_jsonb_codec_does_not_double_encode(conn: asyncpg.Connection) -> None:
    import json

    await conn.set_type_codec("jsonb", schema="pg_catalog", encoder=json.dumps, decoder=json.loads)
    async with conn.transaction():
        message_id = await outbox.enqueue(conn, "hook", {"a": [1, 2]}, headers={"X-T": "1"})
    row = await conn.fetchrow(
        "SELECT payload, headers FROM outbox.messages WHERE id=$1", message_id
    )
    assert row is not None
    assert row["payload"] == {"a": [1, 2]}
    assert row["headers"] == {"X-T": "1"}


async def test_fields_are_stored_as_given(conn: asyncpg.Connection) -> None:
    from datetime import UTC, datetime, timedelta

    later = datetime.now(UTC) + timedelta(hours=1)
    async with conn.transaction():
        message_id = await outbox.enqueue(
            conn,
            "hook",
            {"ü": "☃"},
            key="k",
            idempotency_key="i",
            priority=-5,
            deliver_at=later,
            headers={"X-Trace": "abc"},
        )
    row = await conn.fetchrow("SELECT * FROM outbox.messages WHERE id = $1", message_id)
    assert row is not None
    assert (row["payload"], row["key"], row["idempotency_key"], row["priority"]) == (
        {"ü": "☃"},
        "k",
        "i",
        -5,
    )
    assert abs((row["available_at"] - later).total_seconds()) < 0.001
    assert row["headers"] == {"X-Trace": "abc"}


async def test_deliver_at_in_the_past_means_now(conn: asyncpg.Connection) -> None:
    from datetime import UTC, datetime

    async with conn.transaction():
        message_id = await outbox.enqueue(
            conn, "hook", {}, deliver_at=datetime(2000, 1, 1, tzinfo=UTC)
        )
        due = await conn.fetchval(
            "SELECT available_at = now() FROM outbox.messages WHERE id = $1", message_id
        )
    assert due is True


# -- plain SQL (any language) ------------------------------------------------


async def test_the_sql_function_works_from_plain_sql(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        message_id = await conn.fetchval(
            "SELECT outbox.enqueue('hook', '{\"from\": \"sql\"}'::jsonb,"
            " key => 'k1', priority => 3)"
        )
    row = await conn.fetchrow(
        "SELECT payload, key, priority FROM outbox.messages WHERE id=$1", message_id
    )
    assert row is not None
    assert dict(row) == {"payload": {"from": "sql"}, "key": "k1", "priority": 3}


async def test_the_batch_sql_function_returns_ids_in_input_order(conn: asyncpg.Connection) -> None:
    ids = await conn.fetchval(
        """SELECT outbox.enqueue_many(ARRAY['hook','nul','hook'],
                  ARRAY['{"i":0}','{"i":1}','{"i":2}']::jsonb[])"""
    )
    for i, message_id in enumerate(ids):
        payload = await conn.fetchval("SELECT payload FROM outbox.messages WHERE id=$1", message_id)
        assert payload == {"i": i}


# -- batch -------------------------------------------------------------------


async def test_batch_writes_every_message_in_one_call(conn: asyncpg.Connection) -> None:
    messages = [
        outbox.Message(endpoint="hook" if i % 2 else "nul", payload={"i": i}, key=f"k{i % 3}")
        for i in range(500)
    ]
    async with conn.transaction():
        ids = await outbox.enqueue_many(conn, messages)
    assert len(set(ids)) == 500
    rows = await conn.fetch("SELECT id, payload, endpoint, key FROM outbox.messages")
    by_id = {r["id"]: r for r in rows}
    for message, message_id in zip(messages, ids, strict=True):
        row = by_id[message_id]
        assert (row["payload"], row["endpoint"], row["key"]) == (
            message.payload,
            message.endpoint,
            message.key,
        )


async def test_batch_accepts_plain_dicts_and_keeps_order_of_claims(
    conn: asyncpg.Connection,
) -> None:
    async with conn.transaction():
        ids = await outbox.enqueue_many(
            conn, [{"endpoint": "hook", "payload": {"n": n}} for n in range(5)]
        )
    seqs = await conn.fetch("SELECT id FROM outbox.messages ORDER BY seq")
    assert [r["id"] for r in seqs] == ids


async def test_batch_with_one_bad_message_inserts_nothing(conn: asyncpg.Connection) -> None:
    batch = [{"endpoint": "hook", "payload": {"ok": True}}] * 3 + [
        {"endpoint": "missing", "payload": {}}
    ]
    with pytest.raises(outbox.UnknownEndpointError) as info:
        async with conn.transaction():
            await outbox.enqueue_many(conn, batch)
    assert info.value.field == "messages[3].endpoint"
    assert "missing" in info.value.problem
    assert await count(conn) == 0


async def test_batch_rejects_a_bad_message_in_python_with_its_index(
    conn: asyncpg.Connection,
) -> None:
    batch = [
        {"endpoint": "hook", "payload": {}},
        {"endpoint": "hook", "payload": {}, "priority": 10**6},
    ]
    with pytest.raises(outbox.InvalidInputError) as info:
        async with conn.transaction():
            await outbox.enqueue_many(conn, batch)
    assert info.value.field == "messages[1].priority"
    assert await count(conn) == 0


async def test_empty_batch_writes_nothing(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        assert await outbox.enqueue_many(conn, []) == []
    assert await count(conn) == 0


# -- SQLAlchemy ----------------------------------------------------------------


@pytest.fixture
async def async_session(database_url: str) -> AsyncIterator[AsyncSession]:
    engine = create_async_engine(sqlalchemy_async_url(database_url))
    try:
        async with AsyncSession(engine) as session:
            yield session
    finally:
        await engine.dispose()


@pytest.fixture
def sync_session(database_url: str) -> Iterator[Session]:
    engine = create_engine("postgresql+psycopg://" + database_url.split("://", 1)[1])
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


async def test_async_session_commit_and_rollback(
    async_session: AsyncSession, conn: asyncpg.Connection
) -> None:
    await async_session.execute(text("SELECT 1"))  # business write stand-in
    kept = await outbox.enqueue(async_session, "hook", {"via": "AsyncSession"})
    await async_session.commit()
    await outbox.enqueue(async_session, "hook", {"via": "rolled back"})
    await async_session.rollback()
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM outbox.messages")]
    assert ids == [kept]


async def test_async_session_savepoint_rollback(
    async_session: AsyncSession, conn: asyncpg.Connection
) -> None:
    async with async_session.begin():
        kept = await outbox.enqueue(async_session, "hook", {"outer": True})
        nested = await async_session.begin_nested()
        await outbox.enqueue(async_session, "hook", {"outer": False})
        await nested.rollback()
    assert [r["id"] for r in await conn.fetch("SELECT id FROM outbox.messages")] == [kept]


async def test_async_session_batch(async_session: AsyncSession, conn: asyncpg.Connection) -> None:
    ids = await outbox.enqueue_many(
        async_session, [outbox.Message(endpoint="nul", payload={"i": i}) for i in range(10)]
    )
    await async_session.commit()
    assert await count(conn) == 10
    assert len(set(ids)) == 10


async def test_async_session_rejection_names_the_field(async_session: AsyncSession) -> None:
    with pytest.raises(outbox.UnknownEndpointError, match="unknown endpoint 'nope'"):
        await outbox.enqueue(async_session, "nope", {})
    await async_session.rollback()


async def test_sync_session_commit_rollback_and_savepoint(
    sync_session: Session, conn: asyncpg.Connection
) -> None:
    kept = outbox.enqueue_sync(sync_session, "hook", {"via": "Session"})
    with sync_session.begin_nested():
        outbox.enqueue_sync(sync_session, "hook", {"also": "kept"})
    nested = sync_session.begin_nested()
    outbox.enqueue_sync(sync_session, "hook", {"via": "savepoint"})
    nested.rollback()
    sync_session.commit()
    outbox.enqueue_sync(sync_session, "hook", {"via": "rolled back"})
    sync_session.rollback()
    payloads = sorted(
        str(r["payload"]) for r in await conn.fetch("SELECT payload FROM outbox.messages")
    )
    assert payloads == sorted([str({"via": "Session"}), str({"also": "kept"})])
    assert kept in [r["id"] for r in await conn.fetch("SELECT id FROM outbox.messages")]


async def test_sync_session_batch_and_errors(
    sync_session: Session, conn: asyncpg.Connection
) -> None:
    ids = outbox.enqueue_many_sync(
        sync_session, [{"endpoint": "hook", "payload": {"i": i}} for i in range(3)]
    )
    sync_session.commit()
    assert len(ids) == 3
    with pytest.raises(outbox.InvalidInputError) as info:
        outbox.enqueue_many_sync(
            sync_session,
            [{"endpoint": "hook", "payload": {"i": 0}}, {"endpoint": "ghost", "payload": {}}],
        )
    sync_session.rollback()
    assert info.value.field == "messages[1].endpoint"
    assert await count(conn) == 3


async def test_sync_connection_works_too(database_url: str, conn: asyncpg.Connection) -> None:
    engine = create_engine("postgresql+psycopg://" + database_url.split("://", 1)[1])
    try:
        with engine.begin() as sa_conn:
            outbox.enqueue_sync(sa_conn, "hook", {"core": True})
    finally:
        engine.dispose()
    assert await count(conn, "payload->>'core' = 'true'") == 1


# -- helpers -------------------------------------------------------------------


async def outbox_connect(url: str) -> asyncpg.Connection:
    from outbox.db.connect import connect

    return await connect(url)
