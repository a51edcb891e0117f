"""A repeated idempotency key returns the first message's id and inserts nothing."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

import outbox
from outbox import operate
from outbox.db.connect import connect


@pytest.fixture(autouse=True)
async def _endpoints(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO outbox.endpoints (name, channel, url) VALUES "
        "('hook', 'webhook', 'http://127.0.0.1:9/a'), ('other', 'webhook', 'http://127.0.0.1:9/b')"
    )


async def enqueue(conn: asyncpg.Connection, endpoint: str, key: str, n: int = 0) -> object:
    async with conn.transaction():
        return await outbox.enqueue(conn, endpoint, {"n": n}, idempotency_key=key)


async def messages(conn: asyncpg.Connection) -> int:
    value = await conn.fetchval("SELECT count(*) FROM outbox.messages")
    assert isinstance(value, int)
    return value


async def test_same_key_same_endpoint_returns_the_first_id(conn: asyncpg.Connection) -> None:
    first = await enqueue(conn, "hook", "order-7", 1)
    again = await enqueue(conn, "hook", "order-7", 2)
    assert again == first
    assert await messages(conn) == 1
    assert await conn.fetchval("SELECT payload->>'n' FROM outbox.messages") == "1"


async def test_same_key_on_another_endpoint_is_a_new_message(conn: asyncpg.Connection) -> None:
    assert await enqueue(conn, "hook", "k") != await enqueue(conn, "other", "k")
    assert await messages(conn) == 2


async def test_key_is_remembered_after_the_message_is_delivered(conn: asyncpg.Connection) -> None:
    first = await enqueue(conn, "hook", "k")
    # Delivery removes the row from the hot table.
    await conn.execute("DELETE FROM outbox.messages WHERE id = $1", first)
    assert await enqueue(conn, "hook", "k") == first
    assert await messages(conn) == 0


async def test_key_expires_after_the_dedupe_window(conn: asyncpg.Connection) -> None:
    await operate.set_config(conn, dedupe_window_seconds=60)
    first = await enqueue(conn, "hook", "k")
    await conn.execute("DELETE FROM outbox.messages WHERE id = $1", first)
    await conn.execute("UPDATE outbox.idempotency_keys SET created_at = now() - interval '61 s'")
    second = await enqueue(conn, "hook", "k")
    assert second != first
    assert await messages(conn) == 1
    assert await conn.fetchval("SELECT message_id FROM outbox.idempotency_keys") == second


async def test_key_never_expires_while_its_message_is_unfinished(conn: asyncpg.Connection) -> None:
    await operate.set_config(conn, dedupe_window_seconds=60)
    first = await enqueue(conn, "hook", "k")
    await conn.execute("UPDATE outbox.idempotency_keys SET created_at = now() - interval '1 day'")
    assert await enqueue(conn, "hook", "k") == first
    assert await messages(conn) == 1


async def test_rolled_back_key_is_free_again(conn: asyncpg.Connection) -> None:
    tr = conn.transaction()
    await tr.start()
    await outbox.enqueue(conn, "hook", {}, idempotency_key="k")
    await tr.rollback()
    assert await conn.fetchval("SELECT count(*) FROM outbox.idempotency_keys") == 0
    await enqueue(conn, "hook", "k")
    assert await messages(conn) == 1


async def test_concurrent_producers_racing_with_one_key_get_one_message(database_url: str) -> None:
    """Twenty producers, each in its own open transaction, enqueue the same key at once."""
    producers = [await connect(database_url) for _ in range(20)]
    start = asyncio.Event()

    async def produce(conn: asyncpg.Connection, n: int) -> object:
        async with conn.transaction():
            await start.wait()
            message_id = await outbox.enqueue(conn, "hook", {"n": n}, idempotency_key="race")
            await asyncio.sleep(0.01)  # hold the transaction open a little
            return message_id

    try:
        tasks = [asyncio.create_task(produce(c, n)) for n, c in enumerate(producers)]
        await asyncio.sleep(0.05)
        start.set()
        ids = await asyncio.gather(*tasks)
        assert len(set(ids)) == 1
        assert await producers[0].fetchval("SELECT count(*) FROM outbox.messages") == 1
        assert await producers[0].fetchval("SELECT id FROM outbox.messages") == ids[0]
    finally:
        for c in producers:
            await c.close()


async def test_concurrent_race_where_the_first_rolls_back(database_url: str) -> None:
    """If the producer that took the key rolls back, the waiting one inserts its own."""
    a, b = await connect(database_url), await connect(database_url)
    try:
        ta = a.transaction()
        await ta.start()
        await outbox.enqueue(a, "hook", {"who": "a"}, idempotency_key="k")
        tb = b.transaction()
        await tb.start()
        waiting = asyncio.create_task(outbox.enqueue(b, "hook", {"who": "b"}, idempotency_key="k"))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # b waits on a's uncommitted key
        await ta.rollback()
        b_id = await waiting
        await tb.commit()
        assert await a.fetchval("SELECT payload->>'who' FROM outbox.messages") == "b"
        assert await a.fetchval("SELECT id FROM outbox.messages") == b_id
    finally:
        await a.close()
        await b.close()


async def test_batch_dedupes_within_itself_and_against_existing(conn: asyncpg.Connection) -> None:
    existing = await enqueue(conn, "hook", "old")
    async with conn.transaction():
        ids = await outbox.enqueue_many(
            conn,
            [
                {"endpoint": "hook", "payload": {"i": 0}, "idempotency_key": "new"},
                {"endpoint": "hook", "payload": {"i": 1}, "idempotency_key": "new"},
                {"endpoint": "hook", "payload": {"i": 2}, "idempotency_key": "old"},
                {"endpoint": "other", "payload": {"i": 3}, "idempotency_key": "new"},
                {"endpoint": "hook", "payload": {"i": 4}},
            ],
        )
    assert ids[0] == ids[1]
    assert ids[2] == existing
    assert len({ids[0], ids[3], ids[4], existing}) == 4
    assert await messages(conn) == 4  # old + new(hook) + new(other) + unkeyed
    assert (
        await conn.fetchval("SELECT payload->>'i' FROM outbox.messages WHERE id=$1", ids[0]) == "0"
    )


async def test_concurrent_batches_with_overlapping_keys_do_not_deadlock(database_url: str) -> None:
    a, b = await connect(database_url), await connect(database_url)
    keys = [f"k{i}" for i in range(50)]
    try:

        async def batch(conn: asyncpg.Connection, order: list[str]) -> list[object]:
            async with conn.transaction():
                ids = await outbox.enqueue_many(
                    conn, [{"endpoint": "hook", "payload": {}, "idempotency_key": k} for k in order]
                )
                await asyncio.sleep(0.05)
                return list(ids)

        ra, rb = await asyncio.gather(batch(a, keys), batch(b, keys[::-1]))
        assert dict(zip(keys, ra, strict=True)) == dict(zip(keys[::-1], rb, strict=True))
        assert await a.fetchval("SELECT count(*) FROM outbox.messages") == 50
    finally:
        await a.close()
        await b.close()
