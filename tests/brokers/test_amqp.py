"""The ``amqp`` channel against a real RabbitMQ, seen by a real consumer.

Every test works in a virtual host of this module's own (``rabbitmqctl
add_vhost``), with users of its own: one that may do everything there, one
that may not write (publish). Deleting the vhost at the end takes every queue
and exchange the tests declared with it; the users are deleted too. Two tests
change the broker for every client (a restart, ``max_message_size``): they
put it back, and runs of this module on one machine take turns around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiormq
import asyncpg
import pytest
from click.testing import CliRunner
from conftest import REQUIRE, add_broker_endpoint
from support import WorkerProcess, running_worker, until, worker_config

import outbox
from outbox import operate
from outbox.cli import main
from outbox.operate.endpoint_config import EndpointUpdate

# The in-process worker: quick retries, and endpoint changes seen within 0.2 s.
CONFIG = worker_config(
    concurrency=20,
    batch_size=50,
    lease_seconds=30,
    poll_interval=0.05,
    flush_interval=0.01,
    reap_interval=0.2,
    backoff_base=0.05,
    backoff_cap=0.2,
    shutdown_grace=5,
    endpoint_refresh=0.2,
)

# A broker's behaviour, not the database's: CI runs these in its first pass only.
pytestmark = pytest.mark.single_pass

# Endpoints that must survive failures (a broker restart, nacks) without opening
# their circuit or running out of attempts.
STUBBORN: dict[str, Any] = {"max_attempts": 1000, "breaker_failures": 1_000_000}
QUICK: dict[str, Any] = {"timeout": 3.0, "connect_timeout": 2.0}

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


# -- the broker: rabbitmqctl, a realm of our own, a consumer --------------------------------


def rabbitmqctl(*args: str, wait: float = 60) -> str:
    """Run ``rabbitmqctl``; while the broker application is stopped (a restart,
    this module's or another run's, on the shared broker), wait up to ``wait``
    seconds for it to be back."""
    deadline = time.monotonic() + wait
    while True:
        done = subprocess.run(
            ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode == 0:
            return done.stdout
        said = done.stderr or done.stdout
        if "app to be running" not in said or time.monotonic() > deadline:
            raise AssertionError(f"rabbitmqctl {' '.join(args)} failed: {said}")
        time.sleep(0.5)


@dataclass(frozen=True)
class Realm:
    """A vhost of this module's own and its users."""

    host: str
    port: int
    vhost: str
    user: str  # configure, write and read everything in the vhost
    password: str
    reader: str  # configure and read, but write (publish) nothing
    reader_password: str

    def url(self, user: str | None = None, password: str | None = None, vhost: str = "") -> str:
        """amqp://user:password@host:port/vhost (the writer's by default;
        ``password=""``: no password in the URL)."""
        user = user or self.user
        password = self.password if password is None and user == self.user else password
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
        return f"amqp://{auth}@{self.host}:{self.port}/{quote(vhost or self.vhost, safe='')}"

    @property
    def passwords(self) -> tuple[str, str]:
        return self.password, self.reader_password


@pytest.fixture(scope="module")
def realm(amqp_url: str) -> Iterator[Realm]:
    if shutil.which("rabbitmqctl") is None:
        message = "rabbitmqctl is not on PATH: the amqp tests need it (as root) to make users"
        if os.environ.get(REQUIRE):
            pytest.fail(message)
        pytest.skip(message)
    parts = urlsplit(amqp_url)
    tag = secrets.token_hex(4)
    made = Realm(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5672,
        vhost=f"outbox-test-{tag}",
        user=f"outbox-writer-{tag}",
        password=f"pw-writer-{secrets.token_hex(8)}",
        reader=f"outbox-reader-{tag}",
        reader_password=f"pw-reader-{secrets.token_hex(8)}",
    )
    made_here: list[tuple[str, ...]] = []  # how to delete each thing made
    try:
        _each(
            [("add_vhost", made.vhost), ("delete_vhost", made.vhost)],
            [("add_user", made.user, made.password), ("delete_user", made.user)],
            [("add_user", made.reader, made.reader_password), ("delete_user", made.reader)],
            made=made_here,
        )
        _each(
            [("set_permissions", "-p", made.vhost, made.user, ".*", ".*", ".*")],
            [("set_permissions", "-p", made.vhost, made.reader, ".*", "^$", ".*")],
        )
        yield made
    finally:
        _each(*([delete] for delete in made_here))  # the vhost takes its queues and exchanges


