"""The worker against a real PostgreSQL and a real HTTP receiver that injects faults."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from support import FAST, add_endpoint, enqueue, running_worker, until, worker_config

import outbox
from outbox.deliver.channels.null import NullChannel
from outbox.deliver.model import Finished
from outbox.deliver.policy import Outcome
from outbox.deliver.session import WORKER_SESSION_SETTINGS
from outbox.deliver.store import PostgresStore
from outbox.deliver.worker import Worker
from outbox.devtools.receiver import OK, Action, Receiver, always, fail_first


async def unfinished(conn: asyncpg.Connection) -> int:
    value = await conn.fetchval("SELECT count(*) FROM outbox.messages")
    assert isinstance(value, int)
    return value


async def ledger(conn: asyncpg.Connection, message_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM outbox.attempts WHERE message_id = $1 ORDER BY attempt", message_id
    )


async def attempts_match_ledger(conn: asyncpg.Connection) -> None:
    """Every message's attempt count equals its ledger rows (hot table and dead letters)."""
    mismatched = await conn.fetch(
        """
        SELECT x.id, x.attempts, (SELECT count(*) FROM outbox.attempts a WHERE a.message_id = x.id)
          FROM (SELECT id, attempts FROM outbox.messages
                UNION ALL SELECT message_id, attempts FROM outbox.dead_letters) AS x
         WHERE x.attempts <> (SELECT count(*) FROM outbox.attempts a WHERE a.message_id = x.id)
        """
    )
    assert mismatched == []


# -- delivery ------------------------------------------------------------------


async def test_webhook_gets_payload_and_standard_webhooks_headers(
    database_url: str, conn: asyncpg.Connection
) -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    with Receiver() as rx:
        await add_endpoint(
            conn,
            "hook",
            rx.url("/in"),
            secret=secret,
            headers=json.dumps({"Authorization": "Bearer t"}),
        )
        async with conn.transaction():
            message_id = await outbox.enqueue(
                conn, "hook", {"order": 7, "name": "Zoë"}, headers={"X-Trace": "abc"}
            )
        async with running_worker(database_url):
            await until(lambda: _is_zero(conn))
    got = rx.snapshot()[0]
    assert got.path == "/in"
    assert got.json() == {"order": 7, "name": "Zoë"}
    assert got.headers["webhook-id"] == str(message_id)
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["Authorization"] == "Bearer t"
    assert got.headers["X-Trace"] == "abc"
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 30
    signed = f"{message_id}.{got.headers['webhook-timestamp']}.".encode() + got.body
    expected = base64.b64encode(hmac.new(b"k" * 32, signed, hashlib.sha256).digest()).decode()
    assert got.headers["webhook-signature"] == f"v1,{expected}"
    rows = await ledger(conn, message_id)
    assert [(r["attempt"], r["outcome"], r["status_code"]) for r in rows] == [(1, "delivered", 200)]
    assert rows[0]["worker_id"] == "test-worker"
    assert rows[0]["response_excerpt"] == "ok"


async def _is_zero(conn: asyncpg.Connection) -> bool:
    return await unfinished(conn) == 0


