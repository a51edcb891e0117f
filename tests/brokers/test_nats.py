"""The ``nats`` channel against real NATS servers with JetStream, and what a
real consumer of the stream sees: the shared server (``nats_url``) and
private ones a test starts for a configuration of its own (`nats_server`).

Every test uses streams and subjects of its own (the shared server may be
used by other tests at the same time) and deletes the streams it made.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import nats
import pytest
from click.testing import CliRunner
from conftest import add_broker_endpoint
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats_server import NatsServer, Proxy, free_port
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from support import (
    FAST,
    FAST_RETRIES,
    WorkerProcess,
    add_endpoint,
    running_worker,
    until,
)

import outbox
from outbox import operate
from outbox.cli import main
from outbox.deliver.channels import registry
from outbox.deliver.otel import OtelTracer
from outbox.devtools.processes import spawn_worker
from outbox.operate.endpoint_config import EndpointUpdate

# A broker's behaviour, not the database's: CI runs these in its first pass only.
pytestmark = pytest.mark.single_pass

# Endpoint settings for quick tests: short waits, quick circuit (not in the way).
QUICK = {"timeout": 2.0, "connect_timeout": 2.0, "breaker_failures": 1000}


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def unique() -> str:
    return uuid.uuid4().hex[:12]


def port_of(url: str) -> int:
    return urlsplit(url).port or 4222


@contextlib.asynccontextmanager
async def jetstream(url: str, **options: Any) -> AsyncIterator[tuple[Any, JetStreamContext]]:
    """A client of our own (the consumer, and who makes the streams)."""

    async def quiet(_: Exception) -> None:
        return None

    nc = await nats.connect(url, error_cb=quiet, **options)
    try:
        yield nc, nc.jetstream()
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def stream(js: JetStreamContext, *subjects: str, **config: Any) -> AsyncIterator[str]:
    """A stream of this test's own, deleted afterwards."""
    name = f"OUTBOX_TEST_{unique()}"
    await js.add_stream(name=name, subjects=list(subjects), **config)
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(name)


async def read_stream(js: JetStreamContext, name: str, subject: str) -> list[Msg]:
    """Every message of the stream, in its order, as a consumer reads it."""
    total = (await js.stream_info(name)).state.messages
    sub = await js.subscribe(subject, stream=name, ordered_consumer=True)
    try:
        return [await sub.next_msg(timeout=5) for _ in range(total)]
    finally:
        await sub.unsubscribe()


