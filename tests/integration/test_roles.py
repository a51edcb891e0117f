"""Least privilege: what `outbox roles` grants, checked by acting as each role."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import asyncpg
import pytest
from support import FAST, add_endpoint, running_worker, until

import outbox
from outbox import operate
from outbox.deliver.session import WORKER_SESSION_SETTINGS
from outbox.devtools.receiver import Action, Receiver, always


@pytest.fixture
async def roles(conn: asyncpg.Connection) -> None:
    await operate.apply_roles(conn)
    await operate.apply_roles(conn)  # idempotent
    await conn.execute(
        "INSERT INTO outbox.endpoints (name, channel, secret) VALUES"
        " ('tg', 'telegram', '123456:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'), ('n', 'null', NULL)"
    )


async def as_role(database_url: str, role: str) -> asyncpg.Connection:
    c = await asyncpg.connect(database_url)
    await c.execute(f"SET ROLE {role}")
    return c


async def refused(conn: asyncpg.Connection, *statements: str) -> None:
    """Each statement fails for want of a privilege (the connection stays usable)."""
    for statement in statements:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch(statement)


async def test_the_producer_can_enqueue_and_nothing_more(
    database_url: str, conn: asyncpg.Connection, roles: None
) -> None:
    producer = await as_role(database_url, "outbox_producer")
    try:
        async with producer.transaction():
            first = await outbox.enqueue(producer, "n", {"a": 1}, idempotency_key="k")
            again = await outbox.enqueue(producer, "n", {"a": 1}, idempotency_key="k")
            many = await outbox.enqueue_many(
                producer,
                [
                    {"endpoint": "tg", "payload": {"chat_id": 5, "text": "hi"}},
                    {"endpoint": "n", "payload": {}, "headers": {"X-A": "b"}},
                ],
            )
        assert first == again
        assert len(many) == 2
        with pytest.raises(outbox.UnknownEndpointError):
            async with producer.transaction():
                await outbox.enqueue(producer, "nope", {})
        await refused(
            producer,
            "SELECT payload FROM outbox.messages",
            "SELECT id FROM outbox.messages",
            "SELECT secret FROM outbox.endpoints",
            "SELECT * FROM outbox.endpoints",
            "SELECT * FROM outbox.attempts",
            "SELECT * FROM outbox.dead_letters",
            "SELECT * FROM outbox.endpoint_state",
            "SELECT * FROM outbox.stats",
            "UPDATE outbox.messages SET priority = 5",
            "DELETE FROM outbox.messages",
            "UPDATE outbox.endpoints SET url = 'http://x/'",
            "SELECT * FROM outbox._claim(10, gen_random_uuid(), 60, 'x', 1, 0.5)",
        )
    finally:
        await producer.close()
    assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 3


async def test_the_worker_role_delivers_records_and_reports(
    database_url: str, conn: asyncpg.Connection, roles: None
) -> None:
    with Receiver(always(Action(410))) as rx:
        await add_endpoint(conn, "hook", rx.url())
        async with conn.transaction():
            await outbox.enqueue_many(
                conn,
                [{"endpoint": "n", "payload": {"i": i}} for i in range(20)]
                + [{"endpoint": "hook", "payload": {}}],
            )
        settings = {**WORKER_SESSION_SETTINGS, "role": "outbox_worker"}
        config = replace(FAST, prune_interval=0.1, vacuum_check_interval=0.1)
        async with running_worker(database_url, config, server_settings=settings) as worker:
            assert await worker.store.pool.fetchval("SELECT current_user") == "outbox_worker"
            await until(lambda: _fetch(conn, "SELECT count(*) = 0 FROM outbox.messages"), within=20)
            await until(
                lambda: _fetch(
                    conn, "SELECT paused_at IS NOT NULL FROM outbox.endpoints WHERE name = 'hook'"
                )
            )
    assert (
        await conn.fetchval("SELECT count(*) FROM outbox.attempts WHERE outcome = 'delivered'")
        == 20
    )
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 1
    as_worker = await as_role(database_url, "outbox_worker")
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_worker.execute("UPDATE outbox.endpoints SET secret = 'x'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_worker.execute("DELETE FROM outbox.endpoints")
    finally:
        await as_worker.close()


async def _fetch(conn: asyncpg.Connection, sql: str) -> bool:
    return bool(await conn.fetchval(sql))


async def test_the_monitor_reads_the_views_and_no_table(
    database_url: str, conn: asyncpg.Connection, roles: None
) -> None:
    async with conn.transaction():
        await outbox.enqueue(conn, "n", {"secret-ish": "payload"})
    monitor = await as_role(database_url, "outbox_monitor")
    try:
        stats = {r["endpoint"]: r for r in await monitor.fetch("SELECT * FROM outbox.stats")}
        assert stats["n"]["pending"] == 1
        assert len(await monitor.fetch("SELECT * FROM outbox.endpoint_health")) == 2
        await monitor.fetch("SELECT * FROM outbox.throughput")
        await monitor.fetch("SELECT * FROM outbox.blocked_keys")
        shown = {
            r["endpoint"]: r for r in await monitor.fetch("SELECT * FROM outbox.endpoint_settings")
        }
        assert shown["tg"]["signed"] is True
        await refused(
            monitor,
            "SELECT * FROM outbox.messages",
            "SELECT secret FROM outbox.endpoints",
            "SELECT * FROM outbox.attempts",
            "SELECT * FROM outbox.dead_letters",
            "SELECT outbox.pause_endpoint('n', 'x')",
            "SELECT outbox.resume_endpoint('n')",
            "SELECT outbox.requeue_dead(NULL, NULL, NULL, NULL, true, NULL, 10)",
            "SELECT outbox.purge_dead(0, NULL, 10)",
            "SELECT outbox.unblock_key('n', 'k')",
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with monitor.transaction():
                await outbox.enqueue(monitor, "n", {})
    finally:
        await monitor.close()


async def test_the_operator_acts_only_through_its_functions(
    database_url: str, conn: asyncpg.Connection, roles: None
) -> None:
    await conn.execute(
        "INSERT INTO outbox.endpoints (name, channel, url, secret, headers, ordered, on_dead)"
        " VALUES ('crm', 'webhook', 'https://u:pw@crm.example:8443/hook/TOKEN?k=SECRETQ',"
        " 'whsec_x', '{\"Authorization\": \"Bearer HEADERVALUE\"}', true, 'block')"
    )
    await conn.execute(
        "INSERT INTO outbox.dead_letters (message_id, endpoint, key, payload, attempts, last_error,"
        " reason, created_at, dead_at) VALUES"
        " (gen_random_uuid(), 'crm', 'a', '{}', 3, 'HTTP 500', 'too many attempts', now(), now()),"
        " (gen_random_uuid(), 'crm', 'b', '{}', 1, 'HTTP 400', 'rejected', now(),"
        "  now() - interval '40 days')"
    )
    operator = await as_role(database_url, "outbox_operator")
    try:
        assert await operate.count_dead(operator, error="500") == 1
        assert len(await operate.dead_letters(operator)) == 2
        assert await operate.requeue(operator, error="http 500") == 1
        assert await operate.purge(operator, older_than=timedelta(days=30)) == 1
        await operate.pause_endpoint(operator, "crm", "on call: CRM is down")
        await operate.resume_endpoint(operator, "crm")
        with pytest.raises(outbox.InvalidInputError, match="not blocked"):
            await operate.unblock_key(operator, "crm", "zz")
        settings = await operator.fetchrow(
            "SELECT * FROM outbox.endpoint_settings WHERE endpoint = 'crm'"
        )
        assert settings["host"] == "crm.example:8443"
        assert settings["header_names"] == ["Authorization"]
        assert settings["signed"] is True
        assert all(
            word not in str(dict(settings)) for word in ("pw", "TOKEN", "SECRETQ", "HEADERVALUE")
        )
        # A password holding '@': the host is after the last one, as URL parsers read it.
        await conn.execute(
            "INSERT INTO outbox.endpoints (name, channel, url)"
            " VALUES ('at', 'webhook', 'https://u:p@ss@crm.example/hook')"
        )
        host = await operator.fetchval(
            "SELECT host FROM outbox.endpoint_settings WHERE endpoint = 'at'"
        )
        assert host == "crm.example"
        await refused(
            operator,
            "SELECT headers FROM outbox.messages",
            "SELECT headers FROM outbox.dead_letters",
        )
        await operator.fetch("SELECT * FROM outbox.attempts")
        await operator.fetch("SELECT id, payload, key, attempts FROM outbox.messages")
        await refused(
            operator,
            "SELECT url FROM outbox.endpoints",
            "SELECT secret FROM outbox.endpoints",
            "UPDATE outbox.endpoints SET url = 'http://evil/'",
            "DELETE FROM outbox.endpoints",
            "INSERT INTO outbox.messages (endpoint, payload) VALUES ('crm', '{}')",
            "UPDATE outbox.messages SET priority = 5",
            "DELETE FROM outbox.dead_letters",
            "DELETE FROM outbox.attempts",
            "UPDATE outbox.config SET max_payload_bytes = 1",
        )
    finally:
        await operator.close()
    paused = await conn.fetchval("SELECT paused_at FROM outbox.endpoints WHERE name = 'crm'")
    assert paused is None
    assert await conn.fetchval("SELECT count(*) FROM outbox.messages WHERE endpoint = 'crm'") == 1
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0


async def test_public_may_call_no_operator_function(conn: asyncpg.Connection) -> None:
    # Without `outbox roles`, a login role of the database must not pause or requeue.
    await conn.execute("DROP ROLE IF EXISTS outbox_test_stranger")
    await conn.execute("CREATE ROLE outbox_test_stranger")
    try:
        await conn.execute("GRANT USAGE ON SCHEMA outbox TO outbox_test_stranger")
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE outbox_test_stranger")
            for call in (
                "SELECT outbox.pause_endpoint('n', 'x')",
                "SELECT outbox.requeue_dead(NULL, NULL, NULL, NULL, true, NULL, 10)",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    async with conn.transaction():
                        await conn.fetch(call)
    finally:
        await conn.execute("REVOKE ALL ON SCHEMA outbox FROM outbox_test_stranger")
        await conn.execute("DROP ROLE outbox_test_stranger")