def _each(*steps: list[tuple[str, ...]], made: list[tuple[str, ...]] | None = None) -> None:
    """Run each step's first ``rabbitmqctl`` command, the steps at once (each takes
    most of a second); a step's second command, if any, undoes it: it goes in
    ``made`` when the first succeeded. Raises the first failure, after all ran."""
    with ThreadPoolExecutor(len(steps)) as pool:
        futures = [(step, pool.submit(rabbitmqctl, *step[0])) for step in steps]
    failures = []
    for step, future in futures:
        error = future.exception()
        if error is not None:
            failures.append(error)
        elif made is not None and len(step) > 1:
            made.append(step[1])
    if failures:
        raise failures[0]


# Runs of this module on one machine share the broker: a test that changes it for
# everyone (a restart, max_message_size) waits for the others' tests to finish and
# holds them off meanwhile (flock: shared for a test, exclusive for those).
LOCK = Path(tempfile.gettempdir()) / "outbox-tests-rabbitmq.lock"


def broker_wide(test: Any) -> Any:
    """Mark a test that changes the broker for every client."""
    test.broker_wide = True
    return test


@pytest.fixture(autouse=True)
def _broker_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    wide = getattr(request.function, "broker_wide", False)
    with LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if wide else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.asynccontextmanager
async def amqp_channel(realm: Realm) -> AsyncIterator[Any]:
    """An aiormq channel of the writer's, in the realm's vhost."""
    connection = await aiormq.connect(realm.url())
    try:
        yield await connection.channel()
    finally:
        await connection.close()


async def topic_queue(channel: Any, binding: str, **arguments: Any) -> tuple[str, str]:
    """A new topic exchange and a queue bound to it by ``binding``: (exchange, queue)."""
    exchange, queue = unique("x"), unique("q")
    await channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    await channel.queue_declare(queue, durable=True, arguments=arguments or None)
    await channel.queue_bind(queue, exchange, routing_key=binding)
    return exchange, queue


@dataclass
class Received:
    at: float  # time.monotonic() at receipt
    routing_key: str
    body: bytes
    properties: Any
    exchange: str

    @property
    def id(self) -> str:
        return str(self.properties.message_id)

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


@dataclass
class Consumer:
    """A real consumer of a queue (basic.consume, acks each message after ``ack_delay``)."""

    channel: Any
    queue: str
    ack_delay: float = 0.0
    prefetch: int = 100
    received: list[Received] = field(default_factory=list)

    async def start(self) -> Consumer:
        await self.channel.basic_qos(prefetch_count=self.prefetch)
        await self.channel.basic_consume(self.queue, self._on_message)
        return self

    async def _on_message(self, message: Any) -> None:
        self.received.append(
            Received(
                time.monotonic(),
                message.delivery.routing_key,
                message.body,
                message.header.properties,
                message.delivery.exchange,
            )
        )
        if self.ack_delay:
            await asyncio.sleep(self.ack_delay)
        await message.channel.basic_ack(message.delivery.delivery_tag)

    def ids(self) -> list[str]:
        return [r.id for r in self.received]


async def drain(channel: Any, queue: str) -> list[Received]:
    """Every message waiting in ``queue`` (basic.get until it is empty)."""
    got: list[Received] = []
    while True:
        message = await channel.basic_get(queue, no_ack=True)
        if isinstance(message.delivery, aiormq.spec.Basic.GetEmpty):
            return got
        got.append(
            Received(
                time.monotonic(),
                message.delivery.routing_key,
                message.body,
                message.header.properties,
                message.delivery.exchange,
            )
        )


def amqp_answers(host: str, port: int) -> bool:
    """Does the port speak AMQP (answer the protocol header with connection.start)?"""
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.settimeout(2.0)
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            return sock.recv(1) == b"\x01"  # a method frame
    except OSError:
        return False


# -- the outbox side ---------------------------------------------------------------------------


async def enqueue_all(conn: asyncpg.Connection, messages: list[dict[str, Any]]) -> list[str]:
    async with conn.transaction():
        return [str(i) for i in await outbox.enqueue_many(conn, messages)]


async def left(conn: asyncpg.Connection, endpoint: str | None = None) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM outbox.messages WHERE $1::text IS NULL OR endpoint = $1",
            endpoint,
        )
    )


async def none_left(conn: asyncpg.Connection, endpoint: str | None = None) -> bool:
    return await left(conn, endpoint) == 0


