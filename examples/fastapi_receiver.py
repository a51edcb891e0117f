"""The receiving end: verify the signature, then act once per webhook-id.

Run it with ``RECEIVER_DATABASE_URL=postgresql://... WEBHOOK_SECRET=whsec_...
uvicorn fastapi_receiver:app`` (from this directory). The receiver has its own
database: the inbox table and the effect (a shipment per order) live there,
and commit together.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from outbox.receive import create_inbox
from outbox.receive.fastapi import Receipt, WebhookReceiver


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    url = os.environ["RECEIVER_DATABASE_URL"].split("://", 1)[1]
    engine = create_async_engine(f"postgresql+asyncpg://{url}", pool_size=20)
    async with engine.begin() as conn:  # in a real service: your migrations
        await create_inbox(conn)
        await conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS shipments (id bigserial PRIMARY KEY,"
                " order_id bigint NOT NULL, webhook_id text NOT NULL)"
            )
        )
    app.state.sessions = async_sessionmaker(engine, expire_on_commit=False)
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)
receiver = WebhookReceiver(secret=lambda: os.environ["WEBHOOK_SECRET"].split())


async def session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as db:
        yield db


@app.post("/hooks/orders")
async def order_event(
    receipt: Annotated[Receipt, Depends(receiver.once(session))],
    db: Annotated[AsyncSession, Depends(session)],
) -> dict[str, bool]:
    if receipt.first:  # the inbox row and the shipment commit together
        event = receipt.json()
        await db.execute(
            text("INSERT INTO shipments (order_id, webhook_id) VALUES (:o, :w)"),
            {"o": event["order_id"], "w": receipt.webhook_id},
        )
        await db.commit()
    return {"first": receipt.first}  # a duplicate is answered 2xx too
