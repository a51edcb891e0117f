"""Alembic environment: runs migrations over asyncpg, in the ``outbox`` schema.

The URL comes from the Alembic config (``outbox migrate`` sets it) or from
``OUTBOX_DATABASE_URL``. The version table is ``outbox.alembic_version``.

A database left at the head revision then gets the schema's current truth
(every function, view and trigger, ``outbox/db/schema/``) and the channels
this installation knows (``outbox.channels``), in one more transaction:
see `outbox.db.schema`. Revisions hold tables only, from 0004 on.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from outbox.db import schema
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
    if set(context.get_context().get_current_heads()) == set(context.script.get_heads()):
        from outbox.deliver.channels import registry

        schema.apply(connection, [spec.catalog_row() for spec in registry.channels().values()])


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
