"""The mqtt channel against real Mosquitto brokers and a real MQTT 5 subscriber.

The shared broker (mqtt://127.0.0.1:1883, anonymous) takes the deliveries;
private ones (`mqtt_server.MosquittoServer`) the users, ACLs, size limits and
restarts the shared one cannot be given. Every test publishes under topics
of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import signal
import uuid
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from click.testing import CliRunner
from conftest import add_broker_endpoint
from mqtt_server import MosquittoServer, Subscriber, free_port, publish
from support import FAST, WorkerProcess, running_worker, until

import outbox
from outbox import operate
from outbox.cli import main
from outbox.operate.endpoint_config import EndpointUpdate

# A broker's behaviour, not the database's: CI runs these in its first pass only.
pytestmark = pytest.mark.single_pass

# Quick retries, and a breaker that does not open in the middle of a test.
QUICK = {"timeout": 2.0, "connect_timeout": 2.0, "breaker_cooldown": timedelta(milliseconds=200),
         "breaker_max_cooldown": timedelta(seconds=1)}  # fmt: skip
PATIENT = {**QUICK, "max_attempts": 1000, "breaker_failures": 1_000_000}
# Passwords of the private brokers' users; "@" shows up percent-encoded in a URL.
APP_PASSWORD = "Hunter2@mqtt-7f3a9c"
APP_PASSWORD_IN_URL = "Hunter2%40mqtt-7f3a9c"
WATCHER_PASSWORD = "watcher-pw-51d2"
WRONG_PASSWORD = "Wrong-pw-e8b0c4"

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def unique(tag: str) -> str:
    """A topic prefix no other test (or run) publishes under."""
    return f"outbox-test/{tag}/{uuid.uuid4().hex[:10]}"


def stop_all(workers: list[WorkerProcess]) -> None:
    for w in workers:
        if w.proc.poll() is None:
            w.signal(signal.SIGTERM)
    for w in workers:
        code = w.wait(30)
        assert code in (0, -signal.SIGKILL), w.output()


async def enqueue_all(conn: asyncpg.Connection, messages: list[dict[str, Any]]) -> list[str]:
    async with conn.transaction():
        return [str(i) for i in await outbox.enqueue_many(conn, messages)]


async def none_left(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval("SELECT count(*) FROM outbox.messages") == 0


async def as_stored(conn: asyncpg.Connection, payload: Any) -> bytes:
    """A payload's JSON text as PostgreSQL keeps it (jsonb): what goes out."""
    text: str = await conn.fetchval("SELECT $1::jsonb::text", json.dumps(payload))
    return text.encode()


def private_broker(tmp_path: Path, name: str = "broker", **limits: Any) -> MosquittoServer:
    """A broker with two users: ``app`` may publish under ``out/ok/``, ``watcher``
    may read everything."""
    return MosquittoServer(
        tmp_path / name,
        users={"app": APP_PASSWORD, "watcher": WATCHER_PASSWORD},
        acl=["user app", "topic write out/ok/#", "", "user watcher", "topic read #"],
        **limits,
    )


# -- 1. delivery --------------------------------------------------------------


