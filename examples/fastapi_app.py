"""A FastAPI service: the order and its notification commit together, or neither does.

Run it with ``OUTBOX_DATABASE_URL=postgresql://... uvicorn fastapi_app:app``
(from this directory) next to ``outbox worker`` and an endpoint named
``order-events``; ``tests/e2e/test_fastapi_example.py`` does exactly that.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

import outbox

CREDIT_LIMIT = Decimal(1000)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    url = os.environ["OUTBOX_DATABASE_URL"].split("://", 1)[1]
    engine = create_async_engine(f"postgresql+asyncpg://{url}", pool_size=10)
    async with engine.begin() as conn:  # in a real service: your migrations
        await conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY,"
                " customer text NOT NULL, total numeric NOT NULL)"
            )
        )
    app.state.sessions = async_sessionmaker(engine, expire_on_commit=False)
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


async def session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as db:
        yield db


Session = Annotated[AsyncSession, Depends(session)]


class NewOrder(BaseModel):
    customer: str = Field(min_length=1, max_length=100)
    total: Decimal = Field(gt=0, max_digits=12, decimal_places=2)


@app.post("/orders", status_code=201)
async def create_order(order: NewOrder, db: Session) -> dict[str, int]:
    async with db.begin():  # one transaction: the order, its event, the check
        order_id = (
            await db.execute(
                text("INSERT INTO orders (customer, total) VALUES (:c, :t) RETURNING id"),
                {"c": order.customer, "t": order.total},
            )
        ).scalar_one()
        await outbox.enqueue(
            db,
            "order-events",
            {"event": "order.created", "order_id": order_id, "total": str(order.total)},
            key=order.customer,  # one customer's events arrive in order
            idempotency_key=f"order.created:{order_id}",
        )
        owed = (
            await db.execute(
                text("SELECT sum(total) FROM orders WHERE customer = :c"), {"c": order.customer}
            )
        ).scalar_one()
        if owed > CREDIT_LIMIT:  # raising here rolls back the order and its event
            raise HTTPException(422, f"{order.customer} would owe {owed}, over {CREDIT_LIMIT}")
    return {"id": order_id}


@app.get("/orders/{order_id}")
async def get_order(order_id: int, db: Session) -> dict[str, int | str]:
    row = (
        await db.execute(
            text("SELECT id, customer, total FROM orders WHERE id = :i"), {"i": order_id}
        )
    ).one_or_none()
    if row is None:
        raise HTTPException(404, f"no order {order_id}")
    return {"id": row.id, "customer": row.customer, "total": str(row.total)}
