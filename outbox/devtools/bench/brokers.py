"""`outbox bench nats|amqp|redis|mqtt`: deliveries through a broker channel,
acknowledgements and ledger included, against a bare client of the same
library publishing to the same broker in the same round.

Each round has two sides (in alternating order), and each gets what its
broker needs afresh, removed afterwards: nats, a JetStream stream (server
defaults: file storage) for the round's subjects; amqp, a durable topic
exchange and a durable queue bound to it; redis, a stream key of its own;
mqtt, nothing (QoS 1 is acknowledged with or without subscribers). The
broker must then hold every message (not asked for mqtt).

The worker side: one ``outbox worker`` process (``--concurrency``, 100 by
default) empties a pre-inserted backlog of N messages with 100 distinct keys
(the target's ``{key}``), timed from the ledger as ``outbox bench http``
does. The bare side publishes N messages like them (subjects, bodies,
headers), acknowledged alike, as many in flight, connected and warmed up
before its clock starts: nats-py ``js.publish`` awaited (a PubAck); aiormq
``basic_publish`` persistent and mandatory on a channel in confirm mode
(a basic.ack); redis-py XADDs pipelined on one connection, ``concurrency``
per pipeline; aiomqtt ``publish`` at QoS 1, MQTT 5 (a PUBACK).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from outbox import operate
from outbox._redact import redact_url
from outbox.db.connect import connect
from outbox.deliver.channels.mqtt import INFLIGHT  # QoS 1 messages awaiting a PUBACK, at most
from outbox.devtools.bench.common import Figure, drain_rate, ensure_endpoint, fill_backlog
from outbox.devtools.processes import spawn_worker
from outbox.errors import ConfigurationError

NAMES = ("nats", "amqp", "redis", "mqtt")
URLS = {"nats": "nats://127.0.0.1:4222", "amqp": "amqp://guest:guest@127.0.0.1:5672/",
        "redis": "redis://127.0.0.1:6379/0", "mqtt": "mqtt://127.0.0.1:1883"}  # fmt: skip
SCHEMES = {"nats": "nats", "tls": "nats", "amqp": "amqp", "amqps": "amqp", "redis": "redis",
           "rediss": "redis", "mqtt": "mqtt", "mqtts": "mqtt"}  # fmt: skip
KEYS = 100  # distinct message keys, so 100 subjects (routing keys, topics)
SETUP = {  # what each side publishes to, for the report
    "nats": "a JetStream stream of its own (server defaults: file storage), 100 subjects",
    "amqp": "a durable topic exchange and a durable queue bound to it, 100 routing keys",
    "redis": "a stream key of its own, no MAXLEN",
    "mqtt": "100 topics, no subscribers",
}
WARM_UP = 200  # messages the bare client publishes before its clock starts


def broker_for(url: str) -> str:
    """The broker a URL is for, by its scheme (``tls://`` is NATS)."""
    name = SCHEMES.get(urlsplit(url).scheme)
    if name is None:
        raise ValueError(f"{redact_url(url)}: not a nats, amqp, redis or mqtt URL")
    return name


def key_of(i: int) -> str:
    return f"k{i % KEYS}"


@dataclass(frozen=True, slots=True)
class Out:
    """One message as the bare client publishes it: what the channel would send."""

    id: str
    key: str
    body: bytes
    headers: dict[str, str]  # outbox-id and outbox-key, as the channels send them


def bare_messages(n: int) -> list[Out]:
    """``n`` messages like those of the backlog, bodies as the database writes them."""
    ids = [str(uuid.uuid4()) for _ in range(n)]
    return [Out(id_, key_of(i), json.dumps({"i": i}).encode(),
                {"outbox-id": id_, "outbox-key": key_of(i)}) for i, id_ in enumerate(ids)]  # fmt: skip


@dataclass
class Place:
    """Where one side publishes: the target, other endpoint settings, what arrived."""

    target: str  # a template of {key}
    settings: dict[str, Any] = field(default_factory=dict)
    count: Callable[[], Awaitable[int]] | None = None  # None: the broker keeps nothing
    version: str | None = None  # the broker's, as it says

    def render(self, out: Out) -> str:
        return self.target.replace("{key}", out.key)


async def _spread(
    publish: Callable[[Out], Awaitable[None]], outs: list[Out], concurrency: int
) -> float:
    """Messages/s of ``concurrency`` loops awaiting one publish at a time, after `WARM_UP`."""
    for out in outs[:WARM_UP]:
        await publish(out)
    queue = iter(outs[WARM_UP:])

    async def loop() -> None:
        for out in queue:
            await publish(out)

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return (len(outs) - WARM_UP) / (time.perf_counter() - start)


@contextlib.asynccontextmanager
async def nats_place(url: str, token: str) -> AsyncIterator[Place]:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    stream = f"OUTBOX_BENCH_{token}"
    await js.add_stream(name=stream, subjects=[f"bench.{token}.>"])

    async def count() -> int:
        return int((await js.stream_info(stream)).state.messages)

    v = nc.connected_server_version
    version = f"nats-server {v.major}.{v.minor}.{v.patch}"
    try:
        yield Place(f"bench.{token}.{{key}}", count=count, version=version)
    finally:
        await js.delete_stream(stream)
        await nc.close()


async def nats_bare(url: str, place: Place, outs: list[Out], concurrency: int) -> float:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()

    async def publish(out: Out) -> None:
        headers = {**out.headers, "Nats-Msg-Id": out.id, "Content-Type": "application/json"}
        await js.publish(place.render(out), out.body, headers=headers)

    try:
        return await _spread(publish, outs, concurrency)
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def amqp_place(url: str, token: str) -> AsyncIterator[Place]:
    import aiormq

    connection = await aiormq.connect(url)
    channel = await connection.channel()
    exchange, queue = f"outbox-bench-{token}", f"outbox-bench-{token}"
    await channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    await channel.queue_declare(queue, durable=True)
    await channel.queue_bind(queue, exchange, routing_key=f"bench.{token}.#")

    async def count() -> int:
        declared = await channel.queue_declare(queue, passive=True)
        return int(declared.message_count or 0)

    version = connection.server_properties.get("version")
    version = f"RabbitMQ {version.decode() if isinstance(version, bytes) else version}"
    try:
        yield Place(f"bench.{token}.{{key}}", {"exchange": exchange}, count, version)
    finally:
        await channel.queue_delete(queue)
        await channel.exchange_delete(exchange)
        await connection.close()


async def amqp_bare(url: str, place: Place, outs: list[Out], concurrency: int) -> float:
    import aiormq
    from pamqp import commands

    connection = await aiormq.connect(url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = place.settings["exchange"]

    async def publish(out: Out) -> None:
        properties = aiormq.spec.Basic.Properties(delivery_mode=2, message_id=out.id,
                                                  content_type="application/json",
                                                  headers=dict(out.headers))  # fmt: skip
        confirm = await channel.basic_publish(out.body, exchange=exchange, mandatory=True,
                                              routing_key=place.render(out),
                                              properties=properties)  # fmt: skip
        if not isinstance(confirm, commands.Basic.Ack):
            raise RuntimeError(f"no basic.ack from the broker: {confirm!r}")

    try:
        return await _spread(publish, outs, concurrency)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def redis_place(url: str, token: str) -> AsyncIterator[Place]:
    import redis.asyncio as redis

    client = redis.Redis.from_url(url, single_connection_client=True)
    key = f"outbox-bench:{token}"

    async def count() -> int:
        return int(await client.xlen(key))

    try:
        version = f"Redis {(await client.info('server')).get('redis_version')}"
        yield Place(key, count=count, version=version)
    finally:
        await client.delete(key)
        await client.aclose()


async def redis_bare(url: str, place: Place, outs: list[Out], concurrency: int) -> float:
    import redis.asyncio as redis

    client = redis.Redis.from_url(url, single_connection_client=True)

    async def pipelined(outs: list[Out]) -> None:
        for start in range(0, len(outs), concurrency):  # `concurrency` XADDs per pipeline
            pipe = client.pipeline(transaction=False)
            for out in outs[start : start + concurrency]:
                pipe.execute_command("XADD", place.render(out), "*", "id", out.id,
                                     "payload", out.body, "key", out.key)  # fmt: skip
            await pipe.execute(raise_on_error=True)

    try:
        await pipelined(outs[:WARM_UP])
        began = time.perf_counter()
        await pipelined(outs[WARM_UP:])
        return (len(outs) - WARM_UP) / (time.perf_counter() - began)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def mqtt_place(url: str, token: str) -> AsyncIterator[Place]:
    yield Place(f"bench/{token}/{{key}}")


async def mqtt_bare(url: str, place: Place, outs: list[Out], concurrency: int) -> float:
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    parts = urlsplit(url)
    client = aiomqtt.Client(parts.hostname or "127.0.0.1", parts.port or 1883,
                            username=parts.username, password=parts.password,
                            identifier=f"outbox-bench-{secrets.token_hex(4)}",
                            protocol=aiomqtt.ProtocolVersion.V5,
                            max_inflight_messages=INFLIGHT)  # fmt: skip
    client.pending_calls_threshold = INFLIGHT  # else a warning per publish past 10 in flight

    async def publish(out: Out) -> None:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ContentType = "application/json"
        properties.UserProperty = list(out.headers.items())
        await client.publish(place.render(out), out.body, qos=1, properties=properties)

    async with client:
        return await _spread(publish, outs, concurrency)


@dataclass(frozen=True)
class Broker:
    place: Callable[[str, str], contextlib.AbstractAsyncContextManager[Place]]
    bare: Callable[[str, Place, list[Out], int], Awaitable[float]]
    library: str  # the bare client's, in its figure's name
    module: str  # what it installs (the channel's extra of the same name as the broker)
    unit: str  # what the bare client counts


BROKERS = {
    "nats": Broker(nats_place, nats_bare, "nats_py", "nats", "acknowledged publishes/s"),
    "amqp": Broker(amqp_place, amqp_bare, "aiormq", "aiormq", "confirmed publishes/s"),
    "redis": Broker(redis_place, redis_bare, "redis_py", "redis", "XADDs/s"),
    "mqtt": Broker(mqtt_place, mqtt_bare, "aiomqtt", "aiomqtt", "acknowledged publishes/s"),
}


def _require(name: str) -> None:
    try:
        importlib.import_module(BROKERS[name].module)
    except ImportError:
        module = BROKERS[name].module
        raise ConfigurationError(f"outbox bench {name} needs the {module!r} package: "
                                 f"pip install 'outbox[{name}]'") from None  # fmt: skip


async def _arrived(place: Place, expected: int, side: str) -> None:
    held = expected if place.count is None else await place.count()
    if held != expected:
        raise RuntimeError(f"{side}: the broker holds {held} messages, not {expected}")


async def _check_ledger(conn: Any, endpoint: str, since: Any, n: int) -> None:
    """Every attempt delivered (the endpoint has --max-attempts 1: a failure is dead at once)."""
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE outcome = 'delivered') AS delivered,"
        "       min(error) FILTER (WHERE outcome <> 'delivered') AS error"
        "  FROM outbox.attempts WHERE endpoint = $1 AND started_at >= $2",
        endpoint,
        since,
    )
    if row["delivered"] != n:
        raise RuntimeError(f"{row['delivered']} of {n} delivered; an error: {row['error']}")


