"""The ``redis`` channel against real Redis servers, and what a real consumer
of the streams (XRANGE) sees.

The shared server (``redis_url``) takes the plain deliveries, under keys of
each test's own that it deletes afterwards; private ones (`redis_server`)
the ACL users, limits, persistence, kills and restarts the shared one must
not be given.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import re
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from click.testing import CliRunner
from conftest import add_broker_endpoint
from redis_server import Proxy, RedisServer, free_port
from support import FAST, FAST_RETRIES, WorkerProcess, running_worker, until

import outbox
from outbox import operate
from outbox.cli import main
from outbox.devtools.processes import spawn_worker
from outbox.operate.config import set_config
from outbox.operate.endpoint_config import EndpointUpdate
from outbox.operate.replay import resend
from outbox.operate.subscriptions import add_subscription

# A broker's behaviour, not the database's: CI runs these in its first pass only.
pytestmark = pytest.mark.single_pass

# Short waits, quick retries, and a circuit breaker that stays out of the way.
QUICK: dict[str, Any] = {
    "timeout": 2.0,
    "connect_timeout": 2.0,
    "breaker_failures": 1000,
    "breaker_cooldown": timedelta(milliseconds=200),
    "breaker_max_cooldown": timedelta(seconds=1),
}
PATIENT: dict[str, Any] = {**QUICK, "max_attempts": 1000}
# Passwords of the private servers' users; "@" and "/" show up percent-encoded in a URL.
APP_PASSWORD = "Hunter2@redis/7f3a9c"
APP_PASSWORD_IN_URL = "Hunter2%40redis%2F7f3a9c"
READER_PASSWORD = "reader-pw-51d2e0"
WRONG_PASSWORD = "Wrong-pw-e8b0c4"
USERS = {
    "app": f"on >{APP_PASSWORD} ~ok:* +@all",  # may write keys under ok: only
    "reader": f"on >{READER_PASSWORD} ~* +@read +@connection",  # may not XADD at all
}

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def unique() -> str:
    return uuid.uuid4().hex[:12]


@dataclasses.dataclass(frozen=True)
class Entry:
    """One stream entry as a consumer reads it."""

    stream: str
    entry_id: str  # <milliseconds>-<sequence>, the server's clock at the XADD
    fields: dict[str, bytes]

    @property
    def outbox_id(self) -> str:
        return self.fields["id"].decode()

    @property
    def millis(self) -> int:
        return int(self.entry_id.split("-")[0])


async def read(client: aioredis.Redis, stream: str) -> list[Entry]:
    """Every entry of ``stream``, in its order."""
    return [
        Entry(stream, entry_id.decode(), {k.decode(): v for k, v in fields.items()})
        for entry_id, fields in await client.xrange(stream)
    ]


@dataclasses.dataclass(frozen=True)
class Shared:
    """The shared server, and the prefix of this test's keys there."""

    url: str
    client: aioredis.Redis
    prefix: str


@pytest.fixture
async def shared(redis_url: str) -> AsyncIterator[Shared]:
    client = aioredis.Redis.from_url(redis_url, client_name="outbox-test-consumer")
    prefix = f"outbox-test:{unique()}:"
    try:
        yield Shared(redis_url, client, prefix)
    finally:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def start_worker(url: str, log_dir: Path, *args: str) -> WorkerProcess:
    return WorkerProcess(url, "--concurrency", "10", *args, log_dir=log_dir)


async def wait_started(*processes: WorkerProcess, within: float = 20.0) -> None:
    await until(lambda: all(" started (concurrency" in w.output() for w in processes), within)


def stop_all(processes: list[WorkerProcess]) -> None:
    for w in processes:
        if w.proc.poll() is None:
            w.signal(signal.SIGTERM)
    for w in processes:
        code = w.wait(30)
        assert code in (0, -signal.SIGKILL), w.output()


async def warm_up(conn: asyncpg.Connection, endpoint: str, processes: int) -> list[str]:
    """Messages to ``endpoint`` until each of the worker processes has delivered
    one (its first send loads the Redis client and connects); their ids."""
    sent: list[str] = []
    for _ in range(50):
        sent += await enqueue(conn, [{"endpoint": endpoint, "payload": {}} for _ in range(12)])
        await until(lambda: none_left(conn), within=10)
        delivered = await conn.fetchval(
            "SELECT count(DISTINCT worker_id) FROM outbox.attempts"
            " WHERE endpoint = $1 AND outcome = 'delivered'",
            endpoint,
        )
        if delivered == processes:
            return sent
    raise AssertionError("a worker process never took a warm-up message")


async def enqueue(conn: asyncpg.Connection, messages: list[dict[str, Any]]) -> list[str]:
    async with conn.transaction():
        return [str(i) for i in await outbox.enqueue_many(conn, messages)]


