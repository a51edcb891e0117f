"""The receiver's inbox on a real PostgreSQL: one effect per webhook-id, through
asyncpg, SQLAlchemy (async and sync) and the FastAPI dependency.

No ``from __future__ import annotations`` here: FastAPI reads the endpoint's
``Annotated`` dependencies, defined inside a function, at run time."""

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

from outbox.db.connect import asyncpg_url, sqlalchemy_async_url
from outbox.deliver.channels.signing import signature_header
from outbox.errors import NotInTransactionError
from outbox.receive import (
    INBOX_TABLE,
    create_inbox,
    create_inbox_sync,
    first_delivery,
    first_delivery_sync,
    inbox_ddl,
    prune_inbox,
)
from outbox.receive.fastapi import Receipt, WebhookReceiver

SECRET = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"


@pytest.fixture
async def inbox(conn: asyncpg.Connection) -> asyncpg.Connection:
    await create_inbox(conn)
    return conn


async def test_the_first_delivery_wins_and_a_duplicate_changes_nothing(
    inbox: asyncpg.Connection,
) -> None:
    async with inbox.transaction():
        assert await first_delivery(inbox, "m-1") is True
    async with inbox.transaction():
        assert await first_delivery(inbox, "m-1") is False
        assert await first_delivery(inbox, "m-2") is True
    assert await inbox.fetchval("SELECT count(*) FROM outbox_inbox") == 2


async def test_a_rolled_back_effect_takes_its_id_with_it(inbox: asyncpg.Connection) -> None:
    transaction = inbox.transaction()
    await transaction.start()
    assert await first_delivery(inbox, "m-1") is True
    await transaction.rollback()  # the effect failed
    async with inbox.transaction():
        assert await first_delivery(inbox, "m-1") is True  # the retry is a first delivery


async def test_outside_a_transaction_it_refuses_and_writes_nothing(
    inbox: asyncpg.Connection,
) -> None:
    with pytest.raises(NotInTransactionError, match="transaction that writes"):
        await first_delivery(inbox, "m-1")
    assert await inbox.fetchval("SELECT count(*) FROM outbox_inbox") == 0
    with pytest.raises(TypeError, match="not dict"):
        await first_delivery({}, "m-1")
    with pytest.raises(ValueError, match="webhook_id"):
        async with inbox.transaction():
            await first_delivery(inbox, "")


@pytest.mark.parametrize("first_commits", [True, False])
async def test_racing_copies_cannot_both_win(
    database_url: str, inbox: asyncpg.Connection, first_commits: bool
) -> None:
    other = await asyncpg.connect(asyncpg_url(database_url))
    try:
        first = inbox.transaction()
        await first.start()
        assert await first_delivery(inbox, "race") is True

        async def second() -> bool:
            async with other.transaction():
                return await first_delivery(other, "race")

        racer = asyncio.create_task(second())
        await asyncio.sleep(0.3)
        assert not racer.done()  # it waits for the first transaction to decide
        await (first.commit() if first_commits else first.rollback())
        # A copy that lost the race does nothing; one that found the first rolled back acts.
        assert await asyncio.wait_for(racer, 10) is (not first_commits)
    finally:
        await other.close()
    assert await inbox.fetchval("SELECT count(*) FROM outbox_inbox") == 1


async def test_sqlalchemy_async_and_sync(database_url: str) -> None:
    engine = create_async_engine(sqlalchemy_async_url(database_url))
    try:
        async with engine.begin() as connection:
            await create_inbox(connection, "public.received")
        async with AsyncSession(engine) as session:
            assert await first_delivery(session, "a", table="public.received") is True
            await session.commit()
        async with AsyncSession(engine) as session:
            assert await first_delivery(session, "a", table="public.received") is False
            await session.rollback()
    finally:
        await engine.dispose()
    sync_engine = create_engine("postgresql+psycopg://" + database_url.split("://", 1)[1])
    try:
        with sync_engine.begin() as connection:
            create_inbox_sync(connection)
        with Session(sync_engine) as session:
            assert first_delivery_sync(session, "a", table="public.received") is False
            assert first_delivery_sync(session, "a") is True
            session.commit()
        with sync_engine.connect() as connection:
            count = connection.execute(text("SELECT count(*) FROM outbox_inbox")).scalar()
            assert count == 1
    finally:
        sync_engine.dispose()


def test_the_shipped_sql_is_the_default_ddl_and_names_are_checked() -> None:
    shipped = Path(__file__).parents[2] / "outbox" / "receive" / "inbox.sql"
    assert inbox_ddl() == shipped.read_text(encoding="utf-8")
    renamed = inbox_ddl("hooks.seen")
    assert 'EXISTS "hooks"."seen" (' in renamed
    assert 'ON "hooks"."seen" USING brin' in renamed
    assert '"seen_received_at"' in renamed
    assert INBOX_TABLE not in renamed
    for bad in ["Seen", "a;drop table x", "a.b.c", '"x"', ""]:
        with pytest.raises(ValueError, match="table"):
            inbox_ddl(bad)


async def test_the_shipped_sql_applies_twice(conn: asyncpg.Connection) -> None:
    shipped = Path(__file__).parents[2] / "outbox" / "receive" / "inbox.sql"
    for _ in range(2):
        await conn.execute(shipped.read_text(encoding="utf-8"))
    index = await conn.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'outbox_inbox_received_at'"
    )
    assert "brin" in index