async def worker_rate(db: str, name: str, url: str, n: int, concurrency: int) -> float:
    """One worker process delivering ``n`` messages to the broker, from the ledger."""
    endpoint = f"bench-{name}"
    conn = await connect(db)
    try:
        async with BROKERS[name].place(url, secrets.token_hex(4)) as place:
            await ensure_endpoint(conn, endpoint, name, url=url, breaker_failures=1_000_000,
                                  max_attempts=1, target=place.target,
                                  **place.settings)  # fmt: skip
            await operate.resume_endpoint(conn, endpoint)  # in case an earlier run paused it
            await fill_backlog(conn, endpoint, n, key=key_of)
            await conn.execute("CHECKPOINT")  # as drain does: no backlog writes in the drain
            since = await conn.fetchval("SELECT clock_timestamp()")
            proc = spawn_worker(db, "--concurrency", str(concurrency), "--poll-interval", "0.05")
            try:
                rate = await drain_rate(conn, endpoint, n, since)
            finally:
                proc.terminate()
                proc.wait(30)
            await _check_ledger(conn, endpoint, since, n)
            await _arrived(place, n, "worker")
        return rate
    finally:
        await conn.close()


async def _bare_side(name: str, url: str, n: int, concurrency: int) -> tuple[float, str | None]:
    async with BROKERS[name].place(url, secrets.token_hex(4)) as place:
        rate = await BROKERS[name].bare(url, place, bare_messages(WARM_UP + n), concurrency)
        await _arrived(place, WARM_UP + n, "bare client")
    return rate, place.version


