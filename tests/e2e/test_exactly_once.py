"""Exactly-once effects from at-least-once delivery, shown with SIGKILLed workers.

A producer commits orders' messages in transactions (every fifth rolled
back on purpose) while three ``outbox worker`` processes deliver them, signed,
to ``examples/fastapi_receiver.py``, which keeps an inbox
(`outbox.receive`) in a database of its own. Every second or so one worker is
SIGKILLed and replaced: a worker killed after the receiver answered and before
it recorded the answer loses its lease, and the message goes again with the
same ``webhook-id``. The receiver, served here under uvicorn, counts every
request it answers.

At the end: duplicates did reach the receiver (the test fails if the kills
made none, as it would then show nothing), and its effect table has exactly
one row per committed message, none for a rolled-back one: duplicate effects
= 0. The figures are printed (``-s``) for the README's Reliability section.
``OUTBOX_EXACTLY_ONCE_MESSAGES`` (default 3000) sets the size of the run,
``OUTBOX_EXACTLY_ONCE_REPORT`` names a JSON file for the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvicorn
from chaos_support import ChaosWorker
from support import EXAMPLES, WorkerProcess, until

import outbox
from outbox.db.connect import connect

pytestmark = pytest.mark.e2e

SECRET = "whsec_ZXhhY3RseS1vbmNlLWV4YWN0bHktb25jZS1leGFjdGx5"
MESSAGES = int(os.environ.get("OUTBOX_EXACTLY_ONCE_MESSAGES", "3000"))
PER_TRANSACTION = 20
KILL_EVERY = 1.2


class Counting:
    """ASGI middleware: how many 2xx answers each webhook-id got."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.answered: Counter[str] = Counter()
        self.lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        webhook_id = headers.get(b"webhook-id", b"").decode()

        async def counted(message: Any) -> None:
            if message["type"] == "http.response.start" and 200 <= message["status"] < 300:
                with self.lock:
                    self.answered[webhook_id] += 1
            await send(message)

        await self.app(scope, receive, counted)


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` under uvicorn in a thread of its own, on a free port; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the receiver stopped at start"
        assert time.monotonic() < deadline, "the receiver did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def receiver_app() -> Any:
    spec = importlib.util.spec_from_file_location(
        "fastapi_receiver", EXAMPLES / "fastapi_receiver.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


def write_report(path: Path, figures: dict[str, Any]) -> None:
    path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


async def produce(url: str, committed: list[str], rolled_back: list[str]) -> None:
    conn = await connect(url)
    try:
        for start in range(0, MESSAGES * 5 // 4, PER_TRANSACTION):
            doomed = (start // PER_TRANSACTION) % 5 == 4
            batch = [
                {"endpoint": "orders", "payload": {"order_id": n}, "key": f"customer-{n % 50}"}
                for n in range(start, start + PER_TRANSACTION)
            ]
            transaction = conn.transaction()
            await transaction.start()
            ids = [str(i) for i in await outbox.enqueue_many(conn, batch)]
            if doomed:
                await transaction.rollback()
                rolled_back.extend(ids)
            else:
                await transaction.commit()
                committed.extend(ids)
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


def catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGTERM (Linux: SigCgt in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # gone, or no /proc: nothing to wait for
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


async def test_sigkilled_workers_make_duplicates_and_the_inbox_makes_them_harmless(
    database_url: str,
    blank_database_url: str,
    conn: asyncpg.Connection,
    workers: list[WorkerProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RECEIVER_DATABASE_URL", blank_database_url)
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    app = Counting(receiver_app())
    committed: list[str] = []
    rolled_back: list[str] = []
    kills = 0
    started = time.monotonic()
    with serving(app) as base:
        await conn.execute(
            "INSERT INTO outbox.endpoints (name, channel, url, secret, breaker_failures)"
            " VALUES ('orders', 'webhook', $1, $2, 1000)",
            base + "/hooks/orders",
            SECRET,
        )
        fleet = [ChaosWorker(database_url, log_dir=tmp_path) for _ in range(3)]
        workers.extend(fleet)
        producer = asyncio.create_task(produce(database_url, committed, rolled_back))
        while not producer.done() or await conn.fetchval("SELECT count(*) FROM outbox.messages"):
            await asyncio.sleep(KILL_EVERY)
            if producer.done() and kills >= 8:
                break  # enough kills; the survivors drain the rest
            victim = fleet[kills % len(fleet)]
            victim.proc.send_signal(signal.SIGKILL)
            victim.wait(10)
            kills += 1
            fleet[kills % len(fleet) - 1] = replacement = ChaosWorker(
                database_url, log_dir=tmp_path
            )
            workers.append(replacement)
        await producer
        deadline = time.monotonic() + 120
        while await conn.fetchval("SELECT count(*) FROM outbox.messages"):
            assert time.monotonic() < deadline, "the backlog did not drain"
            await asyncio.sleep(0.2)
        for worker in fleet:
            # A replacement started just now may not have its signal handler yet
            # (SIGTERM would kill it, exit -15): wait until it catches SIGTERM.
            await until(lambda w=worker: catches_sigterm(w.proc.pid), within=30)
            worker.signal(signal.SIGTERM)
        for worker in fleet:
            assert worker.wait(30) == 0, worker.output()
    elapsed = time.monotonic() - started

    receiver = await asyncpg.connect(blank_database_url)
    try:
        effects = Counter(
            r["webhook_id"] for r in await receiver.fetch("SELECT webhook_id FROM shipments")
        )
        inbox = await receiver.fetchval("SELECT count(*) FROM outbox_inbox")
    finally:
        await receiver.close()
    dead = await conn.fetchval("SELECT count(*) FROM outbox.dead_letters")
    duplicates = sum(n - 1 for n in app.answered.values() if n > 1)
    figures = {
        "messages_committed": len(committed),
        "messages_rolled_back": len(rolled_back),
        "workers_sigkilled": kills,
        "requests_answered_2xx": sum(app.answered.values()),
        "duplicates_delivered": duplicates,
        "messages_delivered_more_than_once": sum(1 for n in app.answered.values() if n > 1),
        "effects": sum(effects.values()),
        "duplicate_effects": sum(n - 1 for n in effects.values()),
        "seconds": round(elapsed, 1),
    }
    print("\nexactly-once:", json.dumps(figures))
    if report := os.environ.get("OUTBOX_EXACTLY_ONCE_REPORT"):
        write_report(Path(report), figures)
    assert dead == 0
    assert set(app.answered) == set(committed)  # every committed message arrived; none else
    assert duplicates > 0, "no kill made a duplicate: the run showed nothing; make it longer"
    assert set(effects) == set(committed)  # one effect per committed message ...
    assert figures["duplicate_effects"] == 0  # ... and never two
    assert inbox == len(committed)
    assert not set(effects) & set(rolled_back)
