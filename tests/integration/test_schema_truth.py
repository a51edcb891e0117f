"""The schema's current truth: the database `alembic upgrade head` makes has
exactly the functions, views and triggers of ``outbox/db/schema/``, and
whoever may use them keeps that right when the files are applied again."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import asyncpg

from outbox.db import migrate, schema

_FUNCTION = re.compile(r"^CREATE FUNCTION outbox\.(\w+)\(")
_VIEW = re.compile(r"^CREATE VIEW outbox\.(\w+) AS")
_TRIGGER = re.compile(r"^CREATE TRIGGER (\w+)\s")
_COMMENT = re.compile(r"^COMMENT ON (VIEW|FUNCTION) outbox\.(\w+)")
_REVOKE = re.compile(r"^REVOKE EXECUTE ON FUNCTION outbox\.(\w+)\(.*\)\s+FROM PUBLIC;?$", re.S)


def statements() -> Iterator[str]:
    """Every statement of the schema files, without the comment lines above it."""
    for _name, text in schema.current():
        for statement in schema.split(text):
            lines = statement.splitlines()
            while lines and (lines[0].startswith("--") or not lines[0].strip()):
                lines.pop(0)
            yield "\n".join(lines)


def defined() -> dict[str, dict[str, str]]:
    """What the files define: functions, views, triggers and comments, by name."""
    found: dict[str, dict[str, str]] = {
        "function": {}, "view": {}, "trigger": {}, "comment": {}, "revoke": {},
    }  # fmt: skip
    for statement in statements():
        for kind, pattern in (
            ("function", _FUNCTION),
            ("view", _VIEW),
            ("trigger", _TRIGGER),
            ("comment", _COMMENT),
            ("revoke", _REVOKE),
        ):
            match = pattern.match(statement)
            if match:
                name = match.group(match.lastindex or 1)
                assert name not in found[kind], f"{kind} {name} defined twice"
                found[kind][name] = statement
                break
        else:
            raise AssertionError(f"a statement the truth test cannot tell: {statement[:80]}")
    return found


async def in_database(conn: asyncpg.Connection) -> dict[str, set[str]]:
    functions = await conn.fetch(
        "SELECT proname FROM pg_proc WHERE pronamespace = 'outbox'::regnamespace"
    )
    views = await conn.fetch("SELECT viewname FROM pg_views WHERE schemaname = 'outbox'")
    triggers = await conn.fetch(
        "SELECT t.tgname FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid"
        " WHERE c.relnamespace = 'outbox'::regnamespace AND NOT t.tgisinternal"
    )
    return {
        "function": {r[0] for r in functions},
        "view": {r[0] for r in views},
        "trigger": {r[0] for r in triggers},
    }


async def differences(conn: asyncpg.Connection) -> list[str]:
    """Where the database and the files disagree. Each object of the files is
    created again beside the migrated one (in a scratch schema, or under another
    name, in a transaction rolled back) and their definitions compared as
    PostgreSQL prints them."""
    files = defined()
    have = await in_database(conn)
    problems = [
        f"{kind} {name}: {'in the database only' if name in have[kind] else 'in the files only'}"
        for kind in ("function", "view", "trigger")
        for name in sorted(have[kind] ^ set(files[kind]))
    ]
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute("CREATE SCHEMA truth_check")
        for kind in ("function", "view", "comment", "trigger", "revoke"):
            for name, statement in files[kind].items():
                if kind not in ("comment", "revoke") and name not in have[kind]:
                    continue  # reported above
                try:
                    async with conn.transaction():
                        same = await _same(conn, kind, name, statement)
                except asyncpg.PostgresError as exc:
                    problems.append(f"{kind} {name}: the file's statement fails here: {exc}")
                    continue
                if not same:
                    problems.append(f"{kind} {name}: its definition differs from the file's")
    finally:
        await tx.rollback()
    return problems


async def _same(conn: asyncpg.Connection, kind: str, name: str, statement: str) -> bool:
    """Is the migrated object as the file's statement makes it?"""
    if kind == "revoke":  # PUBLIC may not call it
        signature = " ".join(
            statement.split("ON FUNCTION ", 1)[1].rsplit("FROM PUBLIC", 1)[0].split()
        )
        public = await conn.fetchval(
            "SELECT has_function_privilege('public', $1::regprocedure, 'EXECUTE')", signature
        )
        return not public
    if kind == "function":
        await conn.execute(statement.replace(f"outbox.{name}(", f"truth_check.{name}(", 1))
        theirs, ours = await conn.fetchrow(
            "SELECT pg_get_functiondef(to_regproc($1)), pg_get_functiondef(to_regproc($2))",
            f"outbox.{name}",
            f"truth_check.{name}",
        )
        return bool(theirs == ours.replace(f"truth_check.{name}(", f"outbox.{name}(", 1))
    if kind == "view":
        await conn.execute(statement.replace(f"outbox.{name} ", f"truth_check.{name} ", 1))
        theirs, ours = await conn.fetchrow(
            "SELECT pg_get_viewdef(to_regclass($1)), pg_get_viewdef(to_regclass($2))",
            f"outbox.{name}",
            f"truth_check.{name}",
        )
        return bool(theirs == ours)
    if kind == "comment":
        await conn.execute(statement.replace(f"outbox.{name}", f"truth_check.{name}", 1))
        to = "regclass" if statement.startswith("COMMENT ON VIEW") else "regproc"
        theirs, ours = await conn.fetchrow(
            f"SELECT obj_description(to_{to}($1)), obj_description(to_{to}($2))",
            f"outbox.{name}",
            f"truth_check.{name}",
        )
        return bool(theirs == ours)
    await conn.execute(statement.replace(name, f"{name}_check", 1))
    theirs, ours = await conn.fetchrow(
        "SELECT (SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = $1),"
        "       (SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = $2)",
        name,
        f"{name}_check",
    )
    return bool(theirs == ours.replace(f"{name}_check", name, 1))