async def dead_letters(conn: asyncpg.Connection) -> dict[str, list[asyncpg.Record]]:
    rows = await conn.fetch("SELECT * FROM outbox.dead_letters ORDER BY dead_at")
    by_endpoint: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for row in rows:
        by_endpoint[row["endpoint"]].append(row)
    return by_endpoint


# -- 1. delivery ---------------------------------------------------------------------------------


async def test_a_message_reaches_a_bound_queue_with_its_routing_key_properties_and_headers(
    database_url: str, conn: asyncpg.Connection, realm: Realm
) -> None:
    async with amqp_channel(realm) as channel:
        exchange, queue = await topic_queue(channel, "orders.*.eu")
        consumer = await Consumer(channel, queue).start()
        await add_broker_endpoint(
            conn, "orders", "amqp", realm.url(), exchange=exchange,
            target="orders.{key}.{payload.region}", **QUICK,
        )  # fmt: skip
        payloads = [
            {"region": "eu", "total": 12.5, "items": [{"sku": "a-1", "n": 2}], "note": "é ü 日本"},
            {"region": "eu", "total": 3, "gift": True},
        ]
        ids = await enqueue_all(
            conn,
            [
                {"endpoint": "orders", "key": "acct-7", "payload": payloads[0],
                 "headers": {"trace-id": "t-123", "tenant": "acme"}, "traceparent": TRACEPARENT},
                {"endpoint": "orders", "key": "acct-8", "payload": payloads[1]},
            ],
        )  # fmt: skip
        async with running_worker(database_url, CONFIG):
            await until(lambda: len(consumer.received) == 2, within=15)
            await until(lambda: none_left(conn), within=10)
    by_id = {r.id: r for r in consumer.received}
    assert sorted(by_id) == sorted(ids)
    first, second = by_id[ids[0]], by_id[ids[1]]
    assert (first.exchange, first.routing_key) == (exchange, "orders.acct-7.eu")
    assert second.routing_key == "orders.acct-8.eu"
    assert first.payload == payloads[0]
    assert second.payload == payloads[1]
    for got, mid in ((first, ids[0]), (second, ids[1])):
        assert got.properties.delivery_mode == 2
        assert got.properties.message_id == mid
        assert got.properties.content_type == "application/json"
    assert first.properties.headers == {
        "trace-id": "t-123",
        "tenant": "acme",
        "traceparent": TRACEPARENT,  # the producer's trace context, onward
        "outbox-id": ids[0],
        "outbox-key": "acct-7",
    }
    assert second.properties.headers == {"outbox-id": ids[1], "outbox-key": "acct-8"}
    rows = await conn.fetch(
        "SELECT message_id::text, attempt, outcome, duration_ms, error FROM outbox.attempts"
    )
    assert sorted(r["message_id"] for r in rows) == sorted(ids)
    for row in rows:
        assert (row["attempt"], row["outcome"], row["error"]) == (1, "delivered", None)
        assert row["duration_ms"] > 0
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0


async def test_without_an_exchange_the_default_exchange_routes_to_the_queue_the_key_names(
    database_url: str, conn: asyncpg.Connection, realm: Realm
) -> None:
    async with amqp_channel(realm) as channel:
        queue = unique("direct")
        await channel.queue_declare(queue, durable=True)
        consumer = await Consumer(channel, queue).start()
        await add_broker_endpoint(conn, "plain", "amqp", realm.url(), target=queue, **QUICK)
        (mid,) = await enqueue_all(conn, [{"endpoint": "plain", "payload": {"n": 1}}])
        async with running_worker(database_url, CONFIG):
            await until(lambda: len(consumer.received) == 1, within=15)
            await until(lambda: none_left(conn), within=10)
    (got,) = consumer.received
    assert (got.exchange, got.routing_key, got.id, got.payload) == ("", queue, mid, {"n": 1})
    assert got.properties.headers == {"outbox-id": mid}  # no key: no outbox-key


# -- 2. order per key, under nacks -----------------------------------------------------------