async def test_a_message_is_published_with_its_topic_payload_and_properties(
    database_url: str, conn: asyncpg.Connection, mqtt_url: str
) -> None:
    base = unique("deliver")
    await add_broker_endpoint(conn, "plain", "mqtt", mqtt_url, **QUICK,
                              target=base + "/plain/{key}/{payload.kind}")  # fmt: skip
    await add_broker_endpoint(conn, "kept", "mqtt", mqtt_url, **QUICK,
                              target=base + "/kept/{id}", retain=True)  # fmt: skip
    payload = {"kind": "order", "n": 1, "text": "grüße", "nested": {"a": [1, 2]}}
    plain_id, kept_id = await enqueue_all(conn, [
        {"endpoint": "plain", "key": "k-1", "payload": payload, "headers": {"trace": "t-1"},
         "traceparent": TRACEPARENT},
        {"endpoint": "kept", "payload": {"n": 2}},
    ])  # fmt: skip
    try:
        async with Subscriber(mqtt_url, base + "/#") as sub, running_worker(database_url):
            await until(lambda: none_left(conn))
            await until(lambda: len(sub.received) == 2, within=5)
        got = {r.outbox_id: r for r in sub.received}
        plain, kept = got[plain_id], got[kept_id]
        assert plain.topic == f"{base}/plain/k-1/order"
        assert plain.payload == await as_stored(conn, payload)
        assert json.loads(plain.payload) == payload
        assert plain.qos == 1
        assert plain.content_type == "application/json"
        assert plain.user_properties == [
            ("trace", "t-1"), ("traceparent", TRACEPARENT), ("outbox-id", plain_id),
            ("outbox-key", "k-1"),
        ]  # fmt: skip
        assert plain.retain is False  # off by default
        assert kept.topic == f"{base}/kept/{kept_id}"
        assert kept.payload == await as_stored(conn, {"n": 2})
        assert kept.user_properties == [("outbox-id", kept_id)]  # no key, no outbox-key
        assert kept.retain is True  # --retain

        # A subscriber that comes later gets the retained message, and only it:
        # the broker sends retained messages on subscribing, before the marker
        # published after it.
        async with Subscriber(mqtt_url, base + "/#") as late:
            await publish(mqtt_url, base + "/marker", b"end")
            await until(lambda: any(r.topic == base + "/marker" for r in late.received), 5)
        assert [(r.topic, r.retain, r.outbox_id) for r in late.received] == [
            (f"{base}/kept/{kept_id}", True, kept_id),
            (base + "/marker", False, None),
        ]
    finally:
        await publish(mqtt_url, f"{base}/kept/{kept_id}", b"", retain=True)  # clear it

    ledger = await conn.fetch("SELECT * FROM outbox.attempts ORDER BY id")
    assert sorted(str(r["message_id"]) for r in ledger) == sorted([plain_id, kept_id])
    for row in ledger:
        assert row["outcome"] == "delivered"
        assert row["attempt"] == 1
        assert row["duration_ms"] > 0
        assert row["reason"] == "acknowledged"
        assert row["error"] is None


# -- 2. order -----------------------------------------------------------------


async def test_messages_of_a_key_arrive_in_order_with_keys_interleaved(
    database_url: str, conn: asyncpg.Connection, mqtt_url: str
) -> None:
    base = unique("order")
    await add_broker_endpoint(conn, "ordered", "mqtt", mqtt_url, **QUICK, ordered=True,
                              target=base + "/{key}")  # fmt: skip
    keys = [f"account-{k}" for k in range(5)]
    per_key = 12
    plan = [(key, n) for n in range(per_key) for key in keys]  # interleaved
    async with Subscriber(mqtt_url, base + "/#") as sub:
        await enqueue_all(conn, [{"endpoint": "ordered", "key": key,
                                  "payload": {"key": key, "n": n}} for key, n in plan])  # fmt: skip
        async with running_worker(database_url):
            await until(lambda: none_left(conn))
            await until(lambda: len(sub.received) >= len(plan), within=5)
    arrivals: dict[str, list[int]] = defaultdict(list)
    for r in sub.received:
        body = json.loads(r.payload)
        assert r.topic == f"{base}/{body['key']}"
        arrivals[body["key"]].append(body["n"])
    assert sorted(arrivals) == keys
    for key in keys:
        assert arrivals[key] == list(range(per_key)), key
    # ...and the keys did go out interleaved, not one key after another.
    first_key_done = max(i for i, r in enumerate(sub.received) if json.loads(r.payload)["key"]
                         == keys[0])  # fmt: skip
    assert first_key_done > per_key