async def test_upgrade_to_head_gives_exactly_what_the_schema_files_define(
    conn: asyncpg.Connection,
) -> None:
    assert await differences(conn) == []


async def test_the_check_sees_a_function_the_files_do_not_define_or_one_changed(
    conn: asyncpg.Connection,
) -> None:
    """The comparison itself: a stray function, and a body edited in the database
    behind the files' back, are both reported."""
    await conn.execute(
        "CREATE FUNCTION outbox._stray() RETURNS int LANGUAGE sql AS 'SELECT 1';"
        "CREATE OR REPLACE FUNCTION outbox._latency_bounds() RETURNS double precision[]"
        " LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT ARRAY[1]::double precision[]'"
    )
    assert await differences(conn) == [
        "function _stray: in the database only",
        "function _latency_bounds: its definition differs from the file's",
    ]


async def test_a_downgrade_and_an_upgrade_again_give_exactly_the_files(
    database_url: str, conn: asyncpg.Connection
) -> None:
    await asyncio.to_thread(migrate.downgrade, database_url, "0003")
    assert "_telegram_riders" not in (await in_database(conn))["function"]  # 0003's own set
    await asyncio.to_thread(migrate.upgrade, database_url)
    assert await differences(conn) == []


async def test_applying_the_files_again_keeps_who_may_use_them(
    database_url: str, conn: asyncpg.Connection
) -> None:
    await conn.execute("DROP ROLE IF EXISTS truth_reader")
    await conn.execute("CREATE ROLE truth_reader")
    try:
        await conn.execute("GRANT SELECT ON outbox.stats TO truth_reader")
        await conn.execute("REVOKE EXECUTE ON FUNCTION outbox._wake_workers() FROM PUBLIC")
        before = await conn.fetchval("SELECT 'outbox.enqueue'::regproc::oid")
        await asyncio.to_thread(migrate.upgrade, database_url)  # unchanged: nothing applied
        assert await conn.fetchval("SELECT 'outbox.enqueue'::regproc::oid") == before
        await conn.execute("UPDATE outbox.schema_files SET digest = 'older files'")
        await asyncio.to_thread(migrate.upgrade, database_url)  # applied again
        assert await conn.fetchval("SELECT 'outbox.enqueue'::regproc::oid") != before
        assert await conn.fetchval(
            "SELECT has_table_privilege('truth_reader', 'outbox.stats', 'SELECT')"
        )
        assert not await conn.fetchval(
            "SELECT has_function_privilege('public', 'outbox._wake_workers()', 'EXECUTE')"
        )
        assert await differences(conn) == []
    finally:
        await conn.execute("DROP OWNED BY truth_reader")
        await conn.execute("DROP ROLE truth_reader")