async def none_left(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval("SELECT count(*) FROM outbox.messages") == 0


async def as_stored(conn: asyncpg.Connection, payload: Any) -> bytes:
    """A payload's JSON text as PostgreSQL keeps it (jsonb): what goes out."""
    text: str = await conn.fetchval("SELECT $1::jsonb::text", json.dumps(payload))
    return text.encode()


async def outcomes(conn: asyncpg.Connection, endpoint: str | None = None) -> Counter[str]:
    rows = await conn.fetch(
        "SELECT outcome FROM outbox.attempts WHERE endpoint = $1 OR $1 IS NULL", endpoint
    )
    return Counter(r["outcome"] for r in rows)


async def dead_letters(conn: asyncpg.Connection) -> dict[str, asyncpg.Record]:
    return {str(r["message_id"]): r for r in await conn.fetch("SELECT * FROM outbox.dead_letters")}


async def paused(conn: asyncpg.Connection, name: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT paused_at IS NOT NULL FROM outbox.endpoints WHERE name = $1", name
        )
    )


async def connections_of(admin: aioredis.Redis, user: str) -> list[dict[str, Any]]:
    """The server's clients logged in as ``user`` (CLIENT LIST)."""
    return [c for c in await admin.client_list() if c.get("user") == user]


# -- 1. delivery, with the server's reply ----------------------------------------


async def test_an_entry_goes_to_the_stream_the_target_names_with_its_fields(
    database_url: str, conn: asyncpg.Connection, shared: Shared
) -> None:
    p = shared.prefix
    await add_broker_endpoint(conn, "orders", "redis", shared.url,
                              target=p + "orders:{payload.region}:{key}", **QUICK)  # fmt: skip
    await add_broker_endpoint(conn, "by-id", "redis", shared.url, target=p + "by-id:{id}", **QUICK)
    payload = {"order": 17, "region": "eu", "note": "café ✓", "lines": [1, 2.5], "deep": {"a": 1}}
    async with conn.transaction():
        keyed = await outbox.enqueue(
            conn, "orders", payload, key="customer-9", headers={"x-trace": "t-1", "x-n": "ü"},
            traceparent=TRACEPARENT,
        )  # fmt: skip
        keyless = await outbox.enqueue(conn, "by-id", {"n": 1})
    async with running_worker(database_url):
        await until(lambda: none_left(conn))
    streams = sorted([k.decode() async for k in shared.client.scan_iter(match=p + "*")])
    assert streams == [f"{p}by-id:{keyless}", f"{p}orders:eu:customer-9"]  # nothing else
    [first] = await read(shared.client, f"{p}orders:eu:customer-9")
    [second] = await read(shared.client, f"{p}by-id:{keyless}")
    # The fields: the id, the payload's JSON as stored, the key, the message's own headers.
    assert sorted(first.fields) == ["headers", "id", "key", "payload"]
    assert first.fields["id"] == str(keyed).encode()
    assert first.fields["payload"] == await as_stored(conn, payload)
    assert json.loads(first.fields["payload"]) == payload
    assert first.fields["key"] == b"customer-9"
    assert json.loads(first.fields["headers"]) == {
        "x-trace": "t-1",
        "x-n": "ü",
        "traceparent": TRACEPARENT,  # the producer's trace context, onward
    }
    # No key, no headers: no such fields (not empty ones).
    assert second.fields == {"id": str(keyless).encode(), "payload": b'{"n": 1}'}
    ledger = await conn.fetch("SELECT * FROM outbox.attempts ORDER BY id")
    assert {r["message_id"] for r in ledger} == {keyed, keyless}
    for row in ledger:
        assert (row["outcome"], row["attempt"], row["error"]) == ("delivered", 1, None)
        assert row["reason"] == "acknowledged"
        assert row["duration_ms"] > 0
        assert row["worker_id"] == "test-worker"


async def test_a_published_event_reaches_the_stream_with_its_topic_and_a_resend_says_so(
    database_url: str, conn: asyncpg.Connection, shared: Shared
) -> None:
    p = shared.prefix
    await add_broker_endpoint(conn, "events", "redis", shared.url,
                              target=p + "events:{payload.region}", **QUICK)  # fmt: skip
    await add_subscription(conn, "events", "order.*")
    async with conn.transaction():
        (made,) = await outbox.publish(conn, "order.created", {"region": "eu", "n": 1})
    async with running_worker(database_url):
        await until(lambda: none_left(conn))
        assert await resend(conn, made) == made
        await until(lambda: none_left(conn))
    first, again = await read(shared.client, f"{p}events:eu")
    assert first.outbox_id == again.outbox_id == str(made)
    assert json.loads(first.fields["headers"]) == {"outbox-topic": "order.created"}
    assert json.loads(again.fields["headers"]) == {
        "outbox-topic": "order.created",
        "outbox-replay": "1",
    }


