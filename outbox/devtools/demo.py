"""`outbox demo`: the whole thing, live, in about half a minute.

With no database configured it starts an embedded PostgreSQL (data kept in a
per-user cache directory and reused; ``--reset`` starts clean); with
``OUTBOX_DATABASE_URL`` it uses that database. It migrates, starts local
receivers that fail some requests on purpose, registers demo endpoints,
enqueues messages inside business transactions (some rolled back: those must
never arrive), runs ``outbox worker --processes 2`` as separate processes,
shows progress, and ends with the stats table and SQL to try. What it shows:

* ``orders`` (webhook): about one request in five answers 503 with a
  ``Retry-After: 1`` -- retries, spending attempts, then delivered;
* ``crm`` (webhook, ordered by customer): one message is rejected with a 400
  -- a dead letter, and its customer's later messages still go (the key is
  released);
* ``legacy`` (webhook): answers 410 Gone -- a dead letter, and the endpoint is
  paused (its other messages wait, parked, for ``outbox endpoint resume``);
* ``chat`` (telegram, against a local fake Bot API): a 1 message/s limit per
  chat, and coalescing of a chat's waiting messages into one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg

import outbox
from outbox import operate
from outbox.db import migrate
from outbox.db.connect import connect
from outbox.devtools.fake_telegram import FakeTelegram, reply
from outbox.devtools.processes import spawn_web, spawn_worker
from outbox.devtools.receiver import OK, Action, Receiver
from outbox.errors import InvalidInputError
from outbox.operate.endpoint_config import EndpointConfig
from outbox.operate.stats import stats_table

TOKEN = "123456789:DEMOdemoDEMOdemoDEMOdemoDEMOdemo_x"  # for the local fake Bot API
SIGNING_SECRET = "whsec_ZGVtby1zaWduaW5nLXNlY3JldC0xMjM0NTY3OA=="

SETUP = """
CREATE TABLE IF NOT EXISTS public.demo_orders (
    id bigserial PRIMARY KEY, customer text NOT NULL, total numeric NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
"""

TRY_SQL = """\
-- Try these while it runs (psql "{url}"):
SELECT * FROM outbox.stats;                 -- per endpoint: queue, dead, last hour, latency
SELECT * FROM outbox.endpoint_health;       -- why an endpoint is not being delivered to
SELECT endpoint, attempt, outcome, status_code, reason
  FROM outbox.attempts ORDER BY id DESC LIMIT 10;
SELECT message_id, endpoint, reason FROM outbox.dead_letters;
-- and: outbox endpoint resume legacy   /   outbox dead requeue --endpoint crm
"""
STOPPED = """\
The embedded PostgreSQL has stopped with the demo. To look around afterwards,
run `outbox demo --keep`: it keeps the database, the workers, the receivers and
the dashboard (outbox web) running until Ctrl-C, and prints how to reach them.
"""


@dataclass
class Tally:
    """What the demo's producers did, to check against what arrived."""

    committed: dict[str, str] = field(default_factory=dict)  # message id -> endpoint
    rolled_back: set[str] = field(default_factory=set)
    orders: int = 0
    orders_rolled_back: int = 0


class Flaky:
    """The webhook receivers' behaviour, by path (thread-safe)."""

    def __init__(self, seed: int = 4) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.rejected: set[str] = set()  # the one crm message that gets a 400

    def __call__(self, path: str, message_id: str | None, nth: int) -> Action:
        if path == "/legacy":
            return Action(410, body="gone")
        if path == "/crm" and message_id is not None and message_id in self.rejected:
            return Action(400, body='{"error": "unknown customer"}')
        if path == "/orders" and nth == 1:
            with self._lock:
                unlucky = self._rng.random() < 0.2
            if unlucky:
                return Action(503, {"Retry-After": "1"}, "busy")
        return OK


async def run(
    url: str | None,
    *,
    messages: int = 120,
    duration: float = 45.0,
    reset: bool = False,
    data_dir: Path | None = None,
    say: Callable[[str], None] = print,
    live: bool = True,
    keep: bool = False,
) -> int:
    """Run the demo; returns the exit code (0: everything behaved as designed).
    With ``keep``, everything stays up afterwards, with the dashboard, until
    the task is cancelled (Ctrl-C)."""
    server = None
    if url is None:
        from outbox.devtools.embedded import EmbeddedPostgres, default_data_dir

        where = data_dir or default_data_dir()
        say(f"starting an embedded PostgreSQL in {where} ...")
        server = EmbeddedPostgres(where, reset=reset)
        await asyncio.to_thread(server.start)
        url = server.url()
    try:
        return await _demo(url, messages=messages, duration=duration, say=say, live=live,
                           keep=keep, embedded=server is not None)  # fmt: skip
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)