async def run(
    db: str,
    name: str,
    *,
    url: str | None = None,
    messages: int = 20_000,
    concurrency: int = 100,
    rounds: int = 3,
    progress: Any = None,
) -> dict[str, Any]:
    """The ``name`` scenario (nats, amqp, redis or mqtt) against the broker at ``url``."""
    _require(name)
    url = url or URLS[name]
    ours = Figure(f"{name}_worker", "deliveries/s")
    bare = Figure(f"{name}_bare_{BROKERS[name].library}", BROKERS[name].unit)
    version = None
    for i in range(rounds):  # the worker first, then the bare client first, and so on
        for side in (ours, bare) if i % 2 == 0 else (bare, ours):
            if side is ours:
                ours.rounds.append(await worker_rate(db, name, url, messages, concurrency))
            else:
                rate, version = await _bare_side(name, url, messages, concurrency)
                bare.rounds.append(rate)
            if progress:
                progress(side.name, side.rounds[-1])
    return {
        "scenario": name,
        "broker_url": redact_url(url),
        "broker_version": version,
        "setup": SETUP[name],
        "messages": messages,
        "concurrency": concurrency,
        "worker": ours.name,
        "bare": bare.name,
        ours.name: ours.to_json(),
        bare.name: bare.to_json(),
        "ratio_to_ceiling": ours.median / bare.median,
        "ratio_by_round": [o / b for o, b in zip(ours.rounds, bare.rounds, strict=True)],
    }