async def test_max_len_trims_the_stream_to_about_that_many_entries(
    database_url: str, conn: asyncpg.Connection, shared: Shared
) -> None:
    """``MAXLEN ~ N`` keeps at least N entries, and lets whole nodes of the
    stream go (100 entries a node, the server's default): with 300 XADDs and
    N = 20, between 20 and 119 are left. Without it, all 300."""
    p, total, max_len = shared.prefix, 300, 20
    await add_broker_endpoint(conn, "trimmed", "redis", shared.url, target=p + "trimmed",
                              max_len=max_len, **QUICK)  # fmt: skip
    await add_broker_endpoint(conn, "whole", "redis", shared.url, target=p + "whole", **QUICK)
    await enqueue(
        conn,
        [{"endpoint": e, "payload": {"i": i}} for e in ("trimmed", "whole") for i in range(total)],
    )
    async with running_worker(database_url):
        await until(lambda: none_left(conn))
    trimmed = await shared.client.xinfo_stream(p + "trimmed")
    whole = await shared.client.xinfo_stream(p + "whole")
    assert whole["length"] == whole["entries-added"] == total
    assert trimmed["entries-added"] == total  # every XADD went in...
    assert max_len <= trimmed["length"] < max_len + 100, trimmed  # ...and the oldest went out
    assert (await outcomes(conn))["delivered"] == 2 * total


# -- 2. per-key order ----------------------------------------------------------------