async def test_no_signature_header_without_a_secret(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver() as rx:
        await add_endpoint(conn, "hook", rx.url())
        await enqueue(conn, "hook")
        async with running_worker(database_url):
            await until(lambda: _is_zero(conn))
    assert "webhook-signature" not in rx.snapshot()[0].headers


async def test_null_channel_delivers_at_once(database_url: str, conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO outbox.endpoints (name, channel) VALUES ('nul', 'null')")
    ids = await enqueue(conn, "nul", 300)
    async with running_worker(database_url):
        await until(lambda: _is_zero(conn))
    delivered = await conn.fetchval(
        "SELECT count(*) FROM outbox.attempts WHERE outcome = 'delivered' AND message_id = ANY($1)",
        ids,
    )
    assert delivered == 300


# -- retries and dead letters ----------------------------------------------------


async def test_500_is_retried_with_the_same_webhook_id(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver(fail_first(2, Action(status=500))) as rx:
        await add_endpoint(conn, "hook", rx.url())
        [message_id] = await enqueue(conn, "hook")
        async with running_worker(database_url):
            await until(lambda: _is_zero(conn))
    got = rx.by_id()[str(message_id)]
    assert [r.action.status for r in got] == [500, 500, 200]
    rows = await ledger(conn, message_id)
    assert [(r["attempt"], r["outcome"], r["status_code"]) for r in rows] == [
        (1, "retrying", 500),
        (2, "retrying", 500),
        (3, "delivered", 200),
    ]
    assert rows[0]["retry_at"] is not None
    assert "retry #2" in rows[0]["reason"]
    await attempts_match_ledger(conn)


async def test_retry_after_is_respected(database_url: str, conn: asyncpg.Connection) -> None:
    with Receiver(fail_first(1, Action(status=429, headers={"Retry-After": "2"}))) as rx:
        await add_endpoint(conn, "hook", rx.url())
        [message_id] = await enqueue(conn, "hook")
        async with running_worker(database_url):
            await until(lambda: _is_zero(conn))
    first, second = rx.by_id()[str(message_id)]
    assert second.arrived - first.finished >= 2.0  # the backoff alone would be ~0.05 s
    [row, _] = await ledger(conn, message_id)
    assert "Retry-After" in row["reason"]


async def test_400_dead_letters_after_one_attempt(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver(always(Action(status=400, body="bad field 'x'"))) as rx:
        await add_endpoint(conn, "hook", rx.url())
        async with conn.transaction():
            message_id = await outbox.enqueue(conn, "hook", {"x": 1}, key="k1")
        async with running_worker(database_url):
            await until(lambda: _is_zero(conn))
    assert len(rx.snapshot()) == 1
    dead = await conn.fetchrow(
        "SELECT * FROM outbox.dead_letters WHERE message_id = $1", message_id
    )
    assert dead is not None
    assert (dead["attempts"], dead["last_error"], dead["payload"], dead["key"]) == (
        1,
        "HTTP 400",
        {"x": 1},
        "k1",
    )
    assert "permanent failure" in dead["reason"]
    rows = await ledger(conn, message_id)
    assert [(r["outcome"], r["response_excerpt"]) for r in rows] == [("dead", "bad field 'x'")]


async def test_message_that_keeps_failing_dead_letters_after_max_attempts(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver(always(Action(status=503))) as rx:
        await add_endpoint(conn, "hook", rx.url(), max_attempts=4)
        [message_id] = await enqueue(conn, "hook")
        async with running_worker(database_url):
            await until(lambda: _is_zero(conn))
    assert len(rx.by_id()[str(message_id)]) == 4
    rows = await ledger(conn, message_id)
    assert [r["outcome"] for r in rows] == ["retrying", "retrying", "retrying", "dead"]
    assert "max_attempts" in rows[-1]["reason"]
    assert await conn.fetchval("SELECT attempts FROM outbox.dead_letters") == 4
    await attempts_match_ledger(conn)


async def test_retry_window_dead_letters(database_url: str, conn: asyncpg.Connection) -> None:
    with Receiver(always(Action(status=500))) as rx:
        await add_endpoint(conn, "hook", rx.url(), retry_window=timedelta(seconds=0.3))
        [message_id] = await enqueue(conn, "hook")
        async with running_worker(database_url):
            await until(lambda: _is_zero(conn))
    rows = await ledger(conn, message_id)
    assert rows[-1]["outcome"] == "dead"
    assert "retry window" in rows[-1]["reason"]


async def test_timeout_is_retried_with_no_status(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver(fail_first(1, Action(delay=3))) as rx:
        await add_endpoint(conn, "hook", rx.url(), timeout_ms=300)
        [message_id] = await enqueue(conn, "hook")
        async with running_worker(database_url):
            await until(lambda: _is_zero(conn))
    rows = await ledger(conn, message_id)
    assert [(r["outcome"], r["status_code"]) for r in rows] == [
        ("retrying", None),
        ("delivered", 200),
    ]
    assert rows[0]["error"].startswith("TimeoutError") or "Timeout" in rows[0]["error"]
    assert 250 <= rows[0]["duration_ms"] < 2000
    assert len(rx.by_id()[str(message_id)]) == 2


async def test_connection_reset_is_retried(database_url: str, conn: asyncpg.Connection) -> None:
    with Receiver(fail_first(1, Action(reset=True))) as rx:
        await add_endpoint(conn, "hook", rx.url())
        [message_id] = await enqueue(conn, "hook")
        async with running_worker(database_url):
            await until(lambda: _is_zero(conn))
    rows = await ledger(conn, message_id)
    assert [(r["outcome"], r["status_code"]) for r in rows] == [
        ("retrying", None),
        ("delivered", 200),
    ]
    assert rows[0]["error"]


async def test_connection_refused_is_retried(database_url: str, conn: asyncpg.Connection) -> None:
    await add_endpoint(conn, "hook", "http://127.0.0.1:1/nothing-listens", max_attempts=2)
    [message_id] = await enqueue(conn, "hook")
    async with running_worker(database_url):
        await until(lambda: _is_zero(conn))
    rows = await ledger(conn, message_id)
    assert [(r["outcome"], r["status_code"]) for r in rows] == [("retrying", None), ("dead", None)]
    assert "connect" in rows[0]["reason"]


async def test_redirects_are_not_followed(database_url: str, conn: asyncpg.Connection) -> None:
    with Receiver(
        lambda path, _id, _n: (
            Action(status=302, headers={"Location": "/elsewhere"}) if path == "/in" else OK
        )
    ) as rx:
        await add_endpoint(conn, "hook", rx.url("/in"), max_attempts=2)
        [message_id] = await enqueue(conn, "hook")
        async with running_worker(database_url):
            await until(lambda: _is_zero(conn))
    assert {r.path for r in rx.snapshot()} == {"/in"}
    rows = await ledger(conn, message_id)
    assert [(r["outcome"], r["status_code"]) for r in rows] == [("retrying", 302), ("dead", 302)]


async def test_ledger_matches_what_the_receiver_saw(
    database_url: str, conn: asyncpg.Connection
) -> None:
    import random

    rnd = random.Random(7)
    faults = [
        Action(status=500),
        Action(status=429, headers={"Retry-After": "0"}),
        Action(reset=True),
        Action(status=404),
    ]

    def script(_path: str, _id: str | None, nth: int) -> Action:
        return rnd.choice(faults) if nth < 3 and rnd.random() < 0.5 else OK

    with Receiver(script) as rx:
        await add_endpoint(conn, "hook", rx.url(), max_attempts=3)
        ids = await enqueue(conn, "hook", 200)
        async with running_worker(database_url):
            await until(lambda: _is_zero(conn), within=60)
    seen = rx.by_id()
    for message_id in ids:
        rows = await ledger(conn, message_id)
        arrivals = seen[str(message_id)]
        assert len(rows) == len(arrivals)
        assert [r["status_code"] for r in rows] == [
            None if a.action.reset else a.action.status for a in arrivals
        ]
        final = rows[-1]["outcome"]
        assert final in {"delivered", "dead"}
        if final == "delivered":
            assert arrivals[-1].action.status == 200
        else:
            assert arrivals[-1].action.status == 404 or len(rows) == 3
    await attempts_match_ledger(conn)


# -- leases ------------------------------------------------------------------------


async def test_stale_completion_cannot_overwrite_the_new_lease(
    database_url: str, conn: asyncpg.Connection
) -> None:
    await add_endpoint(conn, "hook", "http://127.0.0.1:1/x")
    [message_id] = await enqueue(conn, "hook")
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        first = PostgresStore(pool, worker_id="first", lease_seconds=30)
        second = PostgresStore(pool, worker_id="second", lease_seconds=30)
        [delivery] = await first.claim(10)
        old = delivery.head
        await conn.execute("UPDATE outbox.messages SET lease_expires_at = now() - interval '1s'")
        [reaped] = await second.reap(10)
        assert (reaped.id, reaped.lost_worker) == (message_id, "first")
        now = datetime.now(UTC)
        stale = Finished(old.id, old.token, Outcome.DELIVERED, now, 1.0, "late result")
        assert await first.finish([stale]) == 0
        row = await conn.fetchrow("SELECT lease_token, leased_by FROM outbox.messages")
        assert row is not None
        assert row["leased_by"] == "second"
        assert row["lease_token"] == reaped.token
        assert await ledger(conn, message_id) == []
    finally:
        await pool.close()


async def test_reaper_returns_an_expired_lease_and_records_the_lost_attempt(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver() as rx:
        await add_endpoint(conn, "hook", rx.url())
        [message_id] = await enqueue(conn, "hook")
        # A worker that claimed it and died: leased, expired, never finished.
        await conn.execute(
            "UPDATE outbox.messages SET lease_token = gen_random_uuid(), leased_by = 'ghost',"
            " lease_expires_at = now() - interval '1 second', first_attempt_at = now()"
        )
        async with running_worker(database_url):
            await until(lambda: _is_zero(conn))
    rows = await ledger(conn, message_id)
    assert [(r["attempt"], r["outcome"]) for r in rows] == [(1, "lease_expired"), (2, "delivered")]
    assert "ghost" in rows[0]["reason"]
    assert rx.ids() == {str(message_id)}


async def test_graceful_stop_hands_back_unstarted_claims_at_once(
    database_url: str, conn: asyncpg.Connection
) -> None:
    config = worker_config(
        concurrency=2,
        batch_size=2,
        poll_interval=0.05,
        flush_interval=0.01,
        shutdown_grace=5,
        lease_seconds=60,
    )
    with Receiver(always(Action(delay=0.6))) as rx:
        await add_endpoint(conn, "hook", rx.url())
        await enqueue(conn, "hook", 10)
        async with running_worker(database_url, config) as worker:
            await until(lambda: len(rx.snapshot()) >= 2)
            worker.stop()
        # Stopped: the two in flight finished and were recorded, nothing else is leased.
    assert await conn.fetchval(
        "SELECT count(*) FROM outbox.attempts WHERE outcome = 'delivered'"
    ) == len(rx.snapshot())
    leftovers = await conn.fetch(
        "SELECT lease_token, attempts, first_attempt_at FROM outbox.messages"
    )
    assert len(leftovers) == 10 - len(rx.snapshot())
    assert all(r["lease_token"] is None and r["attempts"] == 0 for r in leftovers)
    assert all(r["first_attempt_at"] is None for r in leftovers)


async def test_deleting_an_endpoint_with_unfinished_messages_is_refused_even_in_raw_sql(
    conn: asyncpg.Connection,
) -> None:
    await add_endpoint(conn, "hook", "http://127.0.0.1:1/x")
    [message_id] = await enqueue(conn, "hook")
    with pytest.raises(asyncpg.PostgresError, match="1 unfinished message") as caught:
        await conn.execute("DELETE FROM outbox.endpoints")  # bypassing `endpoint remove`
    assert caught.value.sqlstate == "OB004"
    assert await conn.fetchval("SELECT id FROM outbox.messages") == message_id
    assert await conn.fetchval("SELECT count(*) FROM outbox.endpoints") == 1


async def test_endpoint_created_after_the_worker_started_is_known(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver() as rx:
        async with running_worker(database_url):
            await asyncio.sleep(0.2)
            await add_endpoint(conn, "late", rx.url())
            await enqueue(conn, "late")
            await until(lambda: _is_zero(conn))
    assert await conn.fetchval("SELECT outcome FROM outbox.attempts") == "delivered"


async def test_wakeup_delivers_within_milliseconds_when_idle(
    database_url: str, conn: asyncpg.Connection
) -> None:
    config = worker_config(concurrency=5, poll_interval=5.0, flush_interval=0.01, lease_seconds=30)
    with Receiver() as rx:
        await add_endpoint(conn, "hook", rx.url())
        async with running_worker(database_url, config, listen=True):
            await until(lambda: conn.fetchval("SELECT wakeup_until > now() FROM outbox.config"))
            latencies = []
            for _ in range(5):
                before = len(rx.snapshot())
                async with conn.transaction():
                    await outbox.enqueue(conn, "hook", {})
                committed = time.time()
                await until(lambda n=before: len(rx.snapshot()) > n, within=4)
                latencies.append(rx.snapshot()[-1].arrived - committed)
                await asyncio.sleep(0.1)
    # Polling alone would take up to 5 s; a wake-up takes milliseconds.
    assert max(latencies) < 1.0, latencies


async def test_a_response_body_with_nul_bytes_is_recorded(
    database_url: str, conn: asyncpg.Connection
) -> None:
    """PostgreSQL text cannot hold NUL: such a body must not block recording."""
    with Receiver(fail_first(1, Action(status=500, body="bad\x00body"))) as rx:
        await add_endpoint(conn, "hook", rx.url())
        [message_id] = await enqueue(conn, "hook")
        async with running_worker(database_url):
            await until(lambda: _is_zero(conn))
    rows = await ledger(conn, message_id)
    assert [r["outcome"] for r in rows] == ["retrying", "delivered"]
    assert rows[0]["response_excerpt"] == "bad\ufffdbody"


async def test_workers_vacuum_the_hot_table_when_dead_rows_pile_up(
    database_url: str, conn: asyncpg.Connection
) -> None:
    """Autovacuum may be off (it is on the machines this was built on): claims then slow down."""
    await conn.execute("INSERT INTO outbox.endpoints (name, channel) VALUES ('nul', 'null')")
    await enqueue(conn, "nul", 3000)
    before = await conn.fetchval(
        "SELECT vacuum_count + autovacuum_count FROM pg_stat_user_tables WHERE relname = 'messages'"
    )
    config = worker_config(
        concurrency=50,
        poll_interval=0.05,
        flush_interval=0.01,
        vacuum_check_interval=0.2,
        vacuum_min_dead=1000,
    )
    async with running_worker(database_url, config):
        await until(lambda: _is_zero(conn))
        # The statistics lag by up to seconds; the worker acts once they show the dead rows.
        await until(
            lambda: conn.fetchval(
                "SELECT vacuum_count + autovacuum_count > $1 FROM pg_stat_user_tables"
                " WHERE relname = 'messages'",
                before,
            ),
            within=30,
        )


async def test_a_failing_endpoint_reload_does_not_strand_claimed_messages(
    database_url: str, conn: asyncpg.Connection
) -> None:
    await conn.execute("INSERT INTO outbox.endpoints (name, channel) VALUES ('nul', 'null')")
    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=4, server_settings=WORKER_SESSION_SETTINGS
    )
    assert pool is not None

    class FlakyStore(PostgresStore):
        loads = 0

        async def endpoints(self) -> list[asyncpg.Record]:
            FlakyStore.loads += 1
            if FlakyStore.loads > 1:
                raise asyncpg.InterfaceError("connection lost (on purpose)")
            return await super().endpoints()

    config = worker_config(
        poll_interval=0.05, flush_interval=0.01, endpoint_refresh=0.0, lease_seconds=30
    )
    worker = Worker(
        FlakyStore(pool, worker_id="w", lease_seconds=30), {"null": NullChannel()}, config
    )
    task = asyncio.create_task(worker.run())
    try:
        await enqueue(conn, "nul", 50)
        await until(lambda: _is_zero(conn), within=10)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 20)
        await pool.close()
    assert FlakyStore.loads > 1
    assert (
        await conn.fetchval("SELECT count(*) FROM outbox.attempts WHERE outcome = 'delivered'")
        == 50
    )


async def test_a_connection_broken_mid_protocol_does_not_kill_the_worker(
    database_url: str, conn: asyncpg.Connection
) -> None:
    """asyncpg raises InternalClientError (not an InterfaceError) when a connection
    broke in the middle of an exchange -- seen when PostgreSQL restarted under a claim."""
    await conn.execute("INSERT INTO outbox.endpoints (name, channel) VALUES ('nul', 'null')")
    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=4, server_settings=WORKER_SESSION_SETTINGS
    )
    assert pool is not None

    class BrokenOnce(PostgresStore):
        failed = 0

        async def claim(self, limit: int, **kw: Any) -> list[Any]:
            if BrokenOnce.failed < 2:
                BrokenOnce.failed += 1
                raise asyncpg.InternalClientError("cannot switch to state 11 (on purpose)")
            return await super().claim(limit, **kw)

    worker = Worker(
        BrokenOnce(pool, worker_id="w", lease_seconds=30),
        {"null": NullChannel()},
        replace(FAST, poll_interval=0.05),
    )
    task = asyncio.create_task(worker.run())
    try:
        await enqueue(conn, "nul", 10)
        await until(lambda: _is_zero(conn), within=10)
        assert not task.done()
    finally:
        worker.stop()
        await asyncio.wait_for(task, 20)
        await pool.close()
    assert BrokenOnce.failed == 2


async def test_the_wake_up_window_outlasts_the_poll(
    database_url: str, conn: asyncpg.Connection
) -> None:
    """Producers NOTIFY only while outbox.config.wakeup_until is ahead: a window
    shorter than the poll lapsed while the worker waited (a message enqueued then
    waited for the next poll)."""
    config = replace(FAST, poll_interval=3.0, wakeup_seconds=1.0)
    async with running_worker(database_url, config, listen=True):
        await until(
            lambda: conn.fetchval(
                "SELECT wakeup_until > now() + interval '2.5 seconds' FROM outbox.config"
            ),
            within=5,
        )
