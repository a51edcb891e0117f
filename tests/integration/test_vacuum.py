"""The worker's VACUUM of the hot table: one at a time across the fleet, and
honest about a role that may not vacuum (PostgreSQL only warns)."""

from __future__ import annotations

import time

import asyncpg
import pytest

from outbox import operate
from outbox.deliver.session import open_pool
from outbox.deliver.store import NotPermittedError, PostgresStore


async def _store(url: str, **settings: str) -> PostgresStore:
    """A worker's store; with ``settings`` (a role), a pool of those settings only."""
    if settings:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2, server_settings=settings)
        assert pool is not None
    else:
        pool = await open_pool(url, pooled=False)
    return PostgresStore(pool, worker_id="t", lease_seconds=30)


async def test_an_empty_hot_table_is_vacuumed(database_url: str) -> None:
    store = await _store(database_url)
    try:
        assert await store.vacuum_if_needed(0) is True
    finally:
        await store.pool.close()


async def test_a_vacuum_already_running_is_skipped_not_waited_for(
    database_url: str, conn: asyncpg.Connection
) -> None:
    store = await _store(database_url)
    try:
        async with conn.transaction():
            # What a running VACUUM holds; another vacuum would queue behind it.
            await conn.execute("LOCK TABLE outbox.messages IN SHARE UPDATE EXCLUSIVE MODE")
            started = time.monotonic()
            assert await store.vacuum_if_needed(0) is False
            assert time.monotonic() - started < 5
    finally:
        await store.pool.close()


async def test_a_role_that_may_not_vacuum_is_told_so(
    database_url: str, conn: asyncpg.Connection
) -> None:
    await operate.apply_roles(conn)
    store = await _store(database_url, role="outbox_worker")
    try:
        with pytest.raises(NotPermittedError, match="messages"):
            await store.vacuum_if_needed(0)
    finally:
        await store.pool.close()