async def test_an_ordered_endpoint_keeps_each_keys_order_through_lost_connections(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """Six keys interleaved on one stream, the server's replies held back
    0.1 s (so each key always has an XADD in flight) and the connection cut
    twice mid-run: in the stream, every entry of a key's message n (retries
    included) comes before any of its message n + 1."""
    keys = [f"acct-{k}" for k in range(6)]
    plan = [(key, n) for n in range(8) for key in keys]
    with RedisServer(tmp_path / "redis") as server, Proxy(server.port, delay=0.1) as proxy:
        await add_broker_endpoint(conn, "ordered", "redis", proxy.url(), target="ok:orders",
                                  ordered=True, **{**PATIENT, "timeout": 1.0})  # fmt: skip
        await enqueue(
            conn,
            [{"endpoint": "ordered", "key": k, "payload": {"key": k, "n": n}} for k, n in plan],
        )
        async with server.admin() as admin, running_worker(database_url):
            for share in (3, 2):
                await until(lambda s=share: _length(admin, "ok:orders", len(plan) // s), 20)
                proxy.cut()
            await until(lambda: none_left(conn), within=40)
            received = await read(admin, "ok:orders")
    by_key: dict[str, list[int]] = defaultdict(list)
    for entry in received:  # in the stream's order
        body = json.loads(entry.fields["payload"])
        assert entry.fields["key"] == body["key"].encode()
        by_key[body["key"]].append(body["n"])
    for key in keys:
        assert by_key[key] == sorted(by_key[key]), (key, by_key[key])  # in order...
        assert sorted(set(by_key[key])) == list(range(8)), key  # ...and every one
    duplicates = len(received) - len(plan)
    retried = (await outcomes(conn))["retrying"]
    print(f"ordered: {len(plan)} messages, {retried} retried, {duplicates} duplicate(s)")
    assert retried >= 1  # the cuts did catch XADDs in flight
    assert proxy.connections >= 3  # ...and the worker reconnected after each
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0


async def _length(client: aioredis.Redis, stream: str, at_least: int) -> bool:
    return bool(await client.xlen(stream) >= at_least)


# -- 3. the fleet-wide rate limit ------------------------------------------------------


def assert_rate(millis: list[int], rate: float, burst: int = 1) -> None:
    """Entry ids are the server's clock (ms) at each XADD."""
    times = sorted(m / 1000 for m in millis)
    # In any second, at most the rate and the burst (one more for the jitter
    # of a send a millisecond late after one on time).
    busiest = max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    assert busiest <= rate + burst + 1, (busiest, gaps)
    # All of them took the time the rate says, and not much more (a rate, not a stall).
    span = times[-1] - times[0]
    assert span >= (len(times) - burst) / rate - 0.1, (span, gaps)
    assert span <= (len(times) - 1) / rate * 1.5 + 0.5, (span, gaps)


@pytest.mark.e2e
async def test_the_rate_limit_holds_across_three_worker_processes(
    database_url: str, conn: asyncpg.Connection, shared: Shared,
    workers: list[WorkerProcess], tmp_path: Path,
) -> None:  # fmt: skip
    """Three processes, 40 messages to an endpoint limited to 20/s (burst 1):
    the stream's entry ids (the server's clock) show 20/s at most, and the
    whole taking the ~2 s the rate says. Each process has delivered once
    before (the warm-up endpoint: its first send loads the Redis client)."""
    rate, total = 20.0, 40
    p = shared.prefix
    await add_broker_endpoint(conn, "limited", "redis", shared.url, target=p + "limited",
                              rate_limit=rate, rate_burst=1, **QUICK)  # fmt: skip
    await add_broker_endpoint(conn, "warm-up", "redis", shared.url, target=p + "warm", **QUICK)
    workers.extend(start_worker(database_url, tmp_path) for _ in range(3))
    await wait_started(*workers)
    await warm_up(conn, "warm-up", 3)
    ids = await enqueue(conn, [{"endpoint": "limited", "payload": {"i": i}} for i in range(total)])
    await until(lambda: none_left(conn), within=30)
    stop_all(workers)
    entries = await read(shared.client, p + "limited")
    assert sorted(e.outbox_id for e in entries) == sorted(ids)  # each once
    assert_rate([e.millis for e in entries], rate)
    claimers = await conn.fetchval(
        "SELECT count(DISTINCT worker_id) FROM outbox.attempts WHERE endpoint = 'limited'"
    )
    # The limit held across processes: at least two took part (one holds at
    # most 15 of the 40, its concurrency and half as many claimed ahead);
    # whether the third got any is a race the first two may win.
    assert claimers >= 2


# -- 4. what the server will never take: dead-lettered, saying why ---------------------


async def test_what_the_server_will_never_take_is_dead_lettered_with_its_reason(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """A key that holds a string (WRONGTYPE), a key outside the user's ACL key
    patterns (NOPERM), a payload over the server's proto-max-bulk-len: each
    dead at its first attempt with its reason; the message beside them is
    delivered, and the worker's one connection stays up throughout (the big
    one was never sent: the server drops a client that sends it, and every
    XADD pipelined with it)."""
    await set_config(conn, max_payload_bytes=4 * 1024 * 1024)  # outbox itself takes it
    config = {"proto-max-bulk-len": "1mb"}
    huge = {"stream": "ok:big", "blob": "x" * (1 << 20)}  # just over 1 MiB as JSON
    with RedisServer(tmp_path / "redis", users=USERS, config=config) as server:
        async with server.admin() as admin:
            await admin.set("ok:string", "not a stream")
            await add_broker_endpoint(conn, "app", "redis", server.url("app"), secret=APP_PASSWORD,
                                      target="{payload.stream}", **QUICK)  # fmt: skip
            ids = await enqueue(conn, [
                {"endpoint": "app", "payload": {"stream": "ok:string"}},
                {"endpoint": "app", "payload": {"stream": "denied:x"}},
                {"endpoint": "app", "payload": huge},
                {"endpoint": "app", "payload": {"stream": "ok:fine"}},
            ])  # fmt: skip
            wrongtype, denied, big, fine = ids
            async with running_worker(database_url):
                await until(lambda: none_left(conn))
                connected = await connections_of(admin, "app")
            fine_entries = await read(admin, "ok:fine")
            others = await admin.exists("denied:x", "ok:big")
            assert await admin.get("ok:string") == b"not a stream"  # untouched
            stats = await admin.info("stats")
    assert [e.outbox_id for e in fine_entries] == [fine]
    assert others == 0
    dead = await dead_letters(conn)
    assert sorted(dead) == sorted([wrongtype, denied, big])
    for row in dead.values():
        assert row["attempts"] == 1, (row["attempts"], row["reason"])
        assert row["reason"] == f"permanent failure: {row['last_error']}"
    assert dead[wrongtype]["last_error"] == (
        "Redis refused the XADD: WRONGTYPE Operation against a key holding the wrong kind of value"
    )
    assert dead[denied]["last_error"] == (
        "permission denied: this user has no permissions to access one of the keys used as"
        " arguments"
    )
    assert dead[big]["last_error"] == (
        f"the payload is {len(await as_stored(conn, huge))} bytes, over the Redis server's"
        " proto-max-bulk-len (1048576 bytes): it would not take"
        " the XADD"
    )
    # No refusal cost the connection: the worker connected once, and is still connected.
    assert len(connected) == 1, connected
    assert stats["total_connections_received"] == 3, stats  # start()'s PING, ours, the worker's
    assert await outcomes(conn) == {"dead": 3, "delivered": 1}


async def test_a_user_who_may_not_xadd_at_all_pauses_the_endpoint(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """NOPERM for the command (the ACL user has no +xadd) is no fault of the
    message: every one would fail the same. The endpoint is paused, saying
    so, its messages kept, until the rights are given and it is resumed."""
    with RedisServer(tmp_path / "redis", users=USERS) as server:
        await add_broker_endpoint(conn, "reader", "redis", server.url("reader"),
                                  secret=READER_PASSWORD, target="ok:read", **QUICK)  # fmt: skip
        ids = await enqueue(conn, [{"endpoint": "reader", "payload": {"n": n}} for n in range(3)])
        async with server.admin() as admin, running_worker(database_url):
            await until(lambda: paused(conn, "reader"), within=10)
            reason = await conn.fetchval("SELECT paused_reason FROM outbox.endpoints")
            assert (
                reason
                == "permission denied: this user has no permissions to run the 'xadd' command"
            )
            assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 3
            assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0
            await admin.acl_setuser("reader", enabled=True, commands=["+xadd"], keys=["~*"],
                                    reset=False)  # fmt: skip
            await operate.resume_endpoint(conn, "reader")
            await until(lambda: none_left(conn))
            entries = await read(admin, "ok:read")
    assert sorted(e.outbox_id for e in entries) == sorted(ids)
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0


async def test_what_the_server_cannot_take_now_is_retried_until_it_can(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """Out of memory (OOM), too few replicas (NOREPLICAS), snapshots failing
    (MISCONF), a replica (READONLY: a failover under way): the server's state,
    not the message's fault. Retried, not dead-lettered, and delivered once
    the server takes writes again."""
    config = {"enable-protected-configs": "yes"}  # CONFIG SET dir, for MISCONF
    with RedisServer(tmp_path / "redis", config=config) as server:
        async with server.admin() as admin:
            await add_broker_endpoint(conn, "flow", "redis", server.url(), target="ok:{payload.n}",
                                      **PATIENT)  # fmt: skip
            for state, refusal in [
                ({"maxmemory": "1"}, "OOM command not allowed"),
                ({"min-replicas-to-write": "1"}, "NOREPLICAS"),
                ("misconf", "MISCONF"),
                ("replica", "READONLY You can't write against a read only replica."),
            ]:
                restore = await _refuse_writes(admin, server, state)
                [message] = await enqueue(conn, [{"endpoint": "flow", "payload": {"n": unique()}}])
                async with running_worker(database_url):

                    async def refused_twice(m: str = message) -> bool:
                        rows = await conn.fetch(
                            "SELECT outcome FROM outbox.attempts WHERE message_id = $1", m
                        )
                        return len(rows) >= 2

                    await until(refused_twice, within=10)
                    await restore()
                    await until(lambda: none_left(conn))
                ledger = await conn.fetch(
                    "SELECT outcome, error FROM outbox.attempts WHERE message_id = $1"
                    " ORDER BY attempt", message
                )  # fmt: skip
                assert [r["outcome"] for r in ledger[:-1]] == ["retrying"] * (len(ledger) - 1)
                assert ledger[-1]["outcome"] == "delivered"
                assert refusal in ledger[0]["error"], (refusal, ledger[0]["error"])
                assert "Redis cannot take it now" in ledger[0]["error"]
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0


async def _refuse_writes(admin: aioredis.Redis, server: RedisServer, state: Any) -> Any:
    """Make the server refuse writes; what makes it take them again."""
    if state == "misconf":  # a snapshot that fails: writes are refused until one succeeds
        gone = server.directory / "snapshots"
        gone.mkdir()
        await admin.config_set("save", "3600 1")
        await admin.config_set("dir", str(gone))
        gone.rmdir()
        await admin.bgsave()
        await until(lambda: _bgsave_failed(admin), within=10)

        async def restore() -> None:
            gone.mkdir()
            await admin.config_set("dir", str(gone))  # its working directory again
            await admin.bgsave()
            await until(lambda: _bgsave_ok(admin), within=10)

        return restore
    if state == "replica":  # of a master that is not there: read-only all the same
        await admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))

        async def promote() -> None:
            await admin.execute_command("REPLICAOF", "NO", "ONE")

        return promote
    before = await admin.config_get(*state)
    await admin.config_set(*next(iter(state.items())))

    async def put_back() -> None:
        for name, value in before.items():
            await admin.config_set(name, value)

    return put_back


async def _bgsave_failed(admin: aioredis.Redis) -> bool:
    info = await admin.info("persistence")
    return not info["rdb_bgsave_in_progress"] and info["rdb_last_bgsave_status"] == "err"


async def _bgsave_ok(admin: aioredis.Redis) -> bool:
    info = await admin.info("persistence")
    return not info["rdb_bgsave_in_progress"] and info["rdb_last_bgsave_status"] == "ok"


async def test_no_reply_within_the_timeout_is_retried(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """The server holds every write back (CLIENT PAUSE WRITE, 1.5 s): the
    attempt fails after ``--timeout`` (0.5 s), not later, and is retried;
    the message goes once the server answers again."""
    with RedisServer(tmp_path / "redis") as server:
        async with server.admin() as admin:
            await add_broker_endpoint(conn, "slow", "redis", server.url(), target="ok:slow",
                                      **{**PATIENT, "timeout": 0.5})  # fmt: skip
            await admin.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
            [message] = await enqueue(conn, [{"endpoint": "slow", "payload": {"n": 1}}])
            async with running_worker(database_url):
                await until(lambda: none_left(conn))
            entries = await read(admin, "ok:slow")
    ledger = await conn.fetch("SELECT * FROM outbox.attempts ORDER BY attempt")
    assert ledger[-1]["outcome"] == "delivered"
    failed = ledger[:-1]
    assert failed, ledger  # it did wait for the pause
    for row in failed:
        assert row["outcome"] == "retrying"
        assert 450 <= row["duration_ms"] <= 900, row["duration_ms"]  # --timeout, and no longer
    assert failed[0]["error"] in (
        "no acknowledgement from the broker within 0.5s (--timeout)",
        "cannot reach Redis: TimeoutError: Timeout reading from 127.0.0.1:"  # the socket's
        f"{server.port}",
    ), failed[0]["error"]
    assert {e.outbox_id for e in entries} == {message}  # there (and each try at most once)
    assert len(entries) <= len(ledger)


# -- 5. wrong credentials: the endpoint paused, the message kept -----------------------


async def test_wrong_credentials_pause_the_endpoint_and_keep_the_messages(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """A wrong password (WRONGPASS), and none where the server wants one
    (NOAUTH): each endpoint paused, saying so, its messages kept, nothing
    written; the right password and a resume deliver them."""
    with RedisServer(tmp_path / "redis", users=USERS, default="off") as server:
        await add_broker_endpoint(conn, "wrong", "redis", server.url("app"), secret=WRONG_PASSWORD,
                                  target="ok:wrong", **QUICK)  # fmt: skip
        await add_broker_endpoint(conn, "none", "redis", server.url(), target="ok:none", **QUICK)
        ids = await enqueue(conn, [{"endpoint": e, "payload": {"n": n}}
                                   for e in ("wrong", "none") for n in range(3)])  # fmt: skip
        config = dataclasses.replace(FAST, endpoint_refresh=0.2)
        async with server.admin() as admin, running_worker(database_url, config):
            await until(lambda: paused(conn, "wrong"), within=10)
            await until(lambda: paused(conn, "none"), within=10)
            await asyncio.sleep(0.3)  # what was under way when they were paused is done
            tries = await conn.fetchval("SELECT count(*) FROM outbox.attempts")
            connections = (await admin.info("stats"))["total_connections_received"]
            await asyncio.sleep(0.5)
            # Paused: no more tries, nothing written, nothing dead, every message kept.
            assert await conn.fetchval("SELECT count(*) FROM outbox.attempts") == tries
            assert (await admin.info("stats"))["total_connections_received"] == connections
            # One try at logging in each (the others waited for it, and failed with it).
            assert connections <= 2 + 2, connections  # start()'s PING, ours, one per endpoint
            assert [e["count"] for e in await admin.acl_log()] == [1]  # app's wrong password
            reasons = dict(await conn.fetch("SELECT name, paused_reason FROM outbox.endpoints"))
            assert reasons["wrong"] == (
                "Redis refused the credentials: invalid username-password pair or user is disabled."
            )
            assert reasons["none"].startswith("Redis refused the credentials: ")
            assert "authenticated" in reasons["none"]  # NOAUTH, in the words of the server
            assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 6
            assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0
            assert await admin.exists("ok:wrong", "ok:none") == 0
            # The right password (and a user) and a resume: the kept messages go.
            await operate.update_endpoint(conn, "wrong", EndpointUpdate(secret=APP_PASSWORD))
            fixed = EndpointUpdate(url=server.url("app"), secret=APP_PASSWORD)
            await operate.update_endpoint(conn, "none", fixed)
            # Resumed at once: until the worker reloads the endpoints (every 0.2 s
            # here) it may try the old credentials again, which must not pause
            # the endpoint again.
            await operate.resume_endpoint(conn, "wrong")
            await operate.resume_endpoint(conn, "none")
            await until(lambda: none_left(conn), within=10)
            delivered = [e.outbox_id for k in ("ok:wrong", "ok:none") for e in await read(admin, k)]
    assert sorted(delivered) == sorted(ids)
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0


# -- 6. the server restarted mid-run -----------------------------------------------------


async def test_a_server_killed_and_restarted_mid_run_loses_nothing(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """A server with an append-only file fsynced at every write, SIGKILLed
    while messages flow and started again on the same port and directory:
    every message is in the stream after (at least once; the duplicates,
    XADDs it took but could not answer, counted)."""
    total = 60
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        await add_broker_endpoint(conn, "flow", "redis", server.url(), target="ok:flow",
                                  rate_limit=40.0, **{**PATIENT, "timeout": 1.0,
                                                      "connect_timeout": 1.0})  # fmt: skip
        ids = await enqueue(conn, [{"endpoint": "flow", "payload": {"i": i}} for i in range(total)])
        async with running_worker(database_url):
            async with server.admin() as admin:
                await until(lambda: _length(admin, "ok:flow", 15), within=20)
            server.stop(signal.SIGKILL)
            left_at_kill = await conn.fetchval("SELECT count(*) FROM outbox.messages")
            await asyncio.sleep(0.7)  # attempts fail meanwhile
            server.start()  # same port, same directory: it loads the append-only file
            await until(lambda: none_left(conn), within=40)
        async with server.admin() as admin:
            received = await read(admin, "ok:flow")
    assert left_at_kill > 0  # it really went down mid-run
    seen = Counter(e.outbox_id for e in received)
    assert set(seen) == set(ids)  # none lost
    duplicates = sum(seen.values()) - total
    failed = (await outcomes(conn))["retrying"]
    print(f"server restart: {total} messages, {failed} failed attempts, {duplicates} duplicate(s)")
    assert failed >= 1  # the outage was felt
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0


# -- 7. a worker killed mid-run ------------------------------------------------------------


@pytest.mark.e2e
async def test_a_worker_killed_mid_run_loses_nothing(
    database_url: str, conn: asyncpg.Connection, shared: Shared,
    workers: list[WorkerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Replies held back 0.2 s, so the worker SIGKILLed has XADDs the server
    took that it never heard of (or never recorded); the other worker takes
    over its messages once their leases (2 s) run out. Every message is in
    the stream; the duplicates (those XADDs, sent again) counted."""
    total = 60
    stream = shared.prefix + "flow"
    monkeypatch.setenv("OUTBOX_REAP_INTERVAL", "0.2")  # the workers' environment
    with Proxy(6379, delay=0.2) as proxy:
        await add_broker_endpoint(conn, "flow", "redis", proxy.url(), target=stream,
                                  **{**PATIENT, "timeout": 1.5})  # fmt: skip
        first, second = (
            start_worker(database_url, tmp_path, "--concurrency", n, "--lease-seconds", "2")
            for n in ("5", "10")
        )
        workers.extend([first, second])
        await wait_started(first, second)
        # Both connected (and loaded the Redis client) before the measured run.
        warm = await warm_up(conn, "flow", 2)
        ids = warm + await enqueue(
            conn, [{"endpoint": "flow", "payload": {"i": i}} for i in range(total)]
        )
        await until(lambda: _length(shared.client, stream, len(warm) + 15), within=20)
        first.signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
        [first_id] = re.findall(r"worker (\S+) started", first.output())
        held = await conn.fetchval(
            "SELECT count(*) FROM outbox.messages WHERE leased_by = $1", first_id
        )
        expired_before = (await outcomes(conn))["lease_expired"]
        await until(lambda: none_left(conn), within=40)
        stop_all([second])
    received = await read(shared.client, stream)
    seen = Counter(e.outbox_id for e in received)
    assert set(seen) == set(ids)  # none lost
    duplicates = sum(seen.values()) - len(ids)
    reaped = (await outcomes(conn))["lease_expired"]
    print(f"worker killed: {len(ids)} messages, {held} held at the kill, {reaped} leases expired,"
          f" {duplicates} duplicate(s)")  # fmt: skip
    assert held >= 1  # it died holding messages...
    assert expired_before == 0  # ...none of which had run out of lease before
    assert reaped >= held  # ...and the other took them over
    assert duplicates >= 1  # some of them already in the stream: sent again
    assert await conn.fetchval("SELECT count(DISTINCT worker_id) FROM outbox.attempts") == 2
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0


# -- 8. no credential anywhere ---------------------------------------------------------------


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
async def test_no_password_appears_in_the_ledger_the_listing_or_the_logs(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:  # fmt: skip
    """Passwords in URLs (percent-encoded) and in --secret, right and wrong,
    through deliveries, refusals, dead letters and a server that is not
    there: in no ledger row, endpoint listing or line of the worker's log."""
    secrets = [APP_PASSWORD, APP_PASSWORD_IN_URL, WRONG_PASSWORD, READER_PASSWORD]
    nobody = free_port()  # nothing listens there
    with RedisServer(tmp_path / "redis", users=USERS, default="off") as server:
        port = server.port
        await add_broker_endpoint(conn, "in-url", "redis",
                                  f"redis://app:{APP_PASSWORD_IN_URL}@127.0.0.1:{port}/0",
                                  target="{payload.stream}", **QUICK)  # fmt: skip
        await add_broker_endpoint(conn, "in-secret", "redis", server.url("app"),
                                  secret=APP_PASSWORD, target="{payload.stream}",
                                  **QUICK)  # fmt: skip
        await add_broker_endpoint(conn, "wrong", "redis",
                                  f"redis://app:{WRONG_PASSWORD}@127.0.0.1:{port}/0",
                                  target="ok:x", **QUICK)  # fmt: skip
        await add_broker_endpoint(conn, "down", "redis",
                                  f"redis://reader:{READER_PASSWORD}@127.0.0.1:{nobody}/0",
                                  target="ok:x", max_attempts=2, **QUICK)  # fmt: skip
        async with server.admin() as admin:
            await admin.set("ok:string", "x")
        streams = ["ok:a", "denied:b", "ok:string"]
        await enqueue(
            conn,
            [{"endpoint": e, "payload": {"stream": s}} for e in ("in-url", "in-secret")
             for s in streams]
            + [{"endpoint": "wrong", "payload": {}}, {"endpoint": "down", "payload": {}}],
        )  # fmt: skip
        workers.append(DebugWorker(database_url, tmp_path))

        async def settled() -> bool:
            left = await conn.fetch("SELECT endpoint FROM outbox.messages")
            return [r["endpoint"] for r in left] == ["wrong"]

        await until(settled, within=20)
        await until(lambda: paused(conn, "wrong"))
        stop_all(workers)

    attempts = await conn.fetch("SELECT * FROM outbox.attempts")
    dead = await conn.fetch("SELECT * FROM outbox.dead_letters")
    done = Counter((r["endpoint"], r["outcome"]) for r in attempts)
    # The failures that write text did happen: refusals, dead letters, no server.
    assert done[("in-url", "delivered")] == done[("in-secret", "delivered")] == 1
    assert done[("in-url", "dead")] == done[("in-secret", "dead")] == 2
    assert done[("down", "retrying")] == done[("down", "dead")] == 1
    assert any("cannot reach Redis" in (r["error"] or "") for r in attempts), attempts
    assert len(dead) == 5
    listed = [e.to_json() for e in await operate.list_endpoints(conn)]
    by_name = {e["name"]: e for e in listed}
    assert by_name["wrong"]["state"] == "paused"
    assert "refused the credentials" in by_name["wrong"]["state_reason"]
    assert by_name["in-url"]["url"] == f"redis://app:***@127.0.0.1:{port}/0"
    args = ["endpoint", "list", "--json", "--database-url", database_url]
    cli = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert cli.exit_code == 0, cli.output
    assert {e["name"] for e in json.loads(cli.output)} == set(by_name)
    logs = "".join(w.output() for w in workers)
    assert '"level": "debug"' in logs  # the worker logged everything it had to say
    assert "refused the credentials" in logs
    places = {
        "attempts": "\n".join(str(dict(r)) for r in attempts),
        "dead_letters": "\n".join(str(dict(r)) for r in dead),
        "list_endpoints": json.dumps(listed, default=str),
        "endpoint list --json": cli.output,
        "worker log": logs,
    }
    for place, text in places.items():
        for secret in secrets:
            assert secret not in text, (place, secret)


# -- one connection for every delivery in flight ----------------------------------------------


async def test_every_delivery_in_flight_shares_one_connection(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """400 messages, up to 100 in flight at a time: the server sees one
    connection of the worker's (CLIENT LIST while it delivers; its count of
    connections received after), which took every XADD, pipelined (many to
    each read of the socket)."""
    total = 400
    with RedisServer(tmp_path / "redis", users=USERS) as server:
        await add_broker_endpoint(conn, "app", "redis", server.url("app"), secret=APP_PASSWORD,
                                  target="ok:many", **QUICK)  # fmt: skip
        await enqueue(conn, [{"endpoint": "app", "payload": {"i": i}} for i in range(total)])
        config = dataclasses.replace(FAST, concurrency=100, batch_size=200)
        seen: list[list[int]] = []
        async with server.admin() as admin:
            await admin.ping()
            async with running_worker(database_url, config):
                while not await none_left(conn):
                    seen.append([c["id"] for c in await connections_of(admin, "app")])
                    await asyncio.sleep(0.005)
            length = await admin.xlen("ok:many")
            stats = await admin.info("stats")
            commands = await admin.info("commandstats")
    during = [s for s in seen if s]
    assert len(during) >= 3, seen  # looked several times while it delivered
    assert {len(s) for s in during} == {1}, during  # one connection at a time...
    assert len({i for s in during for i in s}) == 1, during  # ...the same one throughout
    assert stats["total_connections_received"] == 3, stats  # start()'s PING, ours, the worker's
    assert length == total
    assert commands["cmdstat_xadd"]["calls"] == total
    # Reads of a socket the server made, less ours (one a command: the CLIENT
    # LISTs and a few more) and start()'s PING: the worker's, far fewer than its XADDs.
    worker_reads = stats["total_reads_processed"] - len(seen) - 6
    assert worker_reads <= total // 4, (worker_reads, stats)
    assert (await outcomes(conn)) == {"delivered": total}
