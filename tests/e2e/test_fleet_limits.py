"""Destination limits hold across a fleet: three independent `outbox worker`
processes, coordinating only through PostgreSQL, measured at the receiver."""

from __future__ import annotations

import asyncio
import itertools
import random
import signal
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from support import WorkerProcess

import outbox
from outbox.devtools.fake_telegram import Call, FakeTelegram, reply
from outbox.devtools.receiver import OK, Action, Receiver

pytestmark = pytest.mark.e2e


def start_fleet(url: str, workers: list[WorkerProcess], log_dir: Path, n: int = 3) -> None:
    for _ in range(n):
        workers.append(WorkerProcess(url, "--concurrency", "30", log_dir=log_dir))


def stop_fleet(workers: list[WorkerProcess]) -> None:
    for w in workers:
        w.signal(signal.SIGTERM)
    for w in workers:
        assert w.wait(30) == 0, w.output()


async def finished(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval("SELECT count(*) FROM outbox.messages") == 0


async def wait_until(conn: asyncpg.Connection, within: float) -> None:
    for _ in range(int(within * 10)):
        if await finished(conn):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"messages left after {within}s")


async def enqueue_all(conn: asyncpg.Connection, messages: list[dict[str, Any]]) -> list[Any]:
    async with conn.transaction():
        return list(await outbox.enqueue_many(conn, messages))


class Flaky:
    """Fails a share of requests at random (500 or a reset), the same way in every run."""

    def __init__(self, share: float, seed: int = 7) -> None:
        self.share = share
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def __call__(self, _path: str, _id: str | None, _nth: int) -> Action:
        with self._lock:
            roll = self._rng.random()
        if roll < self.share / 2:
            return Action(500)
        if roll < self.share:
            return Action(reset=True)
        return OK


