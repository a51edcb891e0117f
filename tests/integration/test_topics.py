"""Topics: subscriptions, outbox.publish() and its fan-out, on the real database,
delivered by a real worker to a real receiver and a fake Bot API."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool
from support import add_endpoint, running_worker, until

import outbox
from outbox import operate
from outbox.db.connect import asyncpg_url
from outbox.devtools.fake_telegram import FakeTelegram
from outbox.devtools.receiver import Receiver
from outbox.operate.subscriptions import (
    add_subscription,
    list_subscriptions,
    pause_subscription,
    remove_subscription,
)

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw_topics"


async def _empty(conn: asyncpg.Connection) -> bool:
    return await count(conn, "SELECT count(*) FROM outbox.messages") == 0


async def count(conn: asyncpg.Connection, sql: str, *args: Any) -> int:
    return int(await conn.fetchval(sql, *args))


async def telegram(conn: asyncpg.Connection, tg: FakeTelegram, name: str = "ops") -> None:
    await add_endpoint(conn, name, tg.api_url, channel="telegram", secret=TOKEN)


async def publish(conn: asyncpg.Connection, topic: str, payload: dict[str, Any], **kw: Any) -> Any:
    async with conn.transaction():
        return await outbox.publish(conn, topic, payload, **kw)


async def test_a_publish_fans_out_in_the_callers_transaction_and_each_copy_is_delivered(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver() as crm, Receiver() as erp, FakeTelegram() as tg:
        await add_endpoint(conn, "crm", crm.url())
        await add_endpoint(conn, "erp", erp.url())
        await telegram(conn, tg)
        await add_subscription(conn, "crm", "order.*")
        await add_subscription(conn, "erp", "order.created")
        await add_subscription(conn, "ops", "order.#")
        payload = {"order": 7, "chat_id": -100123, "text": "order 7 created"}
        made: list[uuid.UUID] = []

        async def rolled_back() -> None:
            async with conn.transaction():
                made.extend(await outbox.publish(conn, "order.created", payload))
                raise RuntimeError("the business check failed")

        with pytest.raises(RuntimeError, match="the business check failed"):
            await rolled_back()
        assert len(made) == 3
        assert await count(conn, "SELECT count(*) FROM outbox.messages") == 0
        ids = await publish(conn, "order.created", payload, key="order-7")
        rows = await conn.fetch("SELECT id, endpoint, topic, key FROM outbox.messages")
        assert {r["endpoint"]: r["id"] for r in rows} == dict(
            zip(["crm", "erp", "ops"], ids, strict=True)
        )
        assert {r["topic"] for r in rows} == {"order.created"}
        async with running_worker(database_url):
            await until(lambda: len(crm.snapshot()) == 1 and len(erp.snapshot()) == 1)
            await until(lambda: len(tg.calls()) == 1)
    for rx, endpoint in ((crm, "crm"), (erp, "erp")):
        (got,) = rx.snapshot()
        assert got.json() == payload
        assert got.headers["outbox-topic"] == "order.created"
        assert got.headers["webhook-id"] == str(
            dict(zip(["crm", "erp", "ops"], ids, strict=True))[endpoint]
        )
        assert "outbox-replay" not in got.headers
    ((_, call),) = tg.calls()
    assert call.chat_id == -100123
    assert call.params["text"] == "order 7 created"
    ledger = await conn.fetch("SELECT endpoint, topic, outcome FROM outbox.attempts")
    assert sorted((r["endpoint"], r["topic"], r["outcome"]) for r in ledger) == [
        ("crm", "order.created", "delivered"),
        ("erp", "order.created", "delivered"),
        ("ops", "order.created", "delivered"),
    ]


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("order.created", ["order.created"], ["order", "order.created.eu", "order.updated"]),
        ("order.*", ["order.created", "order.paid"], ["order", "order.created.eu", "invoice.x"]),
        ("*.created", ["order.created", "user.created"], ["created", "a.b.created"]),
        ("order.#", ["order", "order.created", "order.created.eu"], ["orders", "invoice.order"]),
        ("#", ["a", "a.b", "a.b.c"], []),
        ("order.*.eu", ["order.created.eu"], ["order.eu", "order.created.us"]),
    ],
)
async def test_topic_patterns_match_one_word_with_star_and_the_rest_with_hash(
    conn: asyncpg.Connection, pattern: str, matches: list[str], misses: list[str]
) -> None:
    await add_endpoint(conn, "hook", "https://crm.example/hook")
    await add_subscription(conn, "hook", pattern)
    for topic in matches:
        assert len(await publish(conn, topic, {"t": topic})) == 1, topic
    for topic in misses:
        assert await publish(conn, topic, {"t": topic}) == [], topic
    assert await count(conn, "SELECT count(*) FROM outbox.messages") == len(matches)


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        ("order.#.eu", "# stands for the rest of a topic"),
        ("order..x", "must be dot-separated words"),
        ("order.cr*", "must be dot-separated words"),
        ("", "must be dot-separated words"),
        ("x" * 256, "must be dot-separated words"),
    ],
)
async def test_a_bad_pattern_is_refused_naming_it(
    conn: asyncpg.Connection, pattern: str, says: str
) -> None:
    await add_endpoint(conn, "hook", "https://crm.example/hook")
    with pytest.raises(outbox.InvalidInputError, match=says) as caught:
        await add_subscription(conn, "hook", pattern)
    assert caught.value.field == "topic"
    assert await count(conn, "SELECT count(*) FROM outbox.subscriptions") == 0


async def test_a_filter_is_a_containment_test_on_the_payload(conn: asyncpg.Connection) -> None:
    await add_endpoint(conn, "nl", "https://nl.example/hook")
    await add_endpoint(conn, "all", "https://all.example/hook")
    await add_subscription(conn, "nl", "order.created", {"country": "NL", "tags": ["b2b"]})
    await add_subscription(conn, "all", "order.created")
    assert len(await publish(conn, "order.created", {"country": "NL", "tags": ["b2b", "x"]})) == 2
    assert len(await publish(conn, "order.created", {"country": "NL", "tags": ["x"]})) == 1
    assert len(await publish(conn, "order.created", {"country": "DE"})) == 1
    got = await conn.fetch("SELECT endpoint, count(*) FROM outbox.messages GROUP BY 1")
    assert {r["endpoint"]: r["count"] for r in got} == {"nl": 1, "all": 3}
    with pytest.raises(outbox.InvalidInputError, match="filter: must be a JSON object"):
        await add_subscription(conn, "all", "x", ["not", "an", "object"])  # type: ignore[arg-type]


async def test_a_repeated_publish_returns_the_first_ids_and_inserts_nothing(
    conn: asyncpg.Connection,
) -> None:
    await add_endpoint(conn, "a", "https://a.example/hook")
    await add_endpoint(conn, "b", "https://b.example/hook")
    await add_subscription(conn, "a", "invoice.*")
    await add_subscription(conn, "b", "invoice.paid")
    first = await publish(conn, "invoice.paid", {"n": 1}, idempotency_key="inv-1")
    again = await publish(conn, "invoice.paid", {"n": 1}, idempotency_key="inv-1")
    assert len(first) == 2
    assert again == first
    # The key is the topic's: the same key on another topic is another event.
    assert len(await publish(conn, "invoice.sent", {"n": 1}, idempotency_key="inv-1")) == 1
    assert await count(conn, "SELECT count(*) FROM outbox.messages") == 3
    # Nothing subscribed: none made, and the republish says the same.
    assert await publish(conn, "refund.made", {"n": 1}, idempotency_key="r-1") == []
    await add_subscription(conn, "a", "refund.made")
    assert await publish(conn, "refund.made", {"n": 1}, idempotency_key="r-1") == []
    # Past the dedupe window the key is taken over.
    await conn.execute("UPDATE outbox.publications SET created_at = now() - interval '8 days'")
    assert len(await publish(conn, "refund.made", {"n": 1}, idempotency_key="r-1")) == 1


async def test_a_payload_one_subscribers_channel_refuses_names_the_subscription_and_inserts_nothing(
    conn: asyncpg.Connection,
) -> None:
    with FakeTelegram() as tg:
        await add_endpoint(conn, "crm", "https://crm.example/hook")
        await telegram(conn, tg)
        await add_subscription(conn, "crm", "order.*")
        await add_subscription(conn, "ops", "order.created")
        with pytest.raises(outbox.InvalidInputError) as caught:
            await publish(conn, "order.created", {"order": 1})  # no chat_id, no text for ops
        assert "subscription of ops to order.created" in str(caught.value)
        assert "chat_id" in str(caught.value) or "text" in str(caught.value)
        assert await count(conn, "SELECT count(*) FROM outbox.messages") == 0
        # The topic nobody on Telegram hears is fine.
        assert len(await publish(conn, "order.paid", {"order": 1})) == 1
        # A paused subscription makes no copy, so nothing refuses either.
        await pause_subscription(conn, "ops", "order.created")
        assert len(await publish(conn, "order.created", {"order": 2})) == 1
        await pause_subscription(conn, "ops", "order.created", paused=False)
        assert (
            len(await publish(conn, "order.created", {"order": 3, "chat_id": 1, "text": "t"})) == 2
        )


async def test_bad_events_are_refused_before_anything_is_written(conn: asyncpg.Connection) -> None:
    await add_endpoint(conn, "crm", "https://crm.example/hook")
    await add_subscription(conn, "crm", "#")
    for topic, payload, says in (
        ("no spaces", {}, "topic"),
        ("order..x", {}, "topic"),
        ("order.created", [1], "payload"),
    ):
        with pytest.raises(outbox.InvalidInputError, match=says):
            await publish(conn, topic, payload)  # type: ignore[arg-type]
    # The same checks in SQL, for producers of any language.
    for sql, says in (
        ("SELECT outbox.publish('a b', '{}')", "topic: must be dot-separated"),
        ("SELECT outbox.publish(NULL, '{}')", "topic: is required"),
        ("SELECT outbox.publish('a', '[]')", "payload: must be a JSON object"),
    ):
        with pytest.raises(asyncpg.PostgresError, match=says):
            async with conn.transaction():
                await conn.fetchval(sql)
    with pytest.raises(outbox.InvalidInputError, match=r"messages\[1\]\.topic"):
        async with conn.transaction():
            await outbox.publish_many(
                conn, [{"topic": "a", "payload": {}}, {"topic": "", "payload": {}}]
            )
    assert await count(conn, "SELECT count(*) FROM outbox.messages") == 0


async def test_publish_many_and_sqlalchemy_sessions(
    database_url: str, conn: asyncpg.Connection
) -> None:
    await add_endpoint(conn, "crm", "https://crm.example/hook")
    await add_endpoint(conn, "erp", "https://erp.example/hook")
    await add_subscription(conn, "crm", "order.*")
    await add_subscription(conn, "erp", "order.paid")
    async with conn.transaction():
        many = await outbox.publish_many(
            conn,
            [
                {"topic": "order.created", "payload": {"n": 1}},
                outbox.Event(topic="order.paid", payload={"n": 2}, key="k"),
                {"topic": "user.created", "payload": {"n": 3}},
            ],
        )
    assert [len(ids) for ids in many] == [1, 2, 0]
    engine = create_engine(
        "postgresql+psycopg://" + asyncpg_url(database_url).split("://", 1)[1], poolclass=NullPool
    )
    try:
        with Session(engine) as session, session.begin():
            one = outbox.publish_sync(session, "order.paid", {"n": 4})
            more = outbox.publish_many_sync(session, [{"topic": "order.created", "payload": {}}])
    finally:
        engine.dispose()
    assert len(one) == 2
    assert [len(ids) for ids in more] == [1]
    assert await count(conn, "SELECT count(*) FROM outbox.messages") == 6


async def test_subscriptions_are_listed_removed_and_go_with_their_endpoint(
    conn: asyncpg.Connection,
) -> None:
    await add_endpoint(conn, "crm", "https://crm.example/hook")
    await add_subscription(conn, "crm", "order.*", {"vip": True})
    await add_subscription(conn, "crm", "user.#")
    with pytest.raises(outbox.InvalidInputError, match=r"subscribes to 'order\.\*' already"):
        await add_subscription(conn, "crm", "order.*")
    with pytest.raises(outbox.UnknownEndpointError):
        await add_subscription(conn, "nope", "order.*")
    found = await list_subscriptions(conn)
    assert [(s.endpoint, s.topic, s.filter) for s in found] == [
        ("crm", "order.*", {"vip": True}),
        ("crm", "user.#", None),
    ]
    await remove_subscription(conn, "crm", "order.*")
    with pytest.raises(outbox.InvalidInputError, match=r"no subscription to 'order\.\*'"):
        await remove_subscription(conn, "crm", "order.*")
    await operate.remove_endpoint(conn, "crm")
    assert await count(conn, "SELECT count(*) FROM outbox.subscriptions") == 0


async def test_topic_stats_count_each_topic_over_its_endpoints(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver() as rx:
        await add_endpoint(conn, "a", rx.url("/a"))
        await add_endpoint(conn, "b", rx.url("/b"))
        await add_subscription(conn, "a", "order.*")
        await add_subscription(conn, "b", "order.created")
        for n in range(3):
            await publish(conn, "order.created", {"n": n})
        await publish(conn, "order.paid", {"n": 9})
        before = {r["topic"]: dict(r) for r in await conn.fetch("SELECT * FROM outbox.topic_stats")}
        assert before["order.created"]["pending"] == 6
        assert before["order.created"]["subscribers"] == ["a", "b"]
        assert before["order.paid"]["pending"] == 1
        assert before["order.paid"]["subscribers"] == ["a"]
        async with running_worker(database_url):
            await until(lambda: len(rx.snapshot()) == 7)
            await until(lambda: _empty(conn))
    after = {r["topic"]: dict(r) for r in await conn.fetch("SELECT * FROM outbox.topic_stats")}
    assert after["order.created"]["delivered_last_hour"] == 6
    assert after["order.created"]["pending"] == 0
    assert after["order.paid"]["delivered_last_hour"] == 1
