"""Enqueue from asyncpg, in the same transaction as the business write."""

import asyncio
import os

import asyncpg

import outbox


async def place_order(conn: asyncpg.Connection, customer: str, total: str) -> None:
    async with conn.transaction():
        order_id = await conn.fetchval(
            "INSERT INTO orders (customer, total) VALUES ($1, $2) RETURNING id", customer, total
        )
        await outbox.enqueue(
            conn,
            "orders-webhook",
            {"event": "order.created", "order_id": order_id, "total": total},
            key=f"customer-{customer}",  # per-key ordering and rate limits
            idempotency_key=f"order-{order_id}",  # a retried request won't send twice
        )
    # Committed: the order and its notification exist together, or neither does.


async def main() -> None:
    conn = await asyncpg.connect(os.environ["OUTBOX_DATABASE_URL"])
    try:
        await place_order(conn, "ada", "19.99")
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