async def test_order_holds_while_the_broker_restarts(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """Failed sends mid-stream: a key's next message waits for the retries of
    the one before it, so every try of message n arrives before any of n+1."""
    keys = [f"account-{k}" for k in range(4)]
    per_key = 10
    plan = [(key, n) for n in range(per_key) for key in keys]
    with MosquittoServer(tmp_path / "broker") as broker:
        await add_broker_endpoint(conn, "ordered", "mqtt", broker.url(), **PATIENT, ordered=True,
                                  rate_limit=20.0, target="orders/{key}")  # fmt: skip
        async with Subscriber(broker.url(), "orders/#", persistent=True) as sub:
            messages = [{"endpoint": "ordered", "key": key, "payload": {"key": key, "n": n}}
                        for key, n in plan]  # fmt: skip
            await enqueue_all(conn, messages)
            async with running_worker(database_url):
                await until(lambda: len(sub.received) >= 8, within=10)
                broker.stop()
                await asyncio.sleep(0.5)
                broker.start()
                await until(lambda: none_left(conn), within=20)
                await until(lambda: len({r.outbox_id for r in sub.received}) == len(plan), 10)
    arrivals: dict[str, list[int]] = defaultdict(list)
    for r in sub.received:
        body = json.loads(r.payload)
        arrivals[body["key"]].append(body["n"])
    for key in keys:
        assert arrivals[key] == sorted(arrivals[key]), (key, arrivals[key])
        assert sorted(set(arrivals[key])) == list(range(per_key)), key
    retried = await conn.fetchval("SELECT count(*) FROM outbox.attempts WHERE outcome = 'retrying'")
    assert retried >= 1  # sends did fail mid-stream


# -- 3. the fleet's rate ------------------------------------------------------


@pytest.mark.e2e
async def test_the_rate_limit_holds_across_three_worker_processes(
    database_url: str, conn: asyncpg.Connection, mqtt_url: str,
    workers: list[WorkerProcess], tmp_path: Path,
) -> None:  # fmt: skip
    """20/s, burst 1, for the fleet: measured on the subscriber's clock."""
    base = unique("rate")
    rate, total = 20.0, 60
    await add_broker_endpoint(conn, "limited", "mqtt", mqtt_url, **QUICK, rate_limit=rate,
                              rate_burst=1, target=base + "/{payload.phase}/{id}")  # fmt: skip
    async with Subscriber(mqtt_url, base + "/#") as sub:
        for _ in range(3):
            workers.append(WorkerProcess(database_url, "--concurrency", "10", log_dir=tmp_path))
        await until(lambda: all(" started (" in w.output() for w in workers), within=20)
        # A warm-up, at the same rate, until every process has its connection
        # open (a first send waits for it, and lands late, close to the next one).
        warmed = warm = 0
        while warmed < 3 and warm < 150:
            await enqueue_all(conn, [{"endpoint": "limited", "payload": {"phase": "warm"}}
                                     for _ in range(30)])  # fmt: skip
            warm += 30
            await until(lambda: none_left(conn), within=30)
            warmed = await conn.fetchval("SELECT count(DISTINCT worker_id) FROM outbox.attempts")
        assert warmed == 3  # every process took part
        ids = await enqueue_all(conn, [{"endpoint": "limited", "payload": {"phase": "run"}}
                                       for _ in range(total)])  # fmt: skip
        await until(lambda: none_left(conn), within=30)
        await until(lambda: len(sub.received) >= warm + total, within=5)
        stop_all(workers)
    run = [r for r in sub.received if r.topic.startswith(base + "/run/")]
    assert sorted(r.outbox_id for r in run) == sorted(ids)  # each once
    arrivals = sorted(r.arrived for r in run)
    # In any 2 s window: at most the rate and its burst of one (+5%),
    window = 2.0
    busiest = max(
        sum(1 for t in arrivals[i:] if t < start + window) for i, start in enumerate(arrivals)
    )
    assert busiest <= (rate * window + 1) * 1.05, busiest
    # ...and the limit is a rate, not a stall: the fleet kept close to it,
    assert busiest >= rate * window * 0.85, busiest
    # ...evenly spaced, not in bursts.
    assert arrivals[-1] - arrivals[0] >= (total - 1) / rate * 0.95, arrivals[-1] - arrivals[0]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert sum(1 for g in gaps if g < 0.5 / rate) <= 3, sorted(gaps)[:10]
    # All three claimed all along (each had sent in the warm-up); which of them
    # gets the slots coming free is a race, so two at least sent these.
    senders = await conn.fetchval(
        "SELECT count(DISTINCT worker_id) FROM outbox.attempts WHERE message_id = ANY($1::uuid[])",
        ids,
    )
    assert senders >= 2


# -- 4. permanent failures ----------------------------------------------------


async def test_what_the_broker_cannot_take_is_dead_lettered_saying_why(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """A topic with a wildcard (from the payload), one the ACL denies (PUBACK
    0x87), a packet over the broker's Maximum Packet Size: dead at the first
    attempt, each with its reason, on a connection that stays up; the message
    beside them is delivered."""
    with private_broker(tmp_path, max_packet_size=2048) as broker:
        await add_broker_endpoint(conn, "app", "mqtt", broker.url("app"), **QUICK,
                                  secret=APP_PASSWORD, target="out/{payload.zone}")  # fmt: skip
        async with Subscriber(broker.url(), "#", user="watcher",
                              password=WATCHER_PASSWORD) as watcher:  # fmt: skip
            ids = await enqueue_all(conn, [{"endpoint": "app", "payload": p} for p in [
                {"zone": "a/+"},
                {"zone": "#"},
                {"zone": "forbidden/x"},
                {"zone": "ok/big", "blob": "x" * 5000},
                {"zone": "ok/fine"},
            ]])  # fmt: skip
            plus, hash_, denied, big, fine = ids
            async with running_worker(database_url):
                await until(lambda: none_left(conn))
                await until(lambda: len(watcher.received) >= 1, within=5)
                await asyncio.sleep(0.2)  # anything else would have come by now
        log = broker.log_text()
    assert [(r.topic, r.outbox_id) for r in watcher.received] == [("out/ok/fine", fine)]
    dead = {str(r["message_id"]): r for r in await conn.fetch("SELECT * FROM outbox.dead_letters")}
    assert sorted(dead) == sorted([plus, hash_, denied, big])
    why = {message: row["last_error"] for message, row in dead.items()}
    for row in dead.values():
        assert row["attempts"] == 1
        assert row["reason"] == "permanent failure: " + row["last_error"]
    assert why[plus] == (
        "the topic 'out/a/+' is not one a message can be published to (not empty, "
        "no wildcards + or #)"
    )
    assert why[hash_].startswith("the topic 'out/#' is not one a message can be published to")
    assert why[denied] == "the broker refused the message: Not authorized (reason code 0x87)"
    assert "Denied PUBLISH from" in log  # Mosquitto's own word for it
    assert "'out/forbidden/x'" in log
    assert re.fullmatch(
        r"the message is over the broker's maximum packet size: a 5\d\d\d-byte packet, "
        r"the broker takes at most 2048 bytes",
        why[big],
    ), why[big]
    # The big one was never sent (a broker drops a client that sends one), and
    # no refusal cost the connection: the worker connected once.
    assert "oversize packet" not in log
    assert "'out/ok/big'" not in log
    assert log.count("as outbox-") == 1, log
    outcomes = Counter(r["outcome"] for r in await conn.fetch("SELECT * FROM outbox.attempts"))
    assert outcomes == {"dead": 4, "delivered": 1}


async def test_a_payload_over_mosquittos_message_size_limit_is_dead_lettered(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """Mosquitto's ``message_size_limit`` answers with PUBACK 0x95 "packet too
    large", a code MQTT 5 does not list for a PUBACK: still the refusal it is,
    not a lost connection retried again and again."""
    with MosquittoServer(tmp_path / "broker", message_size_limit=1024) as broker:
        await add_broker_endpoint(conn, "small", "mqtt", broker.url(), **QUICK,
                                  target="sized/{payload.name}")  # fmt: skip
        async with Subscriber(broker.url(), "sized/#") as sub:
            big, fine = await enqueue_all(conn, [
                {"endpoint": "small", "payload": {"name": "big", "blob": "x" * 4000}},
                {"endpoint": "small", "payload": {"name": "fine"}},
            ])  # fmt: skip
            async with running_worker(database_url):
                await until(lambda: none_left(conn))
                await until(lambda: len(sub.received) >= 1, within=5)
                await asyncio.sleep(0.2)
        log = broker.log_text()
    assert [r.outbox_id for r in sub.received] == [fine]
    dead = await conn.fetchrow("SELECT * FROM outbox.dead_letters")
    assert str(dead["message_id"]) == big
    assert dead["attempts"] == 1
    assert dead["last_error"] == (
        "the broker refused the message: Packet too large (reason code 0x95)"
    )
    assert dead["reason"] == "permanent failure: " + dead["last_error"]
    assert "Dropped too large PUBLISH" in log
    assert log.count("as outbox-") == 1, log  # the connection stayed up


# -- 5. credentials -----------------------------------------------------------


async def test_wrong_credentials_pause_the_endpoint_and_keep_the_messages(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    with private_broker(tmp_path) as broker:
        await add_broker_endpoint(conn, "app", "mqtt", broker.url("app"), **QUICK,
                                  secret=WRONG_PASSWORD, target="out/ok/{id}")  # fmt: skip
        async with Subscriber(broker.url(), "#", user="watcher",
                              password=WATCHER_PASSWORD) as watcher:  # fmt: skip
            ids = await enqueue_all(conn, [{"endpoint": "app", "payload": {"n": n}}
                                           for n in range(3)])  # fmt: skip
            # The worker reloads endpoints often here (every 5 s by default), so
            # that it sees the new secret below before the endpoint is resumed.
            async with running_worker(database_url, replace(FAST, endpoint_refresh=0.1)):

                async def paused() -> bool:
                    return bool(await conn.fetchval(
                        "SELECT paused_at IS NOT NULL FROM outbox.endpoints WHERE name = 'app'"
                    ))  # fmt: skip

                await until(paused, within=10)
                refusals = broker.log_text().count("not authorised")
                await asyncio.sleep(0.5)
                # Paused: no more tries, nothing delivered, nothing dead.
                assert broker.log_text().count("not authorised") == refusals
                assert 1 <= refusals <= 3
                row = await conn.fetchrow(
                    "SELECT paused_reason FROM outbox.endpoints WHERE name = 'app'"
                )
                assert row["paused_reason"] == (
                    "the MQTT broker refused the connection: [code:135] Not authorized"
                )
                assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 3
                assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0
                assert watcher.received == []
                # The right password and a resume: the kept messages go.
                await operate.update_endpoint(conn, "app", EndpointUpdate(secret=APP_PASSWORD))
                await asyncio.sleep(0.5)  # reloaded
                await operate.resume_endpoint(conn, "app")
                await until(lambda: none_left(conn))
                await until(lambda: len(watcher.received) >= 3, within=5)
    assert sorted(watcher.ids()) == sorted(ids)
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0


# -- 6. the broker restarts ---------------------------------------------------


async def test_a_broker_restarted_mid_run_loses_nothing(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """The broker stopped (saving its store) and started again on the same port
    while messages flow; a subscriber with a persistent session gets every one."""
    total = 60
    with MosquittoServer(tmp_path / "broker") as broker:
        await add_broker_endpoint(conn, "flow", "mqtt", broker.url(), **{**PATIENT, "timeout": 1.0},
                                  rate_limit=30.0, target="flow/{id}")  # fmt: skip
        async with Subscriber(broker.url(), "flow/#", persistent=True) as sub:
            ids = await enqueue_all(conn, [{"endpoint": "flow", "payload": {"i": i}}
                                           for i in range(total)])  # fmt: skip
            async with running_worker(database_url):
                await until(lambda: len(sub.received) >= 15, within=10)
                broker.stop()  # SIGTERM: Mosquitto saves its store
                unsent = await conn.fetchval("SELECT count(*) FROM outbox.messages")
                await asyncio.sleep(0.5)
                broker.start()
                await until(lambda: none_left(conn), within=20)
                await until(lambda: set(sub.ids()) >= set(ids), within=10)
    received = Counter(sub.ids())
    assert set(received) == set(ids)  # every message, at least once
    duplicates = sum(received.values()) - total
    print(
        f"broker restart: {total} messages, {unsent} unsent at the stop, {duplicates} duplicate(s)"
    )
    assert unsent >= total // 3  # it stopped mid-run
    assert sub.connections >= 2  # the subscriber did lose its connection
    outcomes = Counter(r["outcome"] for r in await conn.fetch("SELECT * FROM outbox.attempts"))
    assert outcomes["retrying"] >= 1  # ...and so did deliveries, which were retried
    assert outcomes["delivered"] == total
    # Every attempt ended with a result: none was left to its lease to expire
    # (a delivery lost inside the worker, as a stray cancellation would do).
    assert outcomes["lease_expired"] == 0, outcomes
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0


# -- 7. a worker killed -------------------------------------------------------


@pytest.mark.e2e
async def test_a_worker_killed_mid_run_loses_nothing(
    database_url: str, conn: asyncpg.Connection, mqtt_url: str,
    workers: list[WorkerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """SIGKILL, holding leases; a second worker takes them over once they expire."""
    monkeypatch.setenv("OUTBOX_REAP_INTERVAL", "0.2")  # the workers' environment
    base = unique("kill")
    total, lease = 60, "1.5"
    await add_broker_endpoint(conn, "flow", "mqtt", mqtt_url, **PATIENT, rate_limit=25.0,
                              target=base + "/{id}")  # fmt: skip
    async with Subscriber(mqtt_url, base + "/#") as sub:
        ids = await enqueue_all(conn, [{"endpoint": "flow", "payload": {"i": i}}
                                       for i in range(total)])  # fmt: skip
        first = WorkerProcess(database_url, "--lease-seconds", lease, log_dir=tmp_path)
        workers.append(first)
        await until(lambda: len(sub.received) >= 15, within=20)
        first.signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
        leased = await conn.fetchval(
            "SELECT count(*) FROM outbox.messages WHERE lease_token IS NOT NULL"
        )
        assert leased >= 1  # it died holding messages
        assert len(set(sub.ids())) < total
        workers.append(WorkerProcess(database_url, "--lease-seconds", lease, log_dir=tmp_path))
        await until(lambda: none_left(conn), within=30)
        await until(lambda: set(sub.ids()) >= set(ids), within=5)
        stop_all(workers)
    received = Counter(sub.ids())
    assert set(received) == set(ids)  # every message, at least once
    duplicates = sum(received.values()) - total
    print(f"worker killed: {total} messages, {leased} leased at the kill, "
          f"{duplicates} duplicate(s)")  # fmt: skip
    outcomes = Counter(r["outcome"] for r in await conn.fetch("SELECT * FROM outbox.attempts"))
    assert outcomes["lease_expired"] >= 1  # the reaper took the dead worker's messages back
    assert await conn.fetchval("SELECT count(DISTINCT worker_id) FROM outbox.attempts") == 2
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0


# -- 8. secrecy ---------------------------------------------------------------


@pytest.mark.e2e
async def test_no_credential_is_kept_anywhere(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:  # fmt: skip
    """Passwords in URLs and in --secret, right and wrong, through refusals,
    dead letters and an unreachable broker: in no ledger row, endpoint listing
    or line of the worker's log."""
    secrets = [APP_PASSWORD, APP_PASSWORD_IN_URL, WRONG_PASSWORD, WATCHER_PASSWORD]
    nobody = free_port()  # nothing listens there
    with private_broker(tmp_path) as broker:
        url_password = f"mqtt://app:{APP_PASSWORD_IN_URL}@127.0.0.1:{broker.port}"
        await add_broker_endpoint(conn, "in-url", "mqtt", url_password, **QUICK,
                                  target="out/{payload.zone}")  # fmt: skip
        await add_broker_endpoint(conn, "in-secret", "mqtt", broker.url("app"), **QUICK,
                                  secret=APP_PASSWORD, target="out/{payload.zone}")  # fmt: skip
        await add_broker_endpoint(conn, "wrong", "mqtt",
                                  f"mqtt://app:{WRONG_PASSWORD}@127.0.0.1:{broker.port}",
                                  **QUICK, target="out/ok/x")  # fmt: skip
        await add_broker_endpoint(conn, "down", "mqtt",
                                  f"mqtt://watcher:{WATCHER_PASSWORD}@127.0.0.1:{nobody}",
                                  **QUICK, max_attempts=2, target="out/ok/x")  # fmt: skip
        zones = ["ok/a", "forbidden", "a/+"]
        await enqueue_all(
            conn,
            [
                {"endpoint": e, "payload": {"zone": z}}
                for e in ("in-url", "in-secret")
                for z in zones
            ]
            + [{"endpoint": "wrong", "payload": {}}, {"endpoint": "down", "payload": {}}],
        )
        workers.append(WorkerProcess(database_url, log_dir=tmp_path))

        async def settled() -> bool:
            left = await conn.fetch("SELECT endpoint FROM outbox.messages")
            return [r["endpoint"] for r in left] == ["wrong"]

        await until(settled, within=20)
        await until(lambda: conn.fetchval(
            "SELECT paused_at IS NOT NULL FROM outbox.endpoints WHERE name = 'wrong'"))  # fmt: skip
        stop_all(workers)

    attempts = await conn.fetch("SELECT * FROM outbox.attempts")
    dead = await conn.fetch("SELECT * FROM outbox.dead_letters")
    outcomes = Counter((r["endpoint"], r["outcome"]) for r in attempts)
    # The failures that write text did happen: refusals, dead letters, no broker.
    assert outcomes[("in-url", "delivered")] == outcomes[("in-secret", "delivered")] == 1
    assert outcomes[("in-url", "dead")] == outcomes[("in-secret", "dead")] == 2
    assert outcomes[("down", "retrying")] == outcomes[("down", "dead")] == 1
    assert any("cannot reach the MQTT broker" in (r["error"] or "") for r in attempts), attempts
    assert len(dead) == 5
    listed = [e.to_json() for e in await operate.list_endpoints(conn)]
    by_name = {e["name"]: e for e in listed}
    assert by_name["wrong"]["state"] == "paused"
    assert "Not authorized" in by_name["wrong"]["state_reason"]
    assert by_name["in-url"]["url"] == f"mqtt://app:***@127.0.0.1:{broker.port}"
    cli = await asyncio.to_thread(  # the CLI runs its own event loop
        CliRunner().invoke, main, ["endpoint", "list", "--json", "--database-url", database_url]
    )
    assert cli.exit_code == 0, cli.output
    assert {e["name"] for e in json.loads(cli.output)} == set(by_name)
    logs = "".join(w.output() for w in workers)
    assert "to wrong failed (status None, the MQTT broker refused the connection" in logs, logs
    assert "to down failed (status None, cannot reach the MQTT broker" in logs, logs
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