async def test_an_endpoint_rate_holds_across_three_processes(
    database_url: str, conn: asyncpg.Connection, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    rate, seconds = 40.0, 12
    with Receiver() as rx:
        await conn.execute(
            "INSERT INTO outbox.endpoints (name, channel, url, rate_limit, allow_networks)"
            " VALUES ('limited', 'webhook', $1, $2, '{127.0.0.0/8}')",
            rx.url(),
            rate,
        )
        total = int(rate * seconds)
        await enqueue_all(
            conn, [{"endpoint": "limited", "payload": {"i": i}} for i in range(total)]
        )
        start_fleet(database_url, workers, tmp_path)
        await wait_until(conn, within=seconds * 3)
        stop_fleet(workers)
    arrivals = sorted(r.arrived for r in rx.snapshot())
    assert len(arrivals) == total
    # In any 10 s window: at most the rate (+5%), measured on the receiver's clock.
    window = 10.0
    busiest = max(
        sum(1 for t in arrivals[i:] if t < start + window) for i, start in enumerate(arrivals)
    )
    assert busiest <= rate * window * 1.05, busiest
    # ...and the limit is a rate, not a stall: the fleet kept close to it.
    assert busiest >= rate * window * 0.85, busiest
    claimers = {w for (w,) in await conn.fetch("SELECT DISTINCT worker_id FROM outbox.attempts")}
    assert len(claimers) == 3  # every process took part


async def test_telegram_per_chat_intervals_hold_across_three_processes(
    database_url: str, conn: asyncpg.Connection, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    private, group = 0.4, 0.8
    rng = random.Random(3)
    lock = threading.Lock()

    def behaviour(_call: Call) -> Action:
        with lock:
            fail = rng.random() < 0.1
        return Action(502) if fail else reply()

    with FakeTelegram(behaviour) as tg:
        await conn.execute(
            "INSERT INTO outbox.endpoints (name, channel, url, secret, rate_limit,"
            " key_interval_ms, group_key_interval_ms) VALUES ('bot', 'telegram', $1,"
            " '123456:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', 30, $2, $3)",
            tg.api_url,
            int(private * 1000),
            int(group * 1000),
        )
        chats = [101, 102, 103, 104, 105, 106, -2001, -2002]
        messages = [
            {"endpoint": "bot", "payload": {"chat_id": chat, "text": f"{chat}/{n}"}}
            for n in range(6)
            for chat in chats
        ]
        await enqueue_all(conn, messages)
        start_fleet(database_url, workers, tmp_path)
        await wait_until(conn, within=60)
        stop_fleet(workers)
    by_chat: dict[int, list[float]] = defaultdict(list)
    for record, call in tg.calls():
        by_chat[call.chat_id].append(record.arrived)
    assert sorted(by_chat) == sorted(chats)
    for chat, times in by_chat.items():
        times.sort()
        need = group if chat < 0 else private
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= need, (chat, min(gaps))
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0


async def test_per_key_order_holds_under_random_failures_across_three_processes(
    database_url: str, conn: asyncpg.Connection, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    with Receiver(Flaky(0.3)) as rx:
        await conn.execute(
            "INSERT INTO outbox.endpoints (name, channel, url, ordered, max_attempts,"
            " breaker_failures, allow_networks)"
            " VALUES ('ordered', 'webhook', $1, true, 1000, 1000000, '{127.0.0.0/8}')",
            rx.url(),
        )
        keys = [f"account-{k}" for k in range(12)]
        plan = [(key, n) for n in range(15) for key in keys]
        ids = await enqueue_all(
            conn,
            [
                {"endpoint": "ordered", "key": key, "payload": {"key": key, "n": n}}
                for key, n in plan
            ],
        )
        start_fleet(database_url, workers, tmp_path)
        await wait_until(conn, within=120)
        stop_fleet(workers)
    position = {str(i): n for i, (_, n) in zip(ids, plan, strict=True)}
    key_of = {str(i): key for i, (key, _) in zip(ids, plan, strict=True)}
    arrivals: dict[str, list[int]] = defaultdict(list)
    for record in sorted(rx.snapshot(), key=lambda r: r.arrived):
        arrivals[key_of[record.message_id or ""]].append(position[record.message_id or ""])
    failures = sum(1 for r in rx.snapshot() if r.action is not OK)
    assert failures > 50  # the faults really happened
    for key in keys:
        # Every try of message n arrives before any try of message n+1.
        assert arrivals[key] == sorted(arrivals[key]), key
        assert sorted(set(arrivals[key])) == list(range(15))
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0


async def test_breaker_disable_and_secrecy_across_three_processes(
    database_url: str, conn: asyncpg.Connection, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """Three processes: one endpoint's circuit opens, probes and closes; another is
    disabled, parks its messages and delivers them after resume; a failing bot's
    token shows up in none of the workers' logs or the rows."""
    token = "987654321:AAFakeTokenForTestsOnly_0123456789abcd"
    failing = {"hook": True, "down": True}

    def hook_script(path: str, _id: str | None, _nth: int) -> Action:
        return Action(503) if failing["hook" if path == "/hook" else "down"] else OK

    def bot(call: Call) -> Action:
        return Action(500, body=f"/bot{token}/sendMessage broke") if call.nth == 1 else reply()

    with Receiver(hook_script) as rx, FakeTelegram(bot) as tg:
        await conn.execute(
            "INSERT INTO outbox.endpoints (name, channel, url, breaker_failures, breaker_cooldown,"
            " breaker_max_cooldown, disable_after, max_attempts, allow_networks) VALUES"
            " ('hook', 'webhook', $1, 3, '300 ms', '1 s', '1 day', 1000, '{127.0.0.0/8}'),"
            " ('down', 'webhook', $2, 2, '100 ms', '200 ms', '1.5 s', 1000, '{127.0.0.0/8}')",
            rx.url("/hook"),
            rx.url("/down"),
        )
        await conn.execute(
            "INSERT INTO outbox.endpoints (name, channel, url, secret, breaker_cooldown)"
            " VALUES ('bot', 'telegram', $1, $2, '200 ms')",
            tg.api_url,
            token,
        )
        await enqueue_all(
            conn,
            [{"endpoint": "hook", "payload": {"i": i}} for i in range(20)]
            + [{"endpoint": "down", "payload": {"i": i}} for i in range(5)]
            + [{"endpoint": "bot", "payload": {"chat_id": i, "text": f"t{i}"}} for i in range(5)],
        )
        start_fleet(database_url, workers, tmp_path)

        async def state(name: str) -> str:
            return await conn.fetchval(
                "SELECT state FROM outbox.endpoint_health WHERE endpoint = $1", name
            )

        for _ in range(200):
            if await state("hook") == "circuit_open":
                break
            await asyncio.sleep(0.05)
        assert await state("hook") == "circuit_open"
        opened = asyncio.get_running_loop().time()
        seen = len([r for r in rx.snapshot() if r.path == "/hook"])
        await asyncio.sleep(1.5)
        during = len([r for r in rx.snapshot() if r.path == "/hook"]) - seen
        # Open, only probes pass (cool-downs of 0.3, 0.6, 1 s): a handful at most,
        # where twenty messages retrying every 0.05-0.2 s from three processes
        # would have sent well over a hundred.
        assert during <= 6, during
        failing["hook"] = False

        for _ in range(200):
            if await state("down") == "disabled":
                break
            await asyncio.sleep(0.05)
        assert await state("down") == "disabled"
        parked = await conn.fetchval("SELECT count(*) FROM outbox.messages WHERE endpoint = 'down'")
        assert parked == 5
        failing["down"] = False
        from outbox import operate

        await operate.resume_endpoint(conn, "down")
        await wait_until(conn, within=60)
        assert asyncio.get_running_loop().time() - opened < 60
        stop_fleet(workers)
    assert await state("hook") == "active"
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0
    secret = token.split(":", 1)[1]
    for w in workers:
        assert secret not in w.output()
    rows = await conn.fetch("SELECT error, response_excerpt, reason FROM outbox.attempts")
    assert any(r["error"] and "Telegram 500" in r["error"] for r in rows)
    assert all(secret not in str(dict(r)) for r in rows)
