"""Enqueue from SQLAlchemy: an AsyncSession, and a plain (sync) Session."""

import asyncio
import os

from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import outbox

URL = os.environ["OUTBOX_DATABASE_URL"].split("://", 1)[1]


async def with_async_session() -> None:
    engine = create_async_engine(f"postgresql+asyncpg://{URL}")
    async with AsyncSession(engine) as session, session.begin():
        await session.execute(text("INSERT INTO orders (customer, total) VALUES ('bob', 5)"))
        await outbox.enqueue(session, "orders-webhook", {"event": "order.created"})
    await engine.dispose()


def with_sync_session() -> None:
    engine = create_engine(f"postgresql+psycopg://{URL}")
    with Session(engine) as session, session.begin():
        session.execute(text("INSERT INTO orders (customer, total) VALUES ('cy', 7)"))
        outbox.enqueue_sync(session, "orders-webhook", {"event": "order.created"})
        # Many at once, one round trip:
        outbox.enqueue_many_sync(
            session,
            [outbox.Message(endpoint="orders-webhook", payload={"n": n}) for n in range(100)],
        )
    engine.dispose()


if __name__ == "__main__":
    asyncio.run(with_async_session())
    with_sync_session()