async def test_an_ordered_endpoint_keeps_each_keys_order_while_the_broker_nacks(
    database_url: str, conn: asyncpg.Connection, realm: Realm
) -> None:
    """The queue holds at most 2 ready messages and rejects publishes beyond
    (x-overflow reject-publish: basic.nack); the consumer acks slowly, so many
    publishes are nacked and retried. Each key's messages still arrive in order,
    each once."""
    keys = [f"acct-{k}" for k in range(5)]
    per_key = 8
    async with amqp_channel(realm) as channel:
        exchange, queue = await topic_queue(
            channel, "ledger.#", **{"x-max-length": 2, "x-overflow": "reject-publish"}
        )
        consumer = await Consumer(channel, queue, ack_delay=0.01, prefetch=1).start()
        await add_broker_endpoint(
            conn, "ledger", "amqp", realm.url(), exchange=exchange, target="ledger.{key}",
            ordered=True, **STUBBORN, **QUICK,
        )  # fmt: skip
        plan = [(key, n) for n in range(per_key) for key in keys]  # keys interleaved
        await enqueue_all(
            conn,
            [{"endpoint": "ledger", "key": k, "payload": {"key": k, "n": n}} for k, n in plan],
        )
        async with running_worker(database_url, CONFIG):
            await until(lambda: none_left(conn), within=60)
            await until(lambda: len(consumer.received) >= len(plan), within=10)
    arrivals: dict[str, list[int]] = defaultdict(list)
    for got in consumer.received:
        assert got.routing_key == f"ledger.{got.payload['key']}"
        arrivals[got.payload["key"]].append(got.payload["n"])
    assert sorted(arrivals) == keys
    for key in keys:
        assert arrivals[key] == list(range(per_key)), key
    nacked = await conn.fetchval(
        "SELECT count(*) FROM outbox.attempts WHERE outcome = 'retrying' AND error LIKE '%nack%'"
    )
    assert nacked >= 5  # the broker really pushed back
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0


# -- 4. what the broker refuses for good -----------------------------------------------------


async def test_what_the_broker_refuses_for_good_is_dead_lettered_with_its_reason(
    database_url: str, conn: asyncpg.Connection, realm: Realm
) -> None:
    async with amqp_channel(realm) as channel:
        lonely = unique("lonely")  # an exchange no queue is bound to
        await channel.exchange_declare(lonely, exchange_type="topic", durable=True)
        guarded, queue = await topic_queue(channel, "#")  # the reader may not publish to it
        missing_exchange, missing_queue = unique("missing"), unique("missing")
        cases: dict[str, dict[str, Any]] = {
            "unroutable": {"url": realm.url(), "exchange": lonely, "target": "nowhere.{key}"},
            "no-queue": {"url": realm.url(), "target": missing_queue},  # the default exchange
            "no-exchange": {"url": realm.url(), "exchange": missing_exchange, "target": "t.{key}"},
            "forbidden": {
                "url": realm.url(realm.reader, realm.reader_password),
                "exchange": guarded,
                "target": "t.{key}",
            },
        }
        for name, settings in cases.items():
            url = settings.pop("url")
            await add_broker_endpoint(conn, name, "amqp", url, **settings, **QUICK)
        per_endpoint = 3
        ids = await enqueue_all(
            conn,
            [
                {"endpoint": name, "key": f"k{i}", "payload": {"i": i}}
                for name in cases
                for i in range(per_endpoint)
            ],
        )
        async with running_worker(database_url, CONFIG):
            await until(lambda: none_left(conn), within=30)
        waiting = await channel.queue_declare(queue, passive=True)
        assert waiting.message_count == 0  # nothing the reader sent got through
    vhost = realm.vhost
    expected = {
        "unroutable": (
            rf"unroutable: exchange '{re.escape(lonely)}' has no queue bound for routing key "
            r"'nowhere\.k\d' \(312 NO_ROUTE\)"
        ),
        "no-queue": (
            rf"unroutable: exchange '\(default\)' has no queue bound for routing key "
            rf"'{re.escape(missing_queue)}' \(312 NO_ROUTE\)"
        ),
        "no-exchange": (
            rf"not found: NOT_FOUND - no exchange '{re.escape(missing_exchange)}' "
            rf"in vhost '{re.escape(vhost)}'"
        ),
        "forbidden": (
            rf"permission denied: ACCESS_REFUSED - (write )?access to exchange "
            rf"'{re.escape(guarded)}' in vhost '{re.escape(vhost)}' "
            rf"refused for user '{re.escape(realm.reader)}'"
        ),
    }
    dead = await dead_letters(conn)
    assert sorted(dead) == sorted(cases)
    assert sorted(str(r["message_id"]) for rows in dead.values() for r in rows) == sorted(ids)
    for name, pattern in expected.items():
        assert len(dead[name]) == per_endpoint, name
        for row in dead[name]:
            assert re.fullmatch("permanent failure: " + pattern, row["reason"] or ""), (
                name,
                row["reason"],
            )
            assert re.fullmatch(pattern, row["last_error"] or ""), (name, row["last_error"])
    # A permanent failure is the message's: each went dead at its first attempt,
    # and none paused its endpoint.
    ledger = await conn.fetch("SELECT endpoint, attempt, outcome FROM outbox.attempts")
    assert sorted((r["attempt"], r["outcome"]) for r in ledger) == [(1, "dead")] * len(ids)
    assert (
        await conn.fetchval("SELECT count(*) FROM outbox.endpoints WHERE paused_at IS NOT NULL")
        == 0
    )


