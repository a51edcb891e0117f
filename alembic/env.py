"""Alembic environment: runs migrations over asyncpg, in the ``outbox`` schema.

The URL comes from the Alembic config (``outbox migrate`` sets it) or from
``OUTBOX_DATABASE_URL``. The version table is ``outbox.alembic_version``.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from outbox.db.connect import sqlalchemy_async_url
from outbox.db.tables import SCHEMA, metadata
from outbox.settings import load_settings

config = context.config


def _url() -> str:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    if not url:
        url = load_settings().require_database_url()
    return sqlalchemy_async_url(str(url))


def _run(connection: Connection) -> None:
    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=SCHEMA,
        include_schemas=False,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_async_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=_url(),
        target_metadata=metadata,
        version_table_schema=SCHEMA,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    existing = config.attributes.get("connection")
    if existing is not None:
        _run(existing)
    else:
        asyncio.run(_run_online())
