"""Least privilege: `outbox roles` creates four group roles and grants each
exactly what it needs (``outbox/db/roles.sql``)."""

from __future__ import annotations

import asyncpg

from outbox.db.queries import roles_statements

ROLES = ("outbox_producer", "outbox_worker", "outbox_monitor", "outbox_operator")


async def apply_roles(conn: asyncpg.Connection) -> None:
    """Create the four group roles if missing and grant each exactly what it
    needs in this database (``sql/roles.sql``); safe to run again."""
    async with conn.transaction():
        for statement in roles_statements():
            await conn.execute(statement)