# The limit the test sets: an odd number no one configures, so that a run that died
# before restoring it is recognised (and RabbitMQ's default put back).
TEST_MAX_SIZE = 60_013
RABBITMQ_MAX_SIZE = 134_217_728  # RabbitMQ's default max_message_size (128 MiB)


def _max_message_size() -> int | None:
    found = re.search(
        r"\{ok,(\d+)\}", rabbitmqctl("eval", "application:get_env(rabbit, max_message_size).")
    )
    size = int(found.group(1)) if found else None
    return RABBITMQ_MAX_SIZE if size == TEST_MAX_SIZE else size


def _set_max_message_size(size: int | None) -> None:
    if size is None:
        rabbitmqctl("eval", "application:unset_env(rabbit, max_message_size).")
    else:
        rabbitmqctl("eval", f"application:set_env(rabbit, max_message_size, {size}).")


@broker_wide
async def test_a_message_over_the_brokers_max_size_is_dead_lettered_and_its_neighbours_go(
    database_url: str, conn: asyncpg.Connection, realm: Realm
) -> None:
    """``max_message_size`` lowered at run time (RabbitMQ reads it when a channel
    opens; restored at once). The message over it closes the AMQP channel
    (406): it is dead-lettered; the small ones in flight on that channel with it
    are retried and delivered."""
    limit = TEST_MAX_SIZE
    async with amqp_channel(realm) as channel:
        queue = unique("sized")
        await channel.queue_declare(queue, durable=True)
        consumer = await Consumer(channel, queue).start()
        await add_broker_endpoint(
            conn, "sized", "amqp", realm.url(), target=queue, **QUICK, **STUBBORN
        )
        big, *small = await enqueue_all(
            conn,
            [{"endpoint": "sized", "payload": {"blob": "x" * (limit + 1000)}}]
            + [{"endpoint": "sized", "payload": {"n": n}} for n in range(6)],
        )
        original = await asyncio.to_thread(_max_message_size)
        await asyncio.to_thread(_set_max_message_size, limit)
        try:
            async with running_worker(database_url, CONFIG):
                await until(
                    lambda: conn.fetchval("SELECT count(*) FROM outbox.dead_letters"), within=20
                )
                await asyncio.to_thread(_set_max_message_size, original)
                await until(lambda: none_left(conn), within=20)
                await until(lambda: len(consumer.received) >= len(small), within=10)
        finally:
            await asyncio.to_thread(_set_max_message_size, original)
    assert sorted(consumer.ids()) == sorted(small)
    bystanders = await conn.fetchval(
        "SELECT count(*) FROM outbox.attempts WHERE outcome = 'retrying'"
        " AND error LIKE 'the AMQP channel closed over another message: PRECONDITION_FAILED%'"
    )
    assert bystanders >= 1  # small messages were in flight on the channel the big one closed
    (row,) = await conn.fetch("SELECT message_id::text, reason FROM outbox.dead_letters")
    assert row["message_id"] == big
    size = len(json.dumps({"blob": "x" * (limit + 1000)}))
    assert row["reason"] == (
        "permanent failure: refused by the broker: PRECONDITION_FAILED - "
        f"message size {size} is larger than configured max size {limit}"
    )


# -- 5. refused credentials pause the endpoint -----------------------------------------------


