"""Destination controls against a real PostgreSQL and real local receivers:
fair claims, priorities, pausing, the circuit breaker, throttling, per-key
order, signing rotation and the SSRF guard. (The fleet-wide limits with
several worker processes are in tests/e2e/test_fleet_limits.py; Telegram in
test_telegram.py.)"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import time
import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any, cast

import asyncpg
import pytest
from support import FAST, add_endpoint, enqueue, running_worker, until

import outbox
from outbox import operate
from outbox.devtools.receiver import OK, Action, Receiver, always
from outbox.operate.endpoint_config import EndpointUpdate

CLAIM = "SELECT * FROM outbox._claim($1, gen_random_uuid(), 60, 'test', 1.0, $2)"


async def claim(conn: asyncpg.Connection, n: int, first_share: float = 0.5) -> list[Any]:
    return list(await conn.fetch(CLAIM, n, first_share))


async def null_endpoint(conn: asyncpg.Connection, name: str, **settings: Any) -> None:
    columns = {"name": name, "channel": "null", **settings}
    params = ", ".join(f"${i + 1}" for i in range(len(columns)))
    await conn.execute(
        f"INSERT INTO outbox.endpoints ({', '.join(columns)}) VALUES ({params})",
        *columns.values(),
    )


async def state(conn: asyncpg.Connection, endpoint: str) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM outbox.endpoint_health WHERE endpoint = $1", endpoint)
    assert row is not None
    return row


class Switch:
    """A receiver script that fails (with ``failure``) while ``failing`` is set."""

    def __init__(self, failure: Action | None = None) -> None:
        self.failing = True
        self.failure = failure or Action(500)

    def __call__(self, _path: str, _id: str | None, _nth: int) -> Action:
        return self.failure if self.failing else OK


# -- claiming ------------------------------------------------------------------


async def test_a_busy_endpoint_does_not_starve_the_others(conn: asyncpg.Connection) -> None:
    await null_endpoint(conn, "busy")
    await null_endpoint(conn, "quiet")
    await enqueue(conn, "busy", 1000)
    await enqueue(conn, "quiet", 10)
    claimed = await claim(conn, 20)
    by_endpoint = {e: sum(1 for r in claimed if r["endpoint"] == e) for e in ("busy", "quiet")}
    assert by_endpoint == {"busy": 10, "quiet": 10}
    # What one leaves, the other gets.
    await conn.execute("DELETE FROM outbox.messages WHERE lease_token IS NOT NULL")
    claimed = await claim(conn, 50)
    assert sum(1 for r in claimed if r["endpoint"] == "busy") == 50


async def test_retries_cannot_starve_first_attempts(conn: asyncpg.Connection) -> None:
    await null_endpoint(conn, "n")
    await enqueue(conn, "n", 100)
    await conn.execute(
        "UPDATE outbox.messages SET attempts = 3, available_at = now() - interval '1 hour'"
    )
    fresh = set(await enqueue(conn, "n", 10))
    claimed = await claim(conn, 20, first_share=0.5)
    assert len(claimed) == 20
    assert fresh <= {r["id"] for r in claimed}
    # Without first attempts waiting, retries get the whole batch.
    claimed = await claim(conn, 30)
    assert len(claimed) == 30
    assert all(r["attempts"] == 3 for r in claimed)


async def test_higher_priority_is_claimed_first(conn: asyncpg.Connection) -> None:
    await null_endpoint(conn, "n")
    await enqueue(conn, "n", 5)
    urgent = set(await enqueue(conn, "n", 3, priority=10))
    claimed = await claim(conn, 3)
    assert {r["id"] for r in claimed} == urgent


async def test_rate_limited_claims_hand_out_spaced_slots(conn: asyncpg.Connection) -> None:
    await null_endpoint(conn, "slow", rate_limit=10.0)
    await enqueue(conn, "slow", 100)
    first = await claim(conn, 100)
    # Within the 1 s horizon: 11 slots, 0.1 s apart.
    assert [round(r["delay"], 3) for r in first] == [round(i * 0.1, 3) for i in range(11)]
    second = await claim(conn, 100)  # the slots taken are gone, for every claimer
    assert second == [] or min(r["delay"] for r in second) >= 1.05


# -- pausing, the breaker, throttling ------------------------------------------


async def test_paused_endpoint_spends_no_attempts_and_delivers_after_resume(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver() as rx:
        await add_endpoint(conn, "hook", rx.url())
        await operate.pause_endpoint(conn, "hook", "maintenance")
        await enqueue(conn, "hook", 5)
        async with running_worker(database_url):
            await asyncio.sleep(0.5)
            assert rx.snapshot() == []
            assert await conn.fetchval("SELECT sum(attempts) FROM outbox.messages") == 0
            assert (await state(conn, "hook"))["state"] == "paused"
            await operate.resume_endpoint(conn, "hook")
            await until(lambda: len(rx.ids()) == 5)


async def test_circuit_opens_lets_single_probes_through_and_closes(
    database_url: str, conn: asyncpg.Connection
) -> None:
    switch = Switch()
    with Receiver(switch) as rx:
        await add_endpoint(
            conn,
            "flaky",
            rx.url(),
            breaker_failures=3,
            breaker_cooldown=timedelta(milliseconds=300),
            max_attempts=1000,
        )
        await enqueue(conn, "flaky", 10)
        async with running_worker(database_url):
            await until(lambda: _circuit(conn, "flaky", "open"))
            opened = time.time()
            await asyncio.sleep(1.5)
            during = [r.arrived for r in rx.snapshot() if r.arrived > opened + 0.1]
            # Without the breaker ten messages retrying every 0.05-0.2 s would
            # have sent dozens; open, only single probes pass, a cool-down apart.
            assert 1 <= len(during) <= 4, during
            assert all(b - a >= 0.25 for a, b in itertools.pairwise(during))
            switch.failing = False
            await until(lambda: len({r.message_id for r in rx.snapshot() if r.action is OK}) == 10)
            await until(lambda: _circuit(conn, "flaky", "closed"))
    health = await state(conn, "flaky")
    assert health["consecutive_failures"] == 0
    assert health["state"] == "active"


async def _circuit(conn: asyncpg.Connection, endpoint: str, circuit: str) -> bool:
    return (await state(conn, endpoint))["circuit"] == circuit


async def test_failing_for_the_whole_window_disables_and_parks_until_resumed(
    database_url: str, conn: asyncpg.Connection
) -> None:

    switch = Switch()
    with Receiver(switch) as rx:
        await add_endpoint(
            conn,
            "down",
            rx.url(),
            breaker_failures=2,
            breaker_cooldown=timedelta(milliseconds=100),
            breaker_max_cooldown=timedelta(milliseconds=200),
            disable_after=timedelta(seconds=1),
            max_attempts=1000,
        )
        ids = await enqueue(conn, "down", 3)
        async with running_worker(database_url):
            await until(lambda: _state_is(conn, "down", "disabled"), within=15)
            health = await state(conn, "down")
            assert "failing without a success" in health["disabled_reason"]
            seen = len(rx.snapshot())
            await asyncio.sleep(0.6)
            assert len(rx.snapshot()) == seen  # parked: nothing is sent...
            parked = await conn.fetch("SELECT id FROM outbox.messages")
            assert {r["id"] for r in parked} == set(ids)  # ...and nothing is dropped
            switch.failing = False
            await operate.resume_endpoint(conn, "down")
            await until(lambda: _none_left(conn))
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0


async def _state_is(conn: asyncpg.Connection, endpoint: str, value: str) -> bool:
    return (await state(conn, endpoint))["state"] == value


async def _none_left(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval("SELECT count(*) FROM outbox.messages") == 0


async def test_410_dead_letters_the_message_and_pauses_the_endpoint(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver(always(Action(410))) as rx:
        await add_endpoint(conn, "gone", rx.url())
        [first] = await enqueue(conn, "gone")
        async with running_worker(database_url):
            await until(lambda: _state_is(conn, "gone", "paused"))
            await enqueue(conn, "gone", 3)
            await asyncio.sleep(0.4)
    assert len(rx.snapshot()) == 1
    assert await conn.fetchval("SELECT message_id FROM outbox.dead_letters") == first
    assert "410" in (await state(conn, "gone"))["paused_reason"]
    assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 3


async def test_429_with_retry_after_holds_back_the_whole_endpoint(
    database_url: str, conn: asyncpg.Connection
) -> None:
    def script(_path: str, _id: str | None, nth: int) -> Action:
        return Action(429, {"Retry-After": "1"}) if nth == 1 else OK

    with Receiver(script) as rx:
        await add_endpoint(conn, "busy", rx.url())
        [first] = await enqueue(conn, "busy")
        async with running_worker(database_url):
            await until(lambda: len(rx.snapshot()) == 1)
            throttled_at = rx.snapshot()[0].arrived
            await until(lambda: _state_is(conn, "busy", "throttled"))  # once it is recorded...
            [later] = await enqueue(conn, "busy")  # ...no message goes, not only the 429's
            await until(lambda: len(rx.ids()) == 2 and len(rx.snapshot()) >= 3)
    arrivals = {i: [r.arrived for r in rs] for i, rs in rx.by_id().items()}
    assert min(arrivals[str(later)]) >= throttled_at + 0.95
    assert max(arrivals[str(first)]) >= throttled_at + 0.95


# -- per-key order -------------------------------------------------------------


async def test_an_ordered_key_waits_for_its_retrying_head(
    database_url: str, conn: asyncpg.Connection
) -> None:
    def script(_path: str, _id: str | None, nth: int) -> Action:
        return Action(500) if _id == str(head) and nth <= 3 else OK

    with Receiver(script) as rx:
        await add_endpoint(conn, "seq", rx.url(), ordered=True)
        config = replace(FAST, backoff_base=0.3, backoff_cap=0.3)
        [head] = await enqueue(conn, "seq", 1, key="order-1")
        rest = await enqueue(conn, "seq", 4, key="order-1")
        other = await enqueue(conn, "seq", 2, key="order-2")
        async with running_worker(database_url, config):
            await until(lambda: _blocked(conn, "order-1"))
            blocked = await conn.fetchrow("SELECT * FROM outbox.blocked_keys")
            assert blocked["cause"] == "retrying"
            assert blocked["message_id"] == head
            assert blocked["waiting"] == 4
            await until(lambda: len(rx.ids()) == 7)
    arrived = rx.snapshot()
    order = [r.message_id for r in arrived if r.message_id in {str(i) for i in [head, *rest]}]
    # Every try of the head comes first, then the rest, in enqueue order.
    assert order == [str(head)] * 4 + [str(i) for i in rest]
    assert [r.message_id for r in arrived if r.message_id in {str(i) for i in other}] == [
        str(i) for i in other
    ]


async def _blocked(conn: asyncpg.Connection, key: str) -> bool:
    return bool(await conn.fetchval("SELECT count(*) FROM outbox.blocked_keys WHERE key = $1", key))


@pytest.mark.parametrize("on_dead", ["release", "block"])
async def test_a_dead_head_releases_or_blocks_its_key(
    database_url: str, conn: asyncpg.Connection, on_dead: str
) -> None:
    def script(_path: str, _id: str | None, _nth: int) -> Action:
        return Action(400) if _id == str(head) else OK

    with Receiver(script) as rx:
        await add_endpoint(conn, "seq", rx.url(), ordered=True, on_dead=on_dead)
        [head] = await enqueue(conn, "seq", 1, key="k")
        rest = await enqueue(conn, "seq", 3, key="k")
        async with running_worker(database_url):
            if on_dead == "release":
                await until(lambda: len(rx.ids()) == 4)
            else:
                await until(lambda: _blocked(conn, "k"))
                await asyncio.sleep(0.3)
                assert rx.ids() == {str(head)}
                row = await conn.fetchrow("SELECT * FROM outbox.blocked_keys")
                assert row["cause"] == "dead_letter"
                assert row["waiting"] == 3
                assert await operate.unblock_key(conn, "seq", "k") == 3
                await until(lambda: len(rx.ids()) == 4)
    order = [r.message_id for r in rx.snapshot() if r.message_id != str(head)]
    assert order == [str(i) for i in rest]


# -- signing rotation ------------------------------------------------------------


def verify(secret: str, headers: Any, body: bytes) -> bool:
    """An independent Standard Webhooks verifier, from the specification: the
    signature header holds space-separated ``v1,<base64>`` entries; any match passes."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        version == "v1" and hmac.compare_digest(sig, expected)
        for version, _, sig in (
            part.partition(",") for part in headers["webhook-signature"].split()
        )
    )


