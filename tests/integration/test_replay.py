"""Replay: delivered payloads kept for a while (outbox.delivered), one message
sent again (`outbox message resend`), a window sent again (`outbox replay`),
and the kept payloads pruned; on the real database, with a real worker and
receiver."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from click.testing import CliRunner
from support import add_endpoint, enqueue, running_worker, until

import outbox
from outbox import operate
from outbox.cli import main
from outbox.deliver import retention
from outbox.devtools.receiver import Action, Receiver, always
from outbox.operate.replay import replay, resend
from outbox.operate.subscriptions import add_subscription
from outbox.receive import verify

REPLAY_HOUR = (
    "SELECT * FROM outbox.replay('hook', now() - interval '1h', now(), NULL, NULL, NULL, 10)"
)


async def _queued(conn: asyncpg.Connection, n: int) -> bool:
    return await count(conn, "SELECT count(*) FROM outbox.messages") == n


async def count(conn: asyncpg.Connection, sql: str, *args: Any) -> int:
    return int(await conn.fetchval(sql, *args))


async def drained(conn: asyncpg.Connection) -> bool:
    return await count(conn, "SELECT count(*) FROM outbox.messages") == 0


async def deliver(database_url: str, conn: asyncpg.Connection, rx: Receiver, n: int) -> None:
    """Run a worker until ``n`` requests arrived in all and nothing is queued."""
    async with running_worker(database_url):
        await until(lambda: len(rx.snapshot()) >= n, within=30)
        await until(lambda: drained(conn), within=30)


async def test_the_receiving_end_reads_the_topic_and_the_replay_mark_a_real_worker_sent(
    database_url: str, conn: asyncpg.Connection
) -> None:
    secret = "whsec_" + base64.b64encode(b"replay-secret-" * 2).decode()
    with Receiver() as rx:
        await add_endpoint(conn, "hook", rx.url(), secret=secret)
        await add_subscription(conn, "hook", "order.*")
        async with conn.transaction():
            (message_id,) = await outbox.publish(conn, "order.created", {"order": 1})
        await deliver(database_url, conn, rx, 1)
        await resend(conn, message_id)
        await deliver(database_url, conn, rx, 2)
    first, again = (verify(r.headers, r.body, secret) for r in rx.snapshot())
    assert first.webhook_id == again.webhook_id == str(message_id)
    assert (first.topic, first.replay) == ("order.created", False)
    assert (again.topic, again.replay) == ("order.created", True)


async def test_a_resent_message_keeps_its_id_says_it_is_a_replay_and_is_marked_in_the_ledger(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver() as rx:
        await add_endpoint(conn, "hook", rx.url())
        (first, second) = await enqueue(conn, "hook", 2, key="k")
        await deliver(database_url, conn, rx, 2)
        kept = await conn.fetch("SELECT message_id, payload FROM outbox.delivered ORDER BY id")
        assert {r["message_id"] for r in kept} == {first, second}
        assert await resend(conn, first) == first
        with pytest.raises(outbox.InvalidInputError, match="is queued again already"):
            await resend(conn, first)
        await deliver(database_url, conn, rx, 3)
    original, again = (r for r in rx.snapshot() if r.message_id == str(first))
    assert again.headers["webhook-id"] == original.headers["webhook-id"] == str(first)
    assert again.body == original.body
    assert again.headers["outbox-replay"] == "1"
    assert "outbox-replay" not in original.headers
    ledger = await conn.fetch(
        "SELECT outcome, replay FROM outbox.attempts WHERE message_id = $1 ORDER BY id", first
    )
    assert [(r["outcome"], r["replay"]) for r in ledger] == [
        ("delivered", None),
        ("delivered", True),
    ]
    # Kept again after its second delivery: a later replay can send it once more.
    assert (
        await count(conn, "SELECT count(*) FROM outbox.delivered WHERE message_id = $1", first) == 2
    )


async def test_what_cannot_be_resent_says_why(conn: asyncpg.Connection) -> None:
    await add_endpoint(conn, "hook", "https://crm.example/hook")
    (queued,) = await enqueue(conn, "hook")
    dead = uuid.uuid4()
    await conn.execute(
        "INSERT INTO outbox.dead_letters (message_id, endpoint, payload, attempts, created_at)"
        " VALUES ($1, 'hook', '{}', 3, now())",
        dead,
    )
    for wanted, says in (
        (queued, "is not delivered yet: it is still queued"),
        (dead, "was dead-lettered, never delivered: requeue it"),
        (uuid.uuid4(), "past outbox.config.delivered_retention"),
    ):
        with pytest.raises(outbox.InvalidInputError, match=says):
            await resend(conn, wanted)
    assert await count(conn, "SELECT count(*) FROM outbox.messages") == 1


async def test_a_replay_sends_a_window_again_oldest_first_each_message_once(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver() as rx:
        await add_endpoint(conn, "hook", rx.url())
        await add_endpoint(conn, "other", rx.url("/other"))
        await add_subscription(conn, "hook", "order.*")
        await add_subscription(conn, "other", "order.*")
        async with conn.transaction():
            early = [
                (await outbox.publish(conn, f"order.{t}", {"n": i}))[0]
                for i, t in enumerate(["created", "paid", "created", "paid", "created"] * 2)
            ]
        await deliver(database_url, conn, rx, 20)
        # Space the deliveries out in time, as hours of traffic would be.
        await conn.execute(
            "UPDATE outbox.delivered SET delivered_at = now() - interval '3 hours'"
            " + (id * interval '1 second')"
        )
        mark = datetime.now(UTC) - timedelta(hours=1)
        later = await enqueue(conn, "hook", 3)
        await deliver(database_url, conn, rx, 23)
        seen = len(rx.snapshot())
        progress: list[tuple[int, int]] = []
        done = await replay(
            conn, "hook", mark - timedelta(hours=4), mark, batch=3,
            progress=lambda r, s: progress.append((r, s)),
        )  # fmt: skip
        assert (done.resent, done.skipped) == (10, 0)
        assert len(progress) == 4  # 10 rows in batches of 3
        # Queued again oldest delivery first.
        order = await conn.fetch("SELECT id FROM outbox.messages ORDER BY seq")
        delivered_order = await conn.fetch(
            "SELECT message_id FROM outbox.delivered WHERE endpoint = 'hook'"
            " AND delivered_at < $1 ORDER BY delivered_at, id",
            mark,
        )
        assert [r["id"] for r in order] == [r["message_id"] for r in delivered_order]
        again = await replay(conn, "hook", mark - timedelta(hours=4), mark, batch=4)
        assert (again.resent, again.skipped) == (0, 10)  # queued already: none twice
        await deliver(database_url, conn, rx, seen + 10)
        replayed = [r for r in rx.snapshot()[seen:] if r.path == "/hook"]
    assert sorted(r.message_id for r in replayed) == sorted(str(i) for i in early)
    assert all(r.headers["outbox-replay"] == "1" for r in replayed)
    assert {r.headers["outbox-topic"] for r in replayed} == {"order.created", "order.paid"}
    assert not {str(i) for i in later} & {r.message_id for r in replayed}
    marked = "SELECT count(*) FROM outbox.attempts WHERE replay AND endpoint = $1"
    assert await count(conn, marked, "hook") == 10
    assert await count(conn, marked, "other") == 0
    # A topic pattern narrows it; the window's second run sends each one once more.
    paid = await replay(conn, "hook", mark - timedelta(hours=4), datetime.now(UTC), topic="*.paid")
    assert paid.resent == 4


async def test_a_replay_obeys_the_endpoints_limits(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver() as rx:
        await add_endpoint(conn, "hook", rx.url())
        await enqueue(conn, "hook", 5)
        await deliver(database_url, conn, rx, 5)
        await operate.pause_endpoint(conn, "hook", "receiver rebuilt")
        done = await replay(conn, "hook", datetime.now(UTC) - timedelta(hours=1))
        assert done.resent == 5
        async with running_worker(database_url):
            await until(lambda: _queued(conn, 5))
            await asyncio.sleep(1.0)  # a worker's time to claim, had it been allowed to
            assert len(rx.snapshot()) == 5  # paused: nothing went
            assert await _queued(conn, 5)
            await operate.resume_endpoint(conn, "hook")
            await until(lambda: len(rx.snapshot()) == 10, within=30)


async def test_kept_payloads_are_pruned_after_their_retention_and_none_kept_at_zero(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver() as rx:
        await add_endpoint(conn, "hook", rx.url())
        await enqueue(conn, "hook", 30)
        await deliver(database_url, conn, rx, 30)
        assert await count(conn, "SELECT count(*) FROM outbox.delivered") == 30
        await conn.execute(
            "UPDATE outbox.delivered SET delivered_at = now() - interval '8 days' WHERE id <= ("
            " SELECT min(id) + 19 FROM outbox.delivered)"
        )
        pruned = await retention.prune(conn, batch=7)
        assert pruned is not None
        assert pruned.delivered == 20
        assert await count(conn, "SELECT count(*) FROM outbox.delivered") == 10
        await operate.set_config(conn, delivered_retention_seconds=0)
        await enqueue(conn, "hook", 4)
        await deliver(database_url, conn, rx, 34)
        assert await count(conn, "SELECT count(*) FROM outbox.delivered") == 10  # none kept
        again = await retention.prune(conn)
        assert again is not None
        assert again.delivered == 10  # at 0, nothing is kept at all
    assert (await operate.get_config(conn)).delivered_retention_seconds == 0


async def test_the_commands_print_what_they_resent(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver(always(Action())) as rx:
        await add_endpoint(conn, "hook", rx.url())
        ids = await enqueue(conn, "hook", 3)
        await deliver(database_url, conn, rx, 3)
    await asyncio.to_thread(_commands, database_url, ids)


def _commands(database_url: str, ids: list[uuid.UUID]) -> None:
    env = {"OUTBOX_DATABASE_URL": database_url}
    one = CliRunner().invoke(main, ["message", "resend", str(ids[0])], env=env)
    assert one.exit_code == 0, one.output
    assert f"resent 1 message: {ids[0]}" in one.output
    window = CliRunner().invoke(main, ["replay", "--endpoint", "hook", "--since", "1h"], env=env)
    assert window.exit_code == 0, window.output
    assert "resent 2 message(s) to hook (1 queued already, skipped)" in window.output
    bad = CliRunner().invoke(main, ["replay", "--endpoint", "nope", "--since", "1h"], env=env)
    assert bad.exit_code == 2
    assert "unknown endpoint 'nope'" in bad.output
    config = CliRunner().invoke(main, ["config", "--delivered-retention", "2d"], env=env)
    assert "delivered_retention_seconds     172800" in config.output


async def test_the_producer_publishes_but_reads_no_kept_payload_nor_secret(
    database_url: str, conn: asyncpg.Connection
) -> None:
    await operate.apply_roles(conn)
    await add_endpoint(conn, "hook", "https://crm.example/hook", secret="whsec_c2VjcmV0c2VjcmV0")
    await add_subscription(conn, "hook", "order.*")
    producer = await asyncpg.connect(database_url)
    try:
        await producer.execute("SET ROLE outbox_producer")
        async with producer.transaction():
            made = await outbox.publish(producer, "order.created", {"n": 1}, idempotency_key="o1")
            again = await outbox.publish(producer, "order.created", {"n": 1}, idempotency_key="o1")
        assert len(made) == 1
        assert again == made
        for statement in (
            "SELECT payload FROM outbox.delivered",
            "SELECT secret FROM outbox.endpoints",
            "SELECT * FROM outbox.endpoints",
            "INSERT INTO outbox.subscriptions (endpoint, topic) VALUES ('hook', 'x')",
            "DELETE FROM outbox.subscriptions",
            "SELECT outbox.resend(gen_random_uuid())",
            REPLAY_HOUR,
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await producer.fetch(statement)
    finally:
        await producer.close()
    operator = await asyncpg.connect(database_url)
    try:
        await operator.execute("SET ROLE outbox_operator")
        row = await operator.fetchrow(REPLAY_HOUR)
        assert row is not None
        assert row["resent"] == 0
        assert await operator.fetchval("SELECT count(*) FROM outbox.subscriptions") == 1
    finally:
        await operator.close()


async def test_a_resend_that_dies_twice_replaces_its_dead_letter_and_a_requeue_stays_a_replay(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver(lambda _path, _id, nth: Action() if nth == 1 else Action(400)) as rx:
        await add_endpoint(conn, "hook", rx.url())
        (sent,) = await enqueue(conn, "hook")
        await deliver(database_url, conn, rx, 1)
        for n in (2, 3):
            await resend(conn, sent)
            await deliver(database_url, conn, rx, n)
            dead = await conn.fetchrow(
                "SELECT * FROM outbox.dead_letters WHERE message_id = $1", sent
            )
            assert dead is not None
            assert dead["replay"] is True
        assert await count(conn, "SELECT count(*) FROM outbox.dead_letters") == 1
        outcomes = await conn.fetch(
            "SELECT outcome, replay FROM outbox.attempts WHERE message_id = $1 ORDER BY id", sent
        )
        assert [(r["outcome"], r["replay"]) for r in outcomes] == [
            ("delivered", None),
            ("dead", True),
            ("dead", True),
        ]
        assert await operate.requeue(conn, ids=[sent]) == 1
        assert await conn.fetchval("SELECT replay FROM outbox.messages WHERE id = $1", sent) is True


async def test_a_resend_elsewhere_must_suit_that_channel_and_leaves_its_headers_behind(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver() as rx:
        await add_endpoint(conn, "old", rx.url("/old"))
        await add_endpoint(conn, "new", rx.url("/new"))
        await add_endpoint(conn, "ops", "https://api.telegram.org", channel="telegram",
                           secret="123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw_x")  # fmt: skip
        (sent,) = await enqueue(conn, "old", headers={"authorization": "Bearer old-receivers"})
        await deliver(database_url, conn, rx, 1)
        with pytest.raises(outbox.UnknownEndpointError, match="unknown endpoint 'nope'"):
            await resend(conn, sent, "nope")
        with pytest.raises(outbox.InvalidInputError, match="endpoint ops refuses it"):
            await resend(conn, sent, "ops")  # a Telegram message needs chat_id and text
        await resend(conn, sent, "new")
        await deliver(database_url, conn, rx, 2)
        first, moved = rx.snapshot()
        assert first.headers["authorization"] == "Bearer old-receivers"
        assert moved.path == "/new"
        assert "authorization" not in moved.headers
        assert moved.message_id == str(sent)
        # Its endpoint removed, a message cannot go back there.
        await operate.remove_endpoint(conn, "old")
        await conn.execute("DELETE FROM outbox.delivered WHERE endpoint = 'new'")
        with pytest.raises(outbox.UnknownEndpointError, match="removed since it was delivered"):
            await resend(conn, sent)


async def test_a_replay_until_a_time_to_come_stops_at_now(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver() as rx:
        await add_endpoint(conn, "hook", rx.url())
        await enqueue(conn, "hook", 4)
        await deliver(database_url, conn, rx, 4)
        since = datetime.now(UTC) - timedelta(hours=1)
        later = datetime.now(UTC) + timedelta(hours=1)
        async with running_worker(database_url):
            done = await replay(conn, "hook", since, later, batch=1)
            await until(lambda: len(rx.snapshot()) == 8, within=30)
        assert (done.resent, done.skipped) == (4, 0)
        assert done.until < later
        # SQL callers are kept short of now too, batch by batch.
        row = await conn.fetchrow(
            "SELECT * FROM outbox.replay('hook', $1, $2, NULL, NULL, NULL, 100)", since, later
        )
        assert row is not None
        assert row["resent"] == 4  # delivered twice each in the window: sent once each
        assert row["done"] is True


async def test_the_operator_can_replay_from_the_command_line(
    database_url: str, conn: asyncpg.Connection
) -> None:
    await operate.apply_roles(conn)
    with Receiver() as rx:
        await add_endpoint(conn, "hook", rx.url())
        await enqueue(conn, "hook", 2)
        await deliver(database_url, conn, rx, 2)
    as_operator = f"{database_url}?role=outbox_operator"
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["replay", "--endpoint", "hook", "--since", "1h"],
        env={"OUTBOX_DATABASE_URL": as_operator},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "resent 2 message(s) to hook" in result.output