async def test_refused_credentials_or_vhost_pause_the_endpoint_and_keep_its_messages(
    database_url: str, conn: asyncpg.Connection, realm: Realm
) -> None:
    wrong = f"pw-wrong-{secrets.token_hex(8)}"
    no_such_vhost = unique("no-such-vhost")
    async with amqp_channel(realm) as channel:
        queue = unique("kept")
        await channel.queue_declare(queue, durable=True)
        consumer = await Consumer(channel, queue).start()
        endpoints = {
            "wrong-password": realm.url(password=wrong),
            "no-such-vhost": realm.url(vhost=no_such_vhost),
            "no-rights-here": realm.url(vhost="/"),  # the user has no permissions on /
        }
        for name, url in endpoints.items():
            await add_broker_endpoint(conn, name, "amqp", url, target=queue, **QUICK)
        ids = await enqueue_all(
            conn, [{"endpoint": name, "payload": {"n": n}} for name in endpoints for n in range(2)]
        )

        async def paused() -> dict[str, str]:
            rows = await conn.fetch(
                "SELECT name, paused_reason FROM outbox.endpoints WHERE paused_at IS NOT NULL"
            )
            return {r["name"]: r["paused_reason"] for r in rows}

        async with running_worker(database_url, CONFIG):
            await until(lambda: paused_all(paused, endpoints), within=20)
            await asyncio.sleep(0.5)  # paused: nothing more is tried
            reasons = await paused()
            assert reasons["wrong-password"] == (
                "the broker refused the credentials: ProbableAuthenticationError"
            )
            for name, vhost in (("no-such-vhost", no_such_vhost), ("no-rights-here", "/")):
                assert reasons[name] == (
                    f"the broker refused access to the vhost {vhost!r}: it does not exist, or "
                    "the user has no permissions there (or is over a connection limit)"
                )
            for name in endpoints:
                assert await left(conn, name) == 2, name  # kept
            assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0
            assert consumer.received == []
            # The operator fixes the password and resumes at once (a try on the settings
            # the worker still holds fails, but pauses nothing): the kept messages go.
            await operate.update_endpoint(
                conn,
                "wrong-password",
                EndpointUpdate(url=realm.url(password=""), secret=realm.password),
            )
            await operate.resume_endpoint(conn, "wrong-password")
            await until(lambda: len(consumer.received) == 2, within=15)
            await until(lambda: none_left(conn, "wrong-password"), within=10)
    assert sorted(consumer.ids()) == sorted(ids[:2])
    assert await left(conn) == 4  # the two others are still paused, their messages kept


async def paused_all(paused: Any, endpoints: dict[str, str]) -> bool:
    return set(await paused()) == set(endpoints)


# -- 6. a broker restart ---------------------------------------------------------------------


