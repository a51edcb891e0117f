"""The migrations and the SQLAlchemy metadata describe the same schema; downgrade works."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from outbox.db import migrate
from outbox.db.tables import SCHEMA, metadata


def sync_url(url: str) -> str:
    return "postgresql+psycopg://" + url.split("://", 1)[1]


def schema_diff(url: str) -> list[Any]:
    def include_name(name: str | None, type_: str, parent: dict[str, str | None]) -> bool:
        if type_ == "schema":
            return name == SCHEMA
        return not (type_ == "table" and name == "alembic_version")

    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn,
                opts={
                    "include_schemas": True,
                    "include_name": include_name,
                    "compare_type": True,
                    "compare_server_default": True,
                },
            )
            return list(compare_metadata(ctx, metadata))
    finally:
        engine.dispose()


async def outbox_objects(conn: asyncpg.Connection) -> dict[str, list[str]]:
    tables = await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'outbox' ORDER BY 1"
    )
    functions = await conn.fetch(
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'outbox' ORDER BY 1"
    )
    views = await conn.fetch("SELECT viewname FROM pg_views WHERE schemaname = 'outbox'")
    return {
        "tables": [r[0] for r in tables],
        "functions": [r[0] for r in functions],
        "views": [r[0] for r in views],
    }


def test_migrated_schema_matches_the_metadata(database_url: str) -> None:
    assert schema_diff(database_url) == []


async def test_downgrade_removes_everything_and_upgrade_restores_it(
    database_url: str, conn: asyncpg.Connection
) -> None:
    before = await outbox_objects(conn)
    assert "messages" in before["tables"]
    assert "enqueue" in before["functions"]
    assert sorted(before["views"]) == [
        "blocked_keys", "database_health", "endpoint_health", "endpoint_settings", "stats",
        "throughput", "topic_stats",
    ]  # fmt: skip

    # Down to 0002: the stats view loses the columns 0003 added, the throughput view goes.
    await asyncio.to_thread(migrate.downgrade, database_url, "0002")
    at_0002 = await outbox_objects(conn)
    assert sorted(at_0002["views"]) == ["blocked_keys", "endpoint_health", "stats"]
    columns = await conn.fetch(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = 'outbox' AND table_name = 'stats'"
    )
    assert "p99_latency_ms_last_hour" not in {r[0] for r in columns}
    # One step further: revision 0001 exactly as it was, and its enqueue() still works.
    await asyncio.to_thread(migrate.downgrade, database_url, "0001")
    at_0001 = await outbox_objects(conn)
    assert at_0001["views"] == ["stats"]
    assert "endpoint_state" not in at_0001["tables"]
    assert "_claim" not in at_0001["functions"]
    await conn.execute("INSERT INTO outbox.endpoints (name, channel) VALUES ('n', 'null')")
    async with conn.transaction():
        assert await conn.fetchval("SELECT outbox.enqueue('n', '{}')") is not None
    await conn.execute("DELETE FROM outbox.messages")
    await conn.execute("DELETE FROM outbox.endpoints")

    await asyncio.to_thread(migrate.downgrade, database_url, "base")
    after_down = await outbox_objects(conn)
    assert after_down == {"tables": ["alembic_version"], "functions": [], "views": []}

    await asyncio.to_thread(migrate.upgrade, database_url)
    assert await outbox_objects(conn) == before
    assert schema_diff(database_url) == []


def test_upgrade_is_idempotent(database_url: str) -> None:
    migrate.upgrade(database_url)
    migrate.upgrade(database_url)
    assert migrate.current_revision(sync_url(database_url)) == migrate.head_revision()


async def test_hot_table_carries_its_autovacuum_settings(conn: asyncpg.Connection) -> None:
    options = await conn.fetchval(
        "SELECT reloptions FROM pg_class WHERE oid = 'outbox.messages'::regclass"
    )
    assert "autovacuum_vacuum_scale_factor=0.01" in options
    assert "autovacuum_vacuum_cost_delay=0" in options


async def test_claim_indexes_are_partial_on_unleased_rows(conn: asyncpg.Connection) -> None:
    first = await conn.fetchval("SELECT pg_get_indexdef('outbox.messages_first_idx'::regclass)")
    retry = await conn.fetchval("SELECT pg_get_indexdef('outbox.messages_retry_idx'::regclass)")
    assert "WHERE ((lease_token IS NULL) AND (attempts = 0))" in first
    assert "WHERE ((lease_token IS NULL) AND (attempts > 0))" in retry
    for definition in (first, retry):
        assert "(endpoint, priority DESC, available_at, seq)" in definition


async def test_enqueue_keeps_its_grants_when_it_gains_the_trace_arguments(
    database_url: str, conn: asyncpg.Connection
) -> None:
    """Revision 0006 gives outbox.enqueue() two optional arguments: a role that could
    call the old one can call the new one, and 0005's enqueue() comes back on downgrade."""
    old = "outbox.enqueue(text, jsonb, text, text, integer, timestamptz, jsonb)"
    new = "outbox.enqueue(text, jsonb, text, text, integer, timestamptz, jsonb, text, text)"
    role = f"app_{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(migrate.downgrade, database_url, "0005")
    assert await conn.fetchval("SELECT to_regprocedure($1) IS NOT NULL", old)
    await conn.execute(f"CREATE ROLE {role}")
    try:
        await conn.execute(f"REVOKE EXECUTE ON FUNCTION {old} FROM PUBLIC")
        await conn.execute(f"GRANT EXECUTE ON FUNCTION {old} TO {role}")
        await asyncio.to_thread(migrate.upgrade, database_url)
        assert await conn.fetchval("SELECT to_regprocedure($1) IS NULL", old)
        assert await conn.fetchval("SELECT has_function_privilege($1, $2, 'EXECUTE')", role, new)
        # PUBLIC's default EXECUTE stays revoked (the role's right is its own).
        assert not await conn.fetchval(
            "SELECT has_function_privilege('public', $1, 'EXECUTE')", new
        )
    finally:
        await conn.execute(f"REVOKE ALL ON FUNCTION {new} FROM {role}")
        await conn.execute(f"DROP ROLE {role}")