async def test_a_rotated_secret_signs_with_both_until_the_grace_period_ends(
    database_url: str, conn: asyncpg.Connection
) -> None:

    old = "whsec_" + base64.b64encode(b"o" * 32).decode()
    new = "whsec_" + base64.b64encode(b"n" * 32).decode()
    with Receiver() as rx:
        await add_endpoint(conn, "signed", rx.url(), secret=old)
        await operate.update_endpoint(
            conn, "signed", EndpointUpdate(secret=new, secret_grace=timedelta(seconds=2))
        )
        async with running_worker(database_url, replace(FAST, endpoint_refresh=0.1)):
            await enqueue(conn, "signed")
            await until(lambda: len(rx.snapshot()) == 1)
            during = rx.snapshot()[0]
            await asyncio.sleep(2.3)
            await enqueue(conn, "signed")
            await until(lambda: len(rx.snapshot()) == 2)
            after = rx.snapshot()[1]
    assert len(during.headers["webhook-signature"].split()) == 2
    assert verify(old, during.headers, during.body)
    assert verify(new, during.headers, during.body)
    assert len(after.headers["webhook-signature"].split()) == 1
    assert verify(new, after.headers, after.body)
    assert not verify(old, after.headers, after.body)


# -- the SSRF guard ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:{port}/hook", "loopback"),
        ("http://localhost:{port}/hook", "loopback"),  # a name: checked where it resolves
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.1.2.3/hook", "private"),
        ("http://[::ffff:127.0.0.1]:{port}/hook", "loopback"),
    ],
)
async def test_the_ssrf_guard_refuses_non_public_addresses(
    database_url: str, conn: asyncpg.Connection, url: str, expected: str
) -> None:
    with Receiver() as rx:
        await add_endpoint(conn, "inside", url.format(port=rx.port))
        [message_id] = await enqueue(conn, "inside")
        async with running_worker(database_url, allow=()):
            await until(lambda: _none_left(conn))
        assert rx.snapshot() == []
    dead = await conn.fetchrow("SELECT * FROM outbox.dead_letters")
    assert dead["message_id"] == message_id
    assert "SSRF guard" in dead["reason"]
    assert expected in dead["reason"]
    assert dead["attempts"] == 1