async def test_prune_removes_only_old_ids_in_batches(inbox: asyncpg.Connection) -> None:
    await inbox.execute(
        "INSERT INTO outbox_inbox (webhook_id, received_at)"
        " SELECT 'old-' || i, now() - interval '10 days' FROM generate_series(1, 25) i"
    )
    await inbox.execute("INSERT INTO outbox_inbox (webhook_id) VALUES ('new')")
    assert await prune_inbox(inbox, timedelta(days=7), batch=10) == 25
    assert await inbox.fetchval("SELECT array_agg(webhook_id) FROM outbox_inbox") == ["new"]
    with pytest.raises(ValueError, match="positive"):
        await prune_inbox(inbox, timedelta(0))


# -- the FastAPI dependency --------------------------------------------------------------


def receiver_app(database_url: str, fail_on: set[int]) -> tuple[FastAPI, Any]:
    engine = create_async_engine(sqlalchemy_async_url(database_url))
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def get_session() -> AsyncIterator[AsyncSession]:
        async with sessions() as session:
            yield session

    receiver = WebhookReceiver(SECRET)
    app = FastAPI()

    @app.post("/hooks")
    async def hook(
        receipt: Annotated[Receipt, Depends(receiver.once(get_session))],
        session: Annotated[AsyncSession, Depends(get_session)],
    ) -> dict[str, Any]:
        if receipt.first:
            order = receipt.json()["order"]
            await session.execute(
                text("INSERT INTO effects (webhook_id, order_id) VALUES (:w, :o)"),
                {"w": receipt.webhook_id, "o": order},
            )
            if order in fail_on:
                fail_on.discard(order)
                raise HTTPException(503, "the effect failed once")
            await asyncio.sleep(0.05)  # a slow effect: racing copies overlap
            await session.commit()
        return {"first": receipt.first}

    @app.post("/hooks/seen")
    async def seen(
        receipt: Annotated[Receipt, Depends(receiver.once(get_session))],
        session: Annotated[AsyncSession, Depends(get_session)],
    ) -> dict[str, Any]:
        await session.commit()
        return {"first": receipt.first, "replay": receipt.replay, "topic": receipt.topic}

    return app, engine


def webhook(
    order: int, wid: str | None = None, secret: str = SECRET
) -> tuple[dict[str, str], bytes]:
    body = f'{{"order": {order}}}'.encode()
    wid = wid or f"msg-{order}"
    at = int(time.time())
    headers = {
        "webhook-id": wid,
        "webhook-timestamp": str(at),
        "webhook-signature": signature_header([secret], wid, at, body),
        "content-type": "application/json",
    }
    return headers, body


async def test_fastapi_dependency_acts_once_and_answers_duplicates_2xx(
    database_url: str, inbox: asyncpg.Connection
) -> None:
    await inbox.execute("CREATE TABLE effects (webhook_id text, order_id int)")
    app, engine = receiver_app(database_url, fail_on={3})
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:

            async def post(order: int, **kw: Any) -> httpx.Response:
                headers, body = webhook(order, **kw)
                return await client.post("/hooks", content=body, headers=headers)

            assert (await post(1)).json() == {"first": True}
            again = await post(1)
            assert again.status_code == 200
            assert again.json() == {"first": False}
            # Ten copies at once: one acts, nine wait for it and answer 200.
            answers = await asyncio.gather(*(post(2) for _ in range(10)))
            assert sorted(a.json()["first"] for a in answers) == [False] * 9 + [True]
            # A failed effect rolls its id back: the sender's retry acts.
            assert (await post(3)).status_code == 503
            assert (await post(3)).json() == {"first": True}
            # Refused before any database work: bad signature 401, missing header 400.
            bad = await post(4, secret="whsec_b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA")
            assert bad.status_code == 401
            assert "no signature" in bad.json()["detail"]
            headers, body = webhook(5)
            del headers["webhook-id"]
            missing = await client.post("/hooks", content=body, headers=headers)
            assert missing.status_code == 400
            assert missing.json()["detail"] == "the request has no webhook-id header"
    finally:
        await engine.dispose()
    effects = await inbox.fetch("SELECT order_id, count(*) FROM effects GROUP BY 1 ORDER BY 1")
    assert [tuple(r) for r in effects] == [(1, 1), (2, 1), (3, 1)]
    seen = await inbox.fetchval("SELECT array_agg(webhook_id ORDER BY 1) FROM outbox_inbox")
    assert seen == ["msg-1", "msg-2", "msg-3"]


async def test_a_replay_of_a_recorded_id_is_told_from_a_duplicate(
    database_url: str, inbox: asyncpg.Connection
) -> None:
    app, engine = receiver_app(database_url, fail_on=set())
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:

            async def post(**extra: str) -> Any:
                headers, body = webhook(9)
                answer = await client.post("/hooks/seen", content=body, headers=headers | extra)
                assert answer.status_code == 200
                return answer.json()

            topic = {"outbox-topic": "order.created"}
            seen = [await post(**topic), await post(**topic)]
            seen.append(await post(**topic, **{"outbox-replay": "1"}))
            assert [(s["first"], s["replay"]) for s in seen] == [
                (True, False),
                (False, False),  # a duplicate: the effect is not done again
                (False, True),  # a replay: the receiver's choice
            ]
            assert {s["topic"] for s in seen} == {"order.created"}
    finally:
        await engine.dispose()


def test_the_receiver_never_shows_its_secret() -> None:
    receiver = WebhookReceiver(SECRET)
    assert SECRET not in repr(receiver)
    assert SECRET[6:] not in repr(receiver)