async def wait_for_amqp(realm: Realm, within: float = 60) -> None:
    """Until the broker accepts an AMQP login again."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await asyncio.to_thread(amqp_answers, realm.host, realm.port):
            with contextlib.suppress(Exception):
                async with amqp_channel(realm):
                    return
        await asyncio.sleep(0.2)
    raise AssertionError(f"RabbitMQ does not answer AMQP {within}s after start_app")


@contextlib.asynccontextmanager
async def broker_stopped(realm: Realm) -> AsyncIterator[None]:
    """``rabbitmqctl stop_app`` now; ``start_app`` (always) on leaving, then until
    the broker answers AMQP again."""
    try:
        await asyncio.to_thread(rabbitmqctl, "stop_app")
        yield
    finally:
        await asyncio.to_thread(rabbitmqctl, "start_app")
        await wait_for_amqp(realm)


async def delivered(conn: asyncpg.Connection, at_least: int) -> bool:
    count = await conn.fetchval("SELECT count(*) FROM outbox.attempts WHERE outcome = 'delivered'")
    return int(count) >= at_least


@broker_wide
async def test_a_broker_restart_mid_run_loses_no_message(
    database_url: str, conn: asyncpg.Connection, realm: Realm
) -> None:
    """The worker publishes to a durable queue at 40/s; RabbitMQ stops and starts
    again in the middle. Every message is in the queue afterwards."""
    async with amqp_channel(realm) as channel:
        queue = unique("durable")
        await channel.queue_declare(queue, durable=True)
    await add_broker_endpoint(
        conn, "durable", "amqp", realm.url(), target=queue, rate_limit=40.0,
        breaker_cooldown=timedelta(milliseconds=200), breaker_max_cooldown=timedelta(seconds=1),
        **STUBBORN, **QUICK,
    )  # fmt: skip
    ids = await enqueue_all(
        conn, [{"endpoint": "durable", "payload": {"n": n}} for n in range(120)]
    )
    async with running_worker(database_url, CONFIG):
        await until(lambda: delivered(conn, 20), within=20)
        async with broker_stopped(realm):
            stranded = await left(conn)
            assert stranded > 0  # stopped mid-run
            await asyncio.sleep(1.0)  # the worker keeps trying a broker that is down
            failed_while_down = await conn.fetchval(
                "SELECT count(*) FROM outbox.attempts WHERE outcome = 'retrying'"
            )
        await until(lambda: none_left(conn), within=60)
    async with amqp_channel(realm) as channel:
        got = await drain(channel, queue)
    copies = Counter(r.id for r in got)
    assert set(copies) == set(ids)  # every message arrived
    assert failed_while_down > 0  # the worker did meet the stopped broker
    # A second copy only of a message whose confirm the restart cut off (that try
    # failed, so it was sent again): at least once, no more.
    failed = await conn.fetchval("SELECT count(*) FROM outbox.attempts WHERE outcome = 'retrying'")
    assert len(got) - len(ids) <= failed
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0


# -- worker processes ------------------------------------------------------------------------


def stop(workers: list[WorkerProcess]) -> None:
    for w in workers:
        if w.proc.poll() is None:
            w.signal(signal.SIGTERM)
    for w in workers:
        w.wait(30)


@pytest.mark.e2e
async def test_the_rate_limit_holds_across_three_worker_processes(
    database_url: str,
    conn: asyncpg.Connection,
    realm: Realm,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    rate, total, window = 20.0, 80, 2.0
    async with amqp_channel(realm) as channel:
        exchange, queue = await topic_queue(channel, "paced.#")
        consumer = await Consumer(channel, queue).start()
        await add_broker_endpoint(
            conn, "paced", "amqp", realm.url(), exchange=exchange, target="paced.{key}",
            rate_limit=rate, rate_burst=1, **QUICK,
        )  # fmt: skip
        # Every process up and claiming before the messages come: one that started
        # late under load would find them all claimed (each claim takes a second
        # of the rate's slots) and the check that all three took part would fail.
        fleet = [
            WorkerProcess(database_url, "--concurrency", "30", log_dir=tmp_path) for _ in range(3)
        ]
        workers.extend(fleet)
        await until(lambda: all(" started (concurrency" in w.output() for w in fleet), within=30)
        ids = await enqueue_all(
            conn,
            [{"endpoint": "paced", "key": f"k{n % 7}", "payload": {"n": n}} for n in range(total)],
        )
        await until(lambda: none_left(conn), within=total / rate * 3)
        await until(lambda: len(consumer.received) >= total, within=10)
        stop(workers)
    assert sorted(consumer.ids()) == sorted(ids)
    arrivals = sorted(r.at for r in consumer.received)
    # In any 2 s window (the consumer's clock), at most what the rate lets through in
    # it and the burst, allowing a message 0.25 s late at its slot (event loop, network).
    busiest = max(
        sum(1 for t in arrivals[i:] if t < start + window) for i, start in enumerate(arrivals)
    )
    assert busiest <= rate * (window + 0.25) + 1, busiest
    assert busiest >= rate * window * 0.85, busiest  # a rate, not a stall
    # The whole run took at least as long as the rate allows.
    assert arrivals[-1] - arrivals[0] >= (total - 1) / rate * 0.95
    claimers = {r[0] for r in await conn.fetch("SELECT DISTINCT worker_id FROM outbox.attempts")}
    assert len(claimers) == 3  # every process took part


@pytest.mark.e2e
async def test_a_worker_killed_mid_run_loses_no_message(
    database_url: str,
    conn: asyncpg.Connection,
    realm: Realm,
    workers: list[WorkerProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Worker A (2 s leases) is SIGKILLed holding claimed messages; worker B, started
    after, delivers those once their leases expire, and the rest. At least once:
    a message A published but had not recorded may arrive twice; none is missing."""
    monkeypatch.setenv("OUTBOX_REAP_INTERVAL", "0.3")
    lease = ("--lease-seconds", "2")
    total = 150
    async with amqp_channel(realm) as channel:
        queue = unique("survivor")
        await channel.queue_declare(queue, durable=True)
        consumer = await Consumer(channel, queue).start()
        await add_broker_endpoint(
            conn, "survivor", "amqp", realm.url(), target=queue, rate_limit=50.0, **QUICK
        )
        ids = await enqueue_all(
            conn, [{"endpoint": "survivor", "payload": {"n": n}} for n in range(total)]
        )
        a = WorkerProcess(database_url, *lease, log_dir=tmp_path)
        workers.append(a)
        await until(lambda: len(consumer.received) >= 40, within=20)
        a.proc.kill()
        a.wait(10)
        a_id = f"{socket.gethostname()}:{a.proc.pid}"
        stranded = {
            str(r[0])
            for r in await conn.fetch(
                "SELECT id FROM outbox.messages WHERE leased_by = $1 AND lease_token IS NOT NULL",
                a_id,
            )
        }
        assert stranded  # A died holding leases
        b = WorkerProcess(database_url, *lease, log_dir=tmp_path)
        workers.append(b)
        await until(lambda: none_left(conn), within=30)
        await until(lambda: set(consumer.ids()) >= set(ids), within=10)
        await asyncio.sleep(0.3)  # any late copy
        stop([b])
    copies = Counter(consumer.ids())
    assert set(copies) == set(ids)  # none lost
    twice = {mid for mid, n in copies.items() if n > 1}
    assert twice <= stranded  # only a message A held may have been sent again
    assert sum(copies.values()) - len(ids) <= len(stranded)
    b_id = f"{socket.gethostname()}:{b.proc.pid}"
    rescued = {
        str(r[0])
        for r in await conn.fetch(
            "SELECT message_id FROM outbox.attempts WHERE worker_id = $1 AND outcome = 'delivered'",
            b_id,
        )
    }
    assert stranded <= rescued  # B delivered what A had claimed