async def test_an_endpoint_may_allow_a_range_for_itself(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver() as rx:
        await add_endpoint(conn, "internal", rx.url(), allow_networks=["127.0.0.0/8"])
        await add_endpoint(conn, "other", rx.url("/other"))
        await enqueue(conn, "internal")
        await enqueue(conn, "other")
        async with running_worker(database_url, allow=()):
            await until(lambda: _none_left(conn))
    assert [r.path for r in rx.snapshot()] == ["/hook"]
    assert await conn.fetchval("SELECT endpoint FROM outbox.dead_letters") == "other"


async def test_enqueue_for_a_telegram_endpoint_keys_by_chat(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO outbox.endpoints (name, channel, secret) VALUES ('tg', 'telegram', 'env:T')"
    )
    async with conn.transaction():
        one = await outbox.enqueue(conn, "tg", {"chat_id": -1001, "text": "hi"})
        two = await outbox.enqueue(conn, "tg", {"chat_id": 7, "text": "hi"}, key="mine")
        [three] = await outbox.enqueue_many(
            conn, [{"endpoint": "tg", "payload": {"chat_id": "@chan", "text": "x"}}]
        )
    keys = dict(await conn.fetch("SELECT id, key FROM outbox.messages"))
    assert keys == {one: "-1001", two: "mine", three: "@chan"}
    assert isinstance(one, uuid.UUID)


# -- concurrency (found by review: each of these failed before its fix) ---------


async def test_an_endpoint_made_unordered_lets_its_parked_messages_go(
    conn: asyncpg.Connection,
) -> None:
    # Only an ordered endpoint's finish brings back what waits behind a key's
    # head, so switching ordering off must not leave those waiting for it.
    await null_endpoint(conn, "seq", ordered=True)
    await null_endpoint(conn, "other", ordered=True)
    [head, *rest] = await enqueue(conn, "seq", 3, key="k")
    await enqueue(conn, "other", 2, key="k")
    leased = [r["id"] for r in await claim(conn, 10)]
    assert head in leased
    assert not set(rest) & set(leased)
    parked = "SELECT endpoint, count(*) FROM outbox.messages WHERE held = 'order' GROUP BY 1"
    assert dict(await conn.fetch(parked)) == {"seq": 2, "other": 1}
    await operate.update_endpoint(conn, "seq", EndpointUpdate(ordered=False))
    assert dict(await conn.fetch(parked)) == {"other": 1}  # the ordered one keeps its own
    # Due again now, behind a head still in flight: unordered, they go at once.
    assert sorted(r["id"] for r in await claim(conn, 10)) == sorted(rest)


async def test_concurrent_claimers_never_deadlock(
    database_url: str, conn: asyncpg.Connection
) -> None:
    for name in ("r1", "r2", "r3"):
        await null_endpoint(conn, name, rate_limit=1000.0)
    await null_endpoint(conn, "keyed", key_interval_ms=1)
    await null_endpoint(conn, "seq", ordered=True)
    for name in ("r1", "r2", "r3"):
        await enqueue(conn, name, 300)
    async with conn.transaction():
        await outbox.enqueue_many(
            conn,
            [
                {"endpoint": e, "key": f"k{i % 40}", "payload": {"i": i}}
                for e in ("keyed", "seq")
                for i in range(2000)
            ],
        )
    errors: list[BaseException] = []

    async def claimer() -> None:
        c = await asyncpg.connect(database_url)
        try:
            for _ in range(15):
                try:
                    ids = [r["id"] for r in await c.fetch(CLAIM, 40, 0.5)]
                except asyncpg.PostgresError as exc:
                    errors.append(exc)
                    continue
                # Finish what was claimed, so keys free up and get contended again.
                async with c.transaction():
                    await c.execute("DELETE FROM outbox.messages WHERE id = ANY($1)", ids)
                    await c.execute(
                        "UPDATE outbox.key_limits SET holder = NULL, next_at = now()"
                        " WHERE holder = ANY($1)",
                        ids,
                    )
        finally:
            await c.close()

    await asyncio.gather(*(claimer() for _ in range(8)))
    assert errors == []


async def test_an_ordered_key_never_has_two_in_flight_whatever_the_commit_order(
    database_url: str, conn: asyncpg.Connection
) -> None:
    await null_endpoint(conn, "seq", ordered=True)
    early = await asyncpg.connect(database_url)
    try:
        tx = early.transaction()
        await tx.start()
        [a] = await outbox.enqueue_many(early, [{"endpoint": "seq", "key": "k", "payload": {}}])
        [b] = await enqueue(conn, "seq", 1, key="k")  # a later number, committed first
        assert [r["id"] for r in await claim(conn, 10)] == [b]
        await tx.commit()
    finally:
        await early.close()
    assert await claim(conn, 10) == []  # `a` waits while `b` is in flight
    leased = await conn.fetchval(
        "SELECT count(*) FROM outbox.messages WHERE lease_token IS NOT NULL"
    )
    assert leased == 1
    assert a != b


async def test_a_success_in_a_report_ends_the_failing_run(conn: asyncpg.Connection) -> None:
    await null_endpoint(conn, "n", disable_after=timedelta(seconds=1), breaker_failures=1000)
    report = (
        "SELECT outbox._report_health(ARRAY['n'], ARRAY[$1::int], ARRAY[$2::int],"
        " ARRAY[$3::int], ARRAY['x'], ARRAY[0.0::float8], ARRAY[NULL::text])"
    )
    await conn.execute(report, 0, 1, 1)  # a failure...
    for _ in range(3):
        await asyncio.sleep(0.5)
        await conn.execute(report, 50, 1, 1)  # ...then successes with a failure after them
    assert (await state(conn, "n"))["state"] == "active"
    await asyncio.sleep(1.1)
    await conn.execute(report, 0, 1, 1)  # only failures for longer than disable_after
    await conn.execute(report, 0, 1, 1)
    assert (await state(conn, "n"))["state"] == "disabled"


async def test_a_migrated_chat_frees_the_key_it_held(conn: asyncpg.Connection) -> None:
    from outbox.deliver.model import Finished, Rewrite
    from outbox.deliver.policy import Outcome

    await conn.execute(
        "INSERT INTO outbox.endpoints (name, channel, secret, key_interval_ms)"
        " VALUES ('tg', 'telegram', 'env:T', 100)"
    )
    async with conn.transaction():
        await outbox.enqueue(conn, "tg", {"chat_id": -100, "text": "hi"})
    [row] = await claim(conn, 1)
    token = await conn.fetchval("SELECT lease_token FROM outbox.messages")
    now = await conn.fetchval("SELECT now()")
    done = Finished(row["id"], token, Outcome.RETRYING, now, 1.0, "migrated", retry_at=now)
    done.rewrite = Rewrite('{"chat_id": -1009, "text": "hi"}', "-1009")
    from outbox.deliver.store import PostgresStore

    # A connection answers fetch() as a pool does.
    await PostgresStore(cast(Any, conn), worker_id="w", lease_seconds=60).finish([done])
    assert await conn.fetchval("SELECT key FROM outbox.messages") == "-1009"
    assert await conn.fetchval("SELECT holder FROM outbox.key_limits WHERE key = '-100'") is None


async def test_a_pause_from_settings_changed_since_is_not_applied(conn: asyncpg.Connection) -> None:
    """A worker's cache may hold an endpoint's old credentials for a few seconds
    after `endpoint update --secret` and `resume`: the pause their failure asks
    for must not stop the endpoint again."""
    await null_endpoint(conn, "n")
    pause = (
        "SELECT outbox._report_health(ARRAY['n'], ARRAY[0], ARRAY[0], ARRAY[0], ARRAY[NULL::text],"
        " ARRAY[NULL::float8], ARRAY['credentials refused'], ARRAY[$1::timestamptz])"
    )
    seen = await conn.fetchval("SELECT updated_at FROM outbox.endpoints WHERE name = 'n'")
    await conn.execute(pause, seen)
    assert (await state(conn, "n"))["state"] == "paused"
    await operate.resume_endpoint(conn, "n")
    await conn.execute(pause, seen)  # from a cache loaded before the resume
    assert (await state(conn, "n"))["state"] == "active"
    now = await conn.fetchval("SELECT updated_at FROM outbox.endpoints WHERE name = 'n'")
    await conn.execute(pause, now)  # from settings as they are: applied
    assert (await state(conn, "n"))["state"] == "paused"