async def _demo(
    url: str, *, messages: int, duration: float, say: Callable[[str], None], live: bool,
    keep: bool, embedded: bool,
) -> int:  # fmt: skip
    await asyncio.to_thread(migrate.upgrade, url)
    conn = await connect(url)
    flaky = Flaky()
    try:
        with Receiver(flaky) as rx, FakeTelegram(lambda _c: reply()) as tg:
            await _reset_demo(conn, rx, tg)
            say(
                f"endpoints: orders, crm (ordered), legacy (answers 410), chat (telegram);"
                f" {messages} orders"
            )
            workers = spawn_worker(
                url, "--processes", "2", "--poll-interval", "0.2", log_level="WARNING",
                output=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                tally = await _produce(conn, messages, flaky)
                say(
                    f"committed {tally.orders} orders with {len(tally.committed)} notifications;"
                    f" rolled back {tally.orders_rolled_back} orders and their"
                    f" {len(tally.rolled_back)} notifications (those must never arrive)"
                )
                await _watch(conn, duration, say, live)
                if not keep:
                    await _stop(workers)
                code = await _report(conn, url, tally, rx, tg, say)
                say(TRY_SQL.format(url=_shown(url)) if keep or not embedded else STOPPED)
                if keep:
                    await _keep(url, say)
                return code
            finally:
                await _stop(workers)
    finally:
        await conn.close()


async def _keep(url: str, say: Callable[[str], None]) -> None:
    """``outbox web`` on this database until cancelled (Ctrl-C), its link printed."""
    import secrets
    import socket

    token = secrets.token_urlsafe(24)
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 8080))
        except OSError:
            probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    web = spawn_web(url, port, token)
    try:
        say(f"dashboard: http://localhost:{port}/login?token={token}")
        say("the database, the workers, the receivers and the dashboard keep running: "
            "Ctrl-C stops them all")  # fmt: skip
        await asyncio.Event().wait()
    finally:
        await _stop(web)


async def _reset_demo(conn: asyncpg.Connection, rx: Receiver, tg: FakeTelegram) -> None:
    """A clean slate for the demo's own endpoints (other data is left alone)."""
    await conn.execute(SETUP)
    await conn.execute("DELETE FROM outbox.messages WHERE endpoint = ANY($1)", list(_DEMO))
    for name in _DEMO:
        with contextlib.suppress(InvalidInputError):  # not there yet
            await operate.remove_endpoint(conn, name)
    for table in ("attempts", "dead_letters", "attempt_minutes", "latency_minutes", "key_blocks"):
        await conn.execute(f"DELETE FROM outbox.{table} WHERE endpoint = ANY($1)", list(_DEMO))
    webhooks: dict[str, Any] = {
        "channel": "webhook",
        "allow_networks": ("127.0.0.0/8",),  # the receivers are on loopback
        "breaker_failures": 50,
        "max_attempts": 10,
        "retry_window": timedelta(hours=1),
    }
    for config in (
        EndpointConfig(name="orders", url=rx.url("/orders"), secret=SIGNING_SECRET, **webhooks),
        EndpointConfig(name="crm", url=rx.url("/crm"), ordered=True, **webhooks),
        # legacy sends one message a second: its first 410 pauses it before the rest go.
        EndpointConfig(name="legacy", url=rx.url("/legacy"), rate_limit=1, **webhooks),
        EndpointConfig(
            name="chat",
            channel="telegram",
            url=tg.api_url,
            secret=TOKEN,
            allow_networks=("127.0.0.0/8",),
            coalesce=2.0,
        ),  # the Bot API's limits by default: 30/s, 1/s per chat, 3s in group chats
    ):
        await operate.add_endpoint(conn, config)