async def none_left(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval("SELECT count(*) FROM outbox.messages") == 0


async def enqueue(conn: asyncpg.Connection, messages: list[dict[str, Any]]) -> list[uuid.UUID]:
    async with conn.transaction():
        return list(await outbox.enqueue_many(conn, messages))


async def dead_letters(conn: asyncpg.Connection) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch("SELECT * FROM outbox.dead_letters")
    return {r["endpoint"]: r for r in rows}


def start_worker(url: str, log_dir: Path, *args: str) -> WorkerProcess:
    return WorkerProcess(url, "--concurrency", "10", *args, log_dir=log_dir)


async def wait_started(*processes: WorkerProcess, within: float = 20.0) -> None:
    def started() -> bool:
        return all(" started (concurrency" in w.output() for w in processes)

    await until(started, within)


def stop_all(processes: list[WorkerProcess]) -> None:
    for w in processes:
        if w.proc.poll() is None:
            w.signal(signal.SIGTERM)
    for w in processes:
        code = w.wait(30)
        assert code in (0, -signal.SIGKILL), w.output()


# -- 1. delivery with the broker's acknowledgement ------------------------------


async def test_a_message_goes_out_with_its_subject_body_and_headers_on_the_puback(
    database_url: str, conn: asyncpg.Connection, nats_url: str
) -> None:
    base = f"outbox-test.{unique()}"
    async with jetstream(nats_url) as (_, js), stream(js, f"{base}.>") as name:
        await add_broker_endpoint(
            conn, "orders", "nats", nats_url, target=base + ".{payload.region}.{key}", **QUICK
        )
        await add_broker_endpoint(
            conn, "by-id", "nats", nats_url, target=base + ".id.{id}", **QUICK
        )
        payload = {"order": 17, "region": "eu", "note": "café ✓", "lines": [1, 2.5]}
        async with conn.transaction():
            keyed = await outbox.enqueue(
                conn, "orders", payload, key="customer-9", headers={"x-trace": "t-1"},
                traceparent=TRACEPARENT, tracestate="congo=t61",
            )  # fmt: skip
            keyless = await outbox.enqueue(conn, "by-id", {"n": 1})
        async with running_worker(database_url):
            await until(lambda: none_left(conn))
        messages = {m.headers["outbox-id"]: m for m in await read_stream(js, name, f"{base}.>")}
    assert set(messages) == {str(keyed), str(keyless)}
    first, second = messages[str(keyed)], messages[str(keyless)]
    # The subject as the template says; the body the payload's JSON as stored.
    assert first.subject == f"{base}.eu.customer-9"
    stored = await conn.fetchval("SELECT $1::text::jsonb::text", json.dumps(payload))
    assert first.data == stored.encode()
    assert json.loads(first.data) == payload
    assert first.headers == {
        "Nats-Msg-Id": str(keyed),
        "outbox-id": str(keyed),
        "outbox-key": "customer-9",
        "x-trace": "t-1",
        "traceparent": TRACEPARENT,  # the producer's trace context, onward (no tracer here)
        "tracestate": "congo=t61",
        "Content-Type": "application/json",
    }
    assert second.subject == f"{base}.id.{keyless}"
    assert second.headers is not None
    assert second.headers["Nats-Msg-Id"] == str(keyless)
    assert "outbox-key" not in second.headers  # no key, no header
    ledger = await conn.fetch("SELECT * FROM outbox.attempts ORDER BY id")
    assert {r["message_id"] for r in ledger} == {keyed, keyless}
    for row in ledger:
        assert (row["outcome"], row["attempt"], row["error"]) == ("delivered", 1, None)
        assert row["reason"] == "acknowledged"
        assert row["duration_ms"] > 0
        assert row["worker_id"] == "test-worker"


# -- 2. per-key order -----------------------------------------------------------


async def test_a_traced_publish_is_a_producer_span_whose_context_the_message_carries(
    database_url: str, conn: asyncpg.Connection, nats_url: str
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = {name: spec.telemetry for name, spec in registry.channels().items()}
    base = f"outbox-test.{unique()}"
    async with jetstream(nats_url) as (_, js), stream(js, f"{base}.>") as name:
        await add_broker_endpoint(conn, "orders", "nats", nats_url, target=base + ".{key}", **QUICK)
        async with conn.transaction():
            mid = await outbox.enqueue(conn, "orders", {}, key="k", traceparent=TRACEPARENT)
        async with running_worker(database_url, tracer=OtelTracer(provider, telemetry)):
            await until(lambda: none_left(conn))
        [got] = await read_stream(js, name, f"{base}.>")
    [span] = exporter.get_finished_spans()
    assert span.kind is SpanKind.PRODUCER
    assert span.name == "publish orders"
    assert span.parent is not None
    assert span.parent.span_id == int(TRACEPARENT[36:52], 16)
    own = span.context
    assert got.headers is not None
    assert got.headers["traceparent"] == f"00-{own.trace_id:032x}-{own.span_id:016x}-01"
    assert f"{own.trace_id:032x}" == TRACEPARENT[3:35]
    attributes = dict(span.attributes or {})
    assert attributes["messaging.system"] == "nats"
    assert attributes["messaging.destination.template"] == base + ".{key}"
    assert attributes["messaging.message.id"] == str(mid)
    assert attributes["outbox.outcome"] == "delivered"
    assert attributes["server.port"] == port_of(nats_url)
    provider.shutdown()


async def test_an_ordered_endpoint_keeps_each_keys_order_through_a_lost_connection(
    database_url: str, conn: asyncpg.Connection, nats_url: str
) -> None:
    """Six keys interleaved, PubAcks held back 0.15 s (so each key always has a
    message in flight) and the connection cut once mid-run: the retried ones
    still come before their keys' next."""
    base = f"outbox-test.{unique()}"
    keys = [f"acct-{k}" for k in range(6)]
    plan = [(key, n) for n in range(6) for key in keys]
    with Proxy(port_of(nats_url), delay=0.15) as proxy:
        async with jetstream(nats_url) as (_, js), stream(js, f"{base}.>") as name:
            await add_broker_endpoint(
                conn, "ordered", "nats", proxy.url(), target=base + ".{key}", ordered=True,
                max_attempts=100, **{**QUICK, "timeout": 1.0},
            )  # fmt: skip
            ids = await enqueue(
                conn,
                [{"endpoint": "ordered", "key": k, "payload": {"key": k, "n": n}} for k, n in plan],
            )
            async with running_worker(database_url):
                await until(lambda: _stored(js, name, at_least=len(plan) // 3), within=20)
                proxy.cut()
                await until(lambda: none_left(conn), within=40)
            received = await read_stream(js, name, f"{base}.>")
    by_key: dict[str, list[int]] = defaultdict(list)
    for msg in received:  # in the stream's order
        body = json.loads(msg.data)
        assert msg.subject == f"{base}.{body['key']}"
        by_key[body["key"]].append(body["n"])
    assert by_key == {key: list(range(6)) for key in keys}
    assert len(received) == len(ids)  # and once each
    retried = await conn.fetchval("SELECT count(*) FROM outbox.attempts WHERE outcome = 'retrying'")
    assert retried >= 1  # the cut did catch messages in flight
    assert proxy.connections >= 2  # ...and the worker reconnected
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0


async def _stored(js: JetStreamContext, name: str, at_least: int) -> bool:
    return bool((await js.stream_info(name)).state.messages >= at_least)


# -- 3. the fleet-wide rate limit -----------------------------------------------


async def rate_run(
    database_url: str,
    conn: asyncpg.Connection,
    nats_url: str,
    workers: list[WorkerProcess],
    log_dir: Path,
    *,
    rate: float,
    total: int,
    warm: bool,
) -> list[float]:
    """Three worker processes deliver ``total`` messages to an endpoint limited to
    ``rate``/s (burst 1); the times a consumer of the stream received them.
    ``warm``: each process has delivered to the server (and so loaded the NATS
    client) before the measured messages are enqueued."""
    base = f"outbox-test.{unique()}"
    arrived: list[float] = []

    async def receive(_: Msg) -> None:
        arrived.append(time.monotonic())

    async with (
        jetstream(nats_url) as (_, js),
        stream(js, f"{base}.limited.>") as name,
        stream(js, f"{base}.warm"),
    ):
        await add_broker_endpoint(
            conn, "limited", "nats", nats_url, target=base + ".limited.{payload.i}",
            rate_limit=rate, rate_burst=1, **QUICK,
        )  # fmt: skip
        await add_broker_endpoint(conn, "warm-up", "nats", nats_url, target=base + ".warm", **QUICK)
        workers.extend(start_worker(database_url, log_dir) for _ in range(3))
        await wait_started(*workers)
        if warm:
            await _warm_up(conn, workers)
        sub = await js.subscribe(
            f"{base}.limited.>", stream=name, cb=receive, ordered_consumer=True
        )
        await enqueue(conn, [{"endpoint": "limited", "payload": {"i": i}} for i in range(total)])
        await until(lambda: none_left(conn), within=30)
        await until(lambda: len(arrived) >= total, within=10)
        await sub.unsubscribe()
        stop_all(workers)
        assert (await js.stream_info(name)).state.messages == total
    assert len(arrived) == total
    claimers = await conn.fetchval(
        "SELECT count(DISTINCT worker_id) FROM outbox.attempts WHERE endpoint = 'limited'"
    )
    # The limit held across processes: at least two took part (one holds at
    # most 15 of the 40, its concurrency and half as many claimed ahead);
    # whether the third got any is a race the first two may win.
    assert claimers >= 2
    return sorted(arrived)


async def _warm_up(conn: asyncpg.Connection, workers: list[WorkerProcess]) -> None:
    """Messages to another endpoint until every process has delivered one."""
    for _ in range(50):
        await enqueue(conn, [{"endpoint": "warm-up", "payload": {}} for _ in range(12)])
        await until(lambda: none_left(conn), within=10)
        warm = await conn.fetchval("SELECT count(DISTINCT worker_id) FROM outbox.attempts")
        if warm == len(workers):
            return
    raise AssertionError("a worker process never took a warm-up message")


class RateExceededError(AssertionError):
    """More messages within some time than the rate limit lets through."""


def assert_rate(arrived: list[float], rate: float, burst: int = 1) -> None:
    # In any second, at most the rate and the burst (one more for the jitter of
    # the consumer's clock: each arrival a few ms after its send).
    busiest = max(sum(1 for t in arrived[i:] if t < start + 1.0) for i, start in enumerate(arrived))
    if busiest > rate + burst + 1:
        raise RateExceededError(f"{busiest} in one second at {rate:g}/s: gaps {_gaps(arrived)}")
    # All of them took the time the rate says...
    span = arrived[-1] - arrived[0]
    if span < (len(arrived) - burst) / rate - 0.1:
        raise RateExceededError(
            f"{len(arrived)} in {span:.2f}s at {rate:g}/s: gaps {_gaps(arrived)}"
        )
    # ...and not much more (a rate, not a stall).
    assert span <= (len(arrived) - 1) / rate * 1.5 + 0.5, span


def _gaps(times: list[float]) -> list[float]:
    return [round(b - a, 3) for a, b in itertools.pairwise(times)]


@pytest.mark.e2e
async def test_the_rate_limit_holds_across_three_worker_processes(
    database_url: str,
    conn: asyncpg.Connection,
    nats_url: str,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    rate = 20.0
    arrived = await rate_run(
        database_url, conn, nats_url, workers, tmp_path, rate=rate, total=40, warm=True
    )
    assert_rate(arrived, rate)


@pytest.mark.e2e
async def test_the_rate_limit_holds_from_the_first_message_of_each_process(
    database_url: str,
    conn: asyncpg.Connection,
    nats_url: str,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    rate = 50.0
    arrived = await rate_run(
        database_url, conn, nats_url, workers, tmp_path, rate=rate, total=100, warm=False
    )
    assert_rate(arrived, rate)


# -- 4. permanent failures: dead-lettered, saying why ----------------------------


async def test_what_the_broker_will_never_take_is_dead_lettered_with_its_reason(
    database_url: str, conn: asyncpg.Connection, nats_url: str, tmp_path: Path
) -> None:
    base = f"outbox-test.{unique()}"
    users = {
        "admin": "admin-pw",
        "app": ("app-pw", {"publish": {"allow": ["allowed.>"]},
                           "subscribe": {"allow": ["_INBOX.>"]}}),
    }  # fmt: skip
    with NatsServer(tmp_path / "private", max_payload=1024, users=users) as private:
        async with (
            jetstream(nats_url) as (_, js),
            stream(js, f"{base}.small.>", max_msg_size=256) as small,
            stream(js, f"{base}.ok.>") as shared_ok,
            jetstream(private.url("admin", "admin-pw")) as (_, pjs),
            stream(pjs, "allowed.>", "forbidden.>", "big.>") as private_stream,
        ):
            app = private.url("app", "app-pw")
            for name, url, target, extra in [
                ("nowhere", nats_url, f"{base}.nowhere.{{key}}", {}),
                ("small", nats_url, f"{base}.small.{{key}}", {}),
                ("fine", nats_url, f"{base}.ok.{{key}}", {}),
                ("big", private.url("admin", "admin-pw"), "big.{key}", {}),
                ("forbidden", app, "forbidden.{key}", {}),
                ("allowed", app, "allowed.{key}", {}),
            ]:
                await add_broker_endpoint(conn, name, "nats", url, target=target, **extra, **QUICK)
            ids = dict(
                zip(
                    ["nowhere", "small", "fine", "big", "forbidden", "allowed"],
                    await enqueue(
                        conn,
                        [
                            {"endpoint": "nowhere", "key": "k", "payload": {"x": 1}},
                            {"endpoint": "small", "key": "k", "payload": {"x": "y" * 600}},
                            {"endpoint": "fine", "key": "k", "payload": {"x": "y" * 100}},
                            {"endpoint": "big", "key": "k", "payload": {"x": "y" * 2000}},
                            {"endpoint": "forbidden", "key": "k", "payload": {"x": 1}},
                            {"endpoint": "allowed", "key": "k", "payload": {"x": 1}},
                        ],
                    ),
                    strict=True,
                )
            )
            async with running_worker(database_url):
                await until(lambda: none_left(conn), within=30)
            assert (await js.stream_info(small)).state.messages == 0
            assert (await js.stream_info(shared_ok)).state.messages == 1
            [stored] = await read_stream(pjs, private_stream, ">")
            assert stored.subject == "allowed.k"  # the one that may go, and only it
    dead = await dead_letters(conn)
    assert set(dead) == {"nowhere", "small", "big", "forbidden"}
    expected = {
        "nowhere": "no JetStream stream captures the subject",
        "small": "JetStream refused the message",
        "big": "the payload is over the server's max_payload",
        "forbidden": "permission denied",
    }
    for endpoint, words in expected.items():
        row = dead[endpoint]
        assert row["message_id"] == ids[endpoint]
        assert row["attempts"] == 1, endpoint  # permanent: not retried
        assert words in row["reason"], (endpoint, row["reason"])
        assert words in row["last_error"], (endpoint, row["last_error"])
    assert "maximum" in dead["small"]["reason"].lower()  # the stream's max_msg_size
    # The server's own words (nats-py hands them on in lower case).
    assert 'permissions violation for publish to "forbidden.k"' in dead["forbidden"]["reason"]
    outcomes = dict(await conn.fetch("SELECT endpoint, outcome FROM outbox.attempts"))
    assert outcomes == {
        **dict.fromkeys(["nowhere", "small", "big", "forbidden"], "dead"),
        "fine": "delivered",
        "allowed": "delivered",
    }
    # Permanent failures say nothing against the endpoint's health.
    failures = await conn.fetchval("SELECT max(consecutive_failures) FROM outbox.endpoint_state")
    assert failures == 0


# -- 5. wrong credentials: the endpoint pauses, the message stays -----------------


async def add_user_secret_endpoint(
    conn: asyncpg.Connection, name: str, url: str, secret: str, **settings: Any
) -> None:
    """A NATS endpoint whose --secret is the password of the URL's user.

    Written to the table directly: the database takes it, but `outbox
    endpoint add` refuses a URL with a user and no password today (its URL
    check says "a token goes in --secret", not knowing a --secret is given).
    """
    await add_endpoint(
        conn, name, url, channel="nats", secret=secret, timeout_ms=2000,
        connect_timeout_ms=2000, breaker_failures=1000, **settings,
    )  # fmt: skip


@pytest.mark.parametrize("auth", ["password in the URL", "password in --secret", "token"])
async def test_wrong_credentials_pause_the_endpoint_and_keep_the_message(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path, auth: str
) -> None:
    right, wrong = f"right-{unique()}", f"wrong-{unique()}"
    token = auth == "token"
    server = NatsServer(
        tmp_path / "nats", **({"token": right} if token else {"users": {"app": right}})
    )
    with server:
        admin = {"token": right} if token else {}
        own = server.url() if token else server.url("app", right)
        async with jetstream(own, **admin) as (_, js), stream(js, "orders.>") as name:
            if auth == "password in --secret":
                await add_user_secret_endpoint(
                    conn, "orders", server.url("app"), wrong, target="orders.{key}"
                )
            elif auth == "token":
                await add_broker_endpoint(
                    conn, "orders", "nats", server.url(), target="orders.{key}", secret=wrong,
                    **QUICK,
                )  # fmt: skip
            else:
                await add_broker_endpoint(
                    conn, "orders", "nats", server.url("app", wrong), target="orders.{key}",
                    **QUICK,
                )  # fmt: skip
            ids = await enqueue(
                conn,
                [{"endpoint": "orders", "key": f"k{i}", "payload": {"i": i}} for i in range(2)],
            )
            config = dataclasses.replace(FAST, endpoint_refresh=0.2)
            async with running_worker(database_url, config):
                await until(lambda: _paused(conn, "orders"), within=15)
                tries = await conn.fetchval("SELECT count(*) FROM outbox.attempts")
                await asyncio.sleep(0.5)
                # Paused: nothing more is tried, nothing is lost.
                assert await conn.fetchval("SELECT count(*) FROM outbox.attempts") == tries
                assert tries <= 2
                endpoint = await conn.fetchrow(
                    "SELECT paused_at, paused_reason FROM outbox.endpoints"
                )
                assert endpoint["paused_at"] is not None
                assert "refused the credentials" in endpoint["paused_reason"]
                assert "Authorization Violation" in endpoint["paused_reason"]
                left = await conn.fetch("SELECT id FROM outbox.messages")
                assert {r["id"] for r in left} == set(ids)
                assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0
                ledger = await conn.fetch("SELECT outcome, error, reason FROM outbox.attempts")
                assert all(r["outcome"] == "retrying" for r in ledger)
                assert all(wrong not in str(dict(r)) for r in ledger)
                # Fixed, and (once the workers have the new settings) resumed: delivered.
                fix = (
                    {"url": server.url("app", right)}
                    if auth == "password in the URL"
                    else {"secret": right}
                )
                await operate.update_endpoint(conn, "orders", EndpointUpdate.model_validate(fix))
                # Workers reload endpoints every endpoint_refresh (0.2 s here, 5 s by
                # default): resumed sooner, one retries with the old credentials
                # and the endpoint pauses again.
                await asyncio.sleep(0.5)
                await operate.resume_endpoint(conn, "orders")
                await until(lambda: none_left(conn), within=15)
            received = await read_stream(js, name, "orders.>")
    assert {m.headers["Nats-Msg-Id"] for m in received if m.headers} == {str(i) for i in ids}


async def test_credentials_revoked_while_connected_pause_the_endpoint_too(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """The password changes on the server (a reload) while the worker is
    connected: the server drops the connection, and the reconnect is refused."""
    before, after = f"before-{unique()}", f"after-{unique()}"
    with NatsServer(tmp_path / "nats", users={"app": before, "admin": "admin-pw"}) as server:
        async with (
            jetstream(server.url("admin", "admin-pw")) as (_, js),
            stream(js, "orders.>") as name,
        ):
            await add_broker_endpoint(
                conn, "orders", "nats", server.url("app", before), target="orders.{key}", **QUICK
            )
            [first] = await enqueue(conn, [{"endpoint": "orders", "key": "a", "payload": {}}])
            async with running_worker(database_url):
                await until(lambda: none_left(conn))
                server.reconfigure(users={"app": after, "admin": "admin-pw"})
                [second] = await enqueue(conn, [{"endpoint": "orders", "key": "b", "payload": {}}])
                await until(lambda: _paused(conn, "orders"), within=15)
                await asyncio.sleep(0.3)
                assert await conn.fetchval("SELECT id FROM outbox.messages") == second
            [stored] = await read_stream(js, name, "orders.>")
    assert stored.headers is not None
    assert stored.headers["Nats-Msg-Id"] == str(first)
    reason = await conn.fetchval("SELECT paused_reason FROM outbox.endpoints")
    assert "refused the credentials" in reason
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0
    ledger = await conn.fetch(
        "SELECT outcome FROM outbox.attempts WHERE message_id = $1 ORDER BY id", second
    )
    assert [r["outcome"] for r in ledger][-1] == "retrying"  # kept, not dead


async def _paused(conn: asyncpg.Connection, name: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT paused_at IS NOT NULL FROM outbox.endpoints WHERE name = $1", name
        )
    )


# -- 6. the broker restarted mid-run ----------------------------------------------


async def test_a_broker_restart_mid_run_loses_nothing(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    total = 45
    with NatsServer(tmp_path / "nats") as server:
        url = server.url()
        async with jetstream(url) as (_, js):
            await js.add_stream(name="ORDERS", subjects=["orders.>"], storage="file")
        await add_broker_endpoint(
            conn, "orders", "nats", url, target="orders.{payload.i}", rate_limit=30.0,
            max_attempts=100, **{**QUICK, "timeout": 1.0, "connect_timeout": 1.0},
        )  # fmt: skip
        ids = await enqueue(
            conn, [{"endpoint": "orders", "payload": {"i": i}} for i in range(total)]
        )
        async with running_worker(database_url):

            async def delivered() -> int:
                left = await conn.fetchval("SELECT count(*) FROM outbox.messages")
                return int(total - left)

            await until(lambda: _at_least(delivered, 10), within=20)
            server.stop(signal.SIGTERM)
            down_at = await delivered()
            await asyncio.sleep(1.5)  # attempts fail meanwhile
            server.start()  # same port, same store
            await until(lambda: none_left(conn), within=40)
        async with jetstream(url) as (_, js):
            received = await read_stream(js, "ORDERS", "orders.>")
            await js.delete_stream("ORDERS")
    assert down_at < total  # it really went down mid-run
    seen = Counter(m.headers["Nats-Msg-Id"] for m in received if m.headers)
    assert set(seen) == {str(i) for i in ids}  # none lost
    assert max(seen.values()) == 1  # the retries of stored ones were dropped as duplicates
    failed = await conn.fetchval("SELECT count(*) FROM outbox.attempts WHERE outcome = 'retrying'")
    assert failed >= 1  # the outage was felt
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count() >= n)


# -- 7. a worker killed mid-run ---------------------------------------------------


@pytest.mark.e2e
async def test_a_worker_killed_mid_run_loses_nothing_and_the_duplicates_are_dropped(
    database_url: str,
    conn: asyncpg.Connection,
    nats_url: str,
    workers: list[WorkerProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PubAcks held back 0.3 s, so the killed worker has published messages
    (stored) that it never learned were: the survivor publishes them again
    once their leases run out, and JetStream's duplicate window drops them."""
    total = 60
    base = f"outbox-test.{unique()}"
    published: Counter[str] = Counter()  # every publish on the subject, duplicates too

    async def count(msg: Msg) -> None:
        if msg.headers:
            published[msg.headers["Nats-Msg-Id"]] += 1

    monkeypatch.setenv("OUTBOX_REAP_INTERVAL", "0.2")
    with Proxy(port_of(nats_url), delay=0.3) as proxy:
        async with (
            jetstream(nats_url) as (nc, js),
            stream(js, f"{base}.>", duplicate_window=120.0) as name,
        ):
            core = await nc.subscribe(f"{base}.>", cb=count)
            await add_broker_endpoint(
                conn, "orders", "nats", proxy.url(), target=base + ".{payload.i}",
                max_attempts=100, **{**QUICK, "timeout": 1.5},
            )  # fmt: skip
            first, second = (
                start_worker(database_url, tmp_path, "--concurrency", "5", "--lease-seconds", "2")
                for _ in range(2)
            )
            workers.extend([first, second])
            await wait_started(first, second)
            ids = await enqueue(
                conn, [{"endpoint": "orders", "payload": {"i": i}} for i in range(total)]
            )
            await until(lambda: len(published) >= 15, within=20)
            first.signal(signal.SIGKILL)
            assert first.wait(10) == -signal.SIGKILL
            await until(lambda: none_left(conn), within=40)
            stop_all([second])
            await nc.flush()
            await core.unsubscribe()
            info = await js.stream_info(name)
            received = await read_stream(js, name, f"{base}.>")
    seen = Counter(m.headers["Nats-Msg-Id"] for m in received if m.headers)
    assert set(seen) == {str(i) for i in ids}  # none lost
    assert info.state.messages == len(received) == len(seen) == total  # none twice
    republished = sum(n - 1 for n in published.values())
    assert republished >= 1, published  # duplicates were sent, and the stream dropped them
    reaped = await conn.fetchval(
        "SELECT count(*) FROM outbox.attempts WHERE outcome = 'lease_expired'"
    )
    assert reaped >= 1  # the killed worker's messages were taken over
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0


# -- 8. no credential anywhere ----------------------------------------------------


class DebugWorker(WorkerProcess):
    """``outbox worker`` logging at DEBUG (every line a library writes, too)."""

    def __init__(self, url: str, log_dir: Path) -> None:
        self.log = log_dir / f"worker-{time.monotonic_ns()}.log"
        with self.log.open("wb") as out:
            self.proc = spawn_worker(
                url, "--poll-interval", "0.1", log_level="DEBUG",
                env={**FAST_RETRIES, "OUTBOX_LOG_LEVEL": "DEBUG"}, output=out,
            )  # fmt: skip


@pytest.mark.e2e
async def test_no_password_or_token_appears_in_the_ledger_the_listing_or_the_logs(
    database_url: str,
    conn: asyncpg.Connection,
    tmp_path: Path,
    workers: list[WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secrets = {
        "in_url": f"pw-url-{unique()}",
        "in_secret": f"pw-secret-{unique()}",
        "wrong_secret": f"pw-wrong-{unique()}",
        "token": f"tok-{unique()}",
        "wrong_token": f"tok-wrong-{unique()}",
        "unreachable": f"pw-down-{unique()}",
    }
    rights = {"publish": {"allow": ["ok.>"]}, "subscribe": {"allow": ["_INBOX.>"]}}
    users = {
        "admin": "admin-pw",
        "urluser": (secrets["in_url"], rights),
        "secretuser": (secrets["in_secret"], rights),
    }
    with (
        NatsServer(tmp_path / "users", users=users) as server,
        NatsServer(tmp_path / "token", token=secrets["token"]) as tokens,
    ):
        in_url = server.url("urluser", secrets["in_url"])
        endpoints = [
            ("url-ok", in_url, "ok.s.{key}", None),
            ("url-forbidden", in_url, "no.{key}", None),
            ("secret-ok", server.url("secretuser"), "ok.s.{key}", secrets["in_secret"]),
            ("secret-nostream", server.url("secretuser"), "ok.none.{key}", secrets["in_secret"]),
            ("secret-wrong", server.url("secretuser"), "ok.s.{key}", secrets["wrong_secret"]),
            ("token-ok", tokens.url(), "ok.s.{key}", secrets["token"]),
            ("token-wrong", tokens.url(), "ok.s.{key}", secrets["wrong_token"]),
            ("down", f"nats://urluser:{secrets['unreachable']}@127.0.0.1:{free_port()}",
             "ok.s.{key}", None),
        ]  # fmt: skip
        async with (
            jetstream(server.url("admin", "admin-pw")) as (_, js),
            jetstream(tokens.url(), token=secrets["token"]) as (_, tjs),
            stream(js, "ok.s.>", "no.>") as users_stream,
            stream(tjs, "ok.s.>") as token_stream,
        ):
            for name, url, target, secret in endpoints:
                if name.startswith("secret-"):  # a user in the URL, its password in --secret
                    await add_user_secret_endpoint(
                        conn, name, url, secret or "", target=target, max_attempts=2
                    )
                    continue
                await add_broker_endpoint(
                    conn, name, "nats", url, target=target, secret=secret, max_attempts=2,
                    **{**QUICK, "connect_timeout": 0.5},
                )  # fmt: skip
            await enqueue(
                conn, [{"endpoint": e[0], "key": "k", "payload": {"e": e[0]}} for e in endpoints]
            )
            worker = DebugWorker(database_url, tmp_path)
            workers.append(worker)

            async def settled() -> bool:
                left = await conn.fetch("SELECT endpoint FROM outbox.messages")
                return {r["endpoint"] for r in left} == {"secret-wrong", "token-wrong"} and all(
                    [await _paused(conn, "secret-wrong"), await _paused(conn, "token-wrong")]
                )

            await until(settled, within=40)
            stop_all(workers)
            assert (await js.stream_info(users_stream)).state.messages == 2
            assert (await tjs.stream_info(token_stream)).state.messages == 1

    places = {"worker log": worker.output()}
    for table in ("attempts", "dead_letters", "messages", "endpoint_state", "endpoint_health"):
        rows = await conn.fetch(f"SELECT * FROM outbox.{table}")
        places[table] = json.dumps([dict(r) for r in rows], default=str)
    places["endpoints' states"] = json.dumps(
        [
            dict(r)
            for r in await conn.fetch("SELECT paused_reason, disabled_reason FROM outbox.endpoints")
        ]
    )
    monkeypatch.setenv("OUTBOX_DATABASE_URL", database_url)
    for args in (["endpoint", "list", "--json"], ["endpoint", "list"]):
        result = await asyncio.to_thread(CliRunner().invoke, main, args)
        assert result.exit_code == 0, result.output
        places[" ".join(args)] = result.output
    places["list_endpoints"] = json.dumps([i.to_json() for i in await operate.list_endpoints(conn)])
    for (place, text), (which, secret) in itertools.product(places.items(), secrets.items()):
        assert secret not in text, f"the {which} credential is in {place}"
    # ...and there was something to look at: every kind of failure was recorded.
    dead = await dead_letters(conn)
    assert set(dead) == {"url-forbidden", "secret-nostream", "down"}
    assert "permission denied" in dead["url-forbidden"]["reason"]
    assert "no JetStream stream" in dead["secret-nostream"]["reason"]
    assert "connect" in dead["down"]["reason"]
    reasons = await conn.fetch(
        "SELECT paused_reason FROM outbox.endpoints WHERE paused_at IS NOT NULL"
    )
    assert len(reasons) == 2
    assert all("refused the credentials" in r["paused_reason"] for r in reasons)
    listed = {row["name"]: row for row in json.loads(places["endpoint list --json"])}
    assert listed["url-ok"]["url"] == f"nats://urluser:***@127.0.0.1:{server.port}"
    log = places["worker log"]
    assert '"level": "debug"' in log  # the worker logged everything it had to say
    assert "refused the credentials" in log
    assert "permission denied" in log


async def test_list_endpoints_holds_no_password_of_a_url(conn: asyncpg.Connection) -> None:
    password = f"pw-{unique()}"
    url = f"nats://app:{password}@127.0.0.1:4222"
    await add_broker_endpoint(conn, "orders", "nats", url, target="orders.{key}")
    [info] = await operate.list_endpoints(conn)
    assert password not in json.dumps(info.to_json())  # what is shown: masked
    assert password not in repr(info)
