"""See outbox work end to end in a few seconds, with no database server installed.

Starts an embedded PostgreSQL in a temporary directory (or uses
$OUTBOX_DATABASE_URL), migrates it, points a webhook endpoint at a local
receiver that fails some requests on purpose, commits orders together with
their notifications (rolling some transactions back), runs a worker process,
and prints what arrived. `outbox demo` will grow out of this.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile

import outbox
from outbox.db import migrate
from outbox.db.connect import connect
from outbox.devtools.processes import spawn_worker
from outbox.devtools.receiver import OK, Action, Receiver


def script(_path: str, message_id: str | None, nth: int) -> Action:
    """About one message in three fails its first attempt with a 503 and a Retry-After.

    (Were every request to fail, the endpoint's circuit breaker would rightly
    open after five failures in a row and hold deliveries back for 30 s.)"""
    unlucky = message_id is not None and int(message_id[-1], 16) % 3 == 0
    return Action(status=503, headers={"Retry-After": "1"}) if unlucky and nth == 1 else OK


async def main(url: str) -> int:
    await asyncio.to_thread(migrate.upgrade, url)
    conn = await connect(url)
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, total numeric NOT NULL);"
        "DELETE FROM outbox.messages; DELETE FROM outbox.endpoints WHERE name = 'shop'"
    )
    with Receiver(script) as rx:
        await conn.execute(
            # allow_networks: the SSRF guard refuses non-public addresses, and
            # this demo's receiver is on loopback.
            "INSERT INTO outbox.endpoints (name, channel, url, secret, allow_networks)"
            " VALUES ('shop', 'webhook', $1, $2, '{127.0.0.0/8}')",
            rx.url("/orders"),
            "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LTEyMzQ1Njc4OQ==",
        )
        committed, rolled_back = [], []
        for n in range(1, 21):
            tr = conn.transaction()
            await tr.start()
            order = await conn.fetchval("INSERT INTO orders (total) VALUES ($1) RETURNING id", n)
            message_id = await outbox.enqueue(
                conn, "shop", {"event": "order.created", "order": order}
            )
            if n % 4 == 0:  # the business logic fails: the notification goes too
                await tr.rollback()
                rolled_back.append(str(message_id))
            else:
                await tr.commit()
                committed.append(str(message_id))
        print(
            f"committed {len(committed)} orders with notifications, rolled back {len(rolled_back)}"
        )

        worker = spawn_worker(url, "--poll-interval", "0.2")
        for _ in range(600):  # until every message is delivered or dead-lettered
            if not await conn.fetchval("SELECT count(*) FROM outbox.messages"):
                break
            await asyncio.sleep(0.1)
        arrived = set(committed) <= rx.ids()
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(30)
    attempts = await conn.fetch(
        "SELECT outcome, count(*) FROM outbox.attempts GROUP BY 1 ORDER BY 1"
    )
    print(f"receiver got {len(rx.ids())} distinct messages in {len(rx.snapshot())} requests")
    print("attempts:", ", ".join(f"{r['outcome']}={r['count']}" for r in attempts))
    print("rolled-back messages that arrived:", len(set(rolled_back) & rx.ids()))
    print(f"worker exited with {code} after SIGTERM")
    delivered = {
        str(r["message_id"])
        for r in await conn.fetch(
            "SELECT message_id FROM outbox.attempts WHERE outcome = 'delivered'"
        )
    }
    ok = arrived and delivered == set(committed) and not set(rolled_back) & rx.ids() and code == 0
    print("OK: every committed message arrived, no rolled-back one did" if ok else "FAILED")
    await conn.close()
    return 0 if ok else 1


if __name__ == "__main__":
    if os.environ.get("OUTBOX_DATABASE_URL"):
        sys.exit(asyncio.run(main(os.environ["OUTBOX_DATABASE_URL"])))
    from outbox.devtools.embedded import EmbeddedPostgres

    scratch = tempfile.mkdtemp(prefix="outbox-quickstart-", dir="/tmp")
    try:
        with EmbeddedPostgres(os.path.join(scratch, "pgdata")) as server:
            print(f"embedded PostgreSQL on {server.url()}")
            sys.exit(asyncio.run(main(server.url())))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