async def _produce(conn: asyncpg.Connection, n: int, flaky: Flaky) -> Tally:
    """Business transactions: an order row and its notifications, together."""
    rng = random.Random(7)
    tally = Tally()
    customers = [f"customer-{c}" for c in range(8)]
    for i in range(n):
        customer = rng.choice(customers)
        tx = conn.transaction()
        await tx.start()
        order = await conn.fetchval(
            "INSERT INTO public.demo_orders (customer, total) VALUES ($1, $2) RETURNING id",
            customer,
            rng.randint(5, 500),
        )
        event = {"event": "order.created", "order": order, "customer": customer}
        batch: list[dict[str, Any]] = [
            {"endpoint": "orders", "payload": event},
            {"endpoint": "crm", "payload": event, "key": customer},
        ]
        if i % 10 == 3:
            batch.append({"endpoint": "legacy", "payload": event})
        if i % 3 == 0:
            chat = 1000 + i % 4
            batch.append(
                {"endpoint": "chat", "payload": {"chat_id": chat, "text": f"order {order}"}}
            )
        ids = [str(m) for m in await outbox.enqueue_many(conn, batch)]
        if i == 5:
            flaky.rejected.add(ids[1])  # this crm message will be rejected: a dead letter
        if i % 8 == 7:  # the business logic fails: its notifications go with it
            await tx.rollback()
            tally.rolled_back.update(ids)
            tally.orders_rolled_back += 1
        else:
            await tx.commit()
            tally.orders += 1
            tally.committed.update({m: b["endpoint"] for m, b in zip(ids, batch, strict=True)})
        await asyncio.sleep(0.01)
    return tally


async def _watch(
    conn: asyncpg.Connection, duration: float, say: Callable[[str], None], live: bool
) -> None:
    """Progress until everything deliverable is done (or ``duration`` passes)."""
    start = time.monotonic()
    last = ""
    while time.monotonic() - start < duration:
        rows = {r["endpoint"]: r for r in await operate.stats(conn) if r["endpoint"] in _DEMO}
        delivered = sum(r["delivered_last_hour"] for r in rows.values())
        rate = delivered / max(time.monotonic() - start, 0.1)
        p50 = rows["orders"]["p50_latency_ms_last_hour"] if "orders" in rows else None
        waiting = sum(
            r["pending"] + r["scheduled"] + r["in_flight"]
            for name, r in rows.items()
            if r["state"] not in ("paused", "disabled")
        )
        line = "  ".join(
            f"{name}: {r['delivered_last_hour']} delivered, "
            f"{r['pending'] + r['scheduled'] + r['in_flight']} waiting, {r['dead']} dead"
            + (f" [{r['state']}]" if r["state"] != "active" else "")
            for name, r in sorted(rows.items())
        )
        if line != last and (live or not waiting):
            latency = "" if p50 is None else f"  p50 {p50:.0f} ms"
            say(f"[{time.monotonic() - start:4.1f}s] {rate:5.1f}/s{latency}  {line}")
            last = line
        if not waiting:
            return
        await asyncio.sleep(0.5)
    say(f"stopping after {duration:g}s (--duration)")


_DEMO = {"orders", "crm", "legacy", "chat"}


async def _stop(workers: subprocess.Popen[bytes]) -> None:
    if workers.poll() is None:
        workers.send_signal(signal.SIGTERM)
    try:
        await asyncio.to_thread(workers.wait, 40)
    except subprocess.TimeoutExpired:
        workers.kill()
        await asyncio.to_thread(workers.wait, 10)


async def _report(
    conn: asyncpg.Connection,
    url: str,
    tally: Tally,
    rx: Receiver,
    tg: FakeTelegram,
    say: Callable[[str], None],
) -> int:
    arrived = rx.ids()
    dead = {str(r[0]) for r in await conn.fetch("SELECT message_id FROM outbox.dead_letters")}
    parked = {str(r[0]) for r in await conn.fetch("SELECT id FROM outbox.messages")}
    chats = len(tg.calls())
    webhook_committed = {m for m, e in tally.committed.items() if e != "chat"}
    lost = webhook_committed - arrived - dead - parked
    leaked = tally.rolled_back & arrived
    say("")
    say(f"webhook requests received: {len(rx.snapshot())} for {len(arrived)} messages"
        f" (retries included); Bot API calls: {chats}")  # fmt: skip
    say(f"dead letters: {len(dead)}; parked behind the paused endpoint: {len(parked)}")
    say(f"rolled-back messages that arrived: {len(leaked)}")
    say(f"committed messages neither delivered, dead nor parked: {len(lost)}")
    with contextlib.suppress(Exception):
        from rich.console import Console

        console = Console()
        console.width = max(console.width, 150)
        console.print(stats_table(await operate.stats(conn)))
    return 0 if not leaked and not lost else 1


def _shown(url: str) -> str:
    from outbox._redact import redact_url

    return redact_url(url)