# -- 8. no credential anywhere ---------------------------------------------------------------


@pytest.mark.e2e
async def test_no_password_reaches_the_ledger_the_endpoint_list_or_the_worker_log(
    database_url: str,
    conn: asyncpg.Connection,
    realm: Realm,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    wrong_in_url, wrong_secret = (f"pw-wrong-{secrets.token_hex(8)}" for _ in range(2))
    passwords = (*realm.passwords, wrong_in_url, wrong_secret)
    no_password = realm.url(password="")
    async with amqp_channel(realm) as channel:
        exchange, queue = await topic_queue(channel, "#")
        consumer = await Consumer(channel, queue).start()
        endpoints: dict[str, dict[str, Any]] = {
            "in-url": {"url": realm.url()},
            "as-secret": {"url": no_password, "secret": realm.password},
            "wrong-in-url": {"url": realm.url(password=wrong_in_url)},
            "wrong-secret": {"url": no_password, "secret": wrong_secret},
            "reader": {"url": realm.url(realm.reader, realm.reader_password)},
            "no-exchange": {"url": realm.url(), "exchange": unique("missing")},
        }
        for name, settings in endpoints.items():
            settings.setdefault("exchange", exchange)
            await add_broker_endpoint(conn, name, "amqp", target="t.{key}", **settings, **QUICK)
        await enqueue_all(
            conn,
            [
                {"endpoint": name, "key": name, "payload": {"n": n}}
                for name in endpoints
                for n in range(2)
            ],
        )
        w = WorkerProcess(database_url, log_dir=tmp_path)
        workers.append(w)
        await until(lambda: len(consumer.received) == 4, within=20)
        await until(
            lambda: conn.fetchval(
                "SELECT count(*) = 2 FROM outbox.endpoints WHERE paused_at IS NOT NULL"
            ),
            within=20,
        )
        await until(
            lambda: conn.fetchval("SELECT count(*) = 4 FROM outbox.dead_letters"), within=20
        )
        stop(workers)
        assert w.wait(1) == 0, w.output()
    texts: dict[str, str] = {}
    for table in ("attempts", "dead_letters", "endpoint_state"):
        rows = await conn.fetch(f"SELECT * FROM outbox.{table}")
        assert rows, table
        texts[table] = "\n".join(str(dict(r)) for r in rows)
    texts["messages"] = str(await conn.fetch("SELECT last_error FROM outbox.messages"))
    texts["endpoints"] = str(
        await conn.fetch("SELECT paused_reason, disabled_reason FROM outbox.endpoints")
    )
    listed = await operate.list_endpoints(conn)
    texts["list_endpoints"] = "\n".join(
        json.dumps(e.to_json()) + e.limits() + repr(e) for e in listed
    )
    runner = CliRunner()
    for args in (["endpoint", "list", "--json"], ["endpoint", "list"]):
        result = await asyncio.to_thread(
            runner.invoke, main, [*args, "--database-url", database_url]
        )
        assert result.exit_code == 0, result.output
        texts[" ".join(args)] = result.output
    texts["worker log"] = w.output()
    # What was checked says what happened: a real run, its failures recorded.
    assert "permission denied" in texts["dead_letters"]
    assert "refused the credentials" in texts["endpoints"]
    assert "***" in texts["endpoint list --json"]
    for said in ("refused the credentials", "permission denied", "NOT_FOUND", "4 delivered"):
        assert said in texts["worker log"], said
    for where, text in texts.items():
        for password in passwords:
            assert password not in text, (where, password)
