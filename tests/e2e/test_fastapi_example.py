"""``examples/fastapi_app.py`` under uvicorn, a real worker process, a real receiver.

Orders are posted over HTTP, some refused by the app's credit check after the
enqueue (their transaction rolls back), some by validation; a worker delivers
to a receiver that fails each message's first try. What arrives must be
exactly the committed orders, each twice (the failure, then the retry), in order
per customer (the endpoint is ``--ordered``), and nothing of a refused order.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import asyncpg
import httpx
import pytest
from support import AppProcess, WorkerProcess, add_endpoint, until

from outbox.devtools.receiver import Action, Receiver, fail_first

pytestmark = pytest.mark.e2e

# (customer, total): ada's third order and cy's only one go over the 1000 limit.
ORDERS = [
    ("ada", "600"), ("bob", "10"), ("ada", "300"), ("bob", "20"), ("ada", "200"),
    ("cy", "2000"), ("bob", "30"), ("ada", "50"), ("dee", "999.99"), ("bob", "40"),
]  # fmt: skip


async def test_orders_posted_to_the_fastapi_example_reach_the_receiver_exactly_as_committed(
    database_url: str, conn: asyncpg.Connection, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    app = AppProcess("fastapi_app", {"OUTBOX_DATABASE_URL": database_url}, log_dir=tmp_path)
    try:
        await app.ready()
        with Receiver(fail_first(1, Action(status=503))) as rx:
            # Every first try fails: a breaker at its default would open and pause
            # the test for its cooldown, which is not what this test is about.
            await add_endpoint(
                conn, "order-events", rx.url("/orders"), ordered=True, breaker_failures=1000
            )
            created: dict[int, tuple[str, str]] = {}
            refused: list[tuple[str, str]] = []
            async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
                for customer, total in ORDERS:
                    answer = await client.post(
                        "/orders", json={"customer": customer, "total": total}
                    )
                    if answer.status_code == 201:
                        created[answer.json()["id"]] = (customer, total)
                    else:
                        assert answer.status_code == 422, answer.text
                        assert "over 1000" in answer.json()["detail"]
                        refused.append((customer, total))
                invalid = await client.post("/orders", json={"customer": "eve", "total": "-5"})
                assert invalid.status_code == 422
                # Ten more at once, from one pool: each its own transaction.
                answers = await asyncio.gather(
                    *(client.post("/orders", json={"customer": f"c{i}", "total": "1"})
                      for i in range(10))
                )  # fmt: skip
                for i, answer in enumerate(answers):
                    assert answer.status_code == 201
                    created[answer.json()["id"]] = (f"c{i}", "1")
                shown = await client.get(f"/orders/{min(created)}")
                assert shown.json()["customer"] == created[min(created)][0]
                assert (await client.get("/orders/999999")).status_code == 404
            assert refused == [("ada", "200"), ("cy", "2000")]
            # Before any worker runs: one message per committed order, none for the rest.
            assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == len(created)
            assert await conn.fetchval("SELECT count(*) FROM orders") == len(created)

            worker = WorkerProcess(database_url, "--concurrency", "8", log_dir=tmp_path)
            workers.append(worker)
            await until(
                lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox.messages"), within=60
            )
            worker.signal(signal.SIGTERM)
            assert worker.wait(30) == 0, worker.output()
            arrivals = rx.snapshot()
    finally:
        app.stop()
    delivered = [a for a in arrivals if a.action.status == 200]
    events = [a.json() for a in delivered]
    assert sorted(e["order_id"] for e in events) == sorted(created)
    for event in events:
        assert event["event"] == "order.created"
        assert event["total"] == created[event["order_id"]][1]
    assert len(arrivals) == 2 * len(created)  # every first try failed and was retried once
    failed_first = {a.message_id for a in arrivals if a.action.status == 503}
    assert failed_first == {a.message_id for a in delivered}
    for customer in ("ada", "bob"):  # per key (the customer), in the order committed
        theirs = [e["order_id"] for e in events if created[e["order_id"]][0] == customer]
        assert theirs == sorted(theirs)
        assert len(theirs) == sum(1 for c, _ in created.values() if c == customer)
    outcomes = await conn.fetch(
        "SELECT outcome, count(*) FROM outbox.attempts GROUP BY 1 ORDER BY 1"
    )
    assert {r["outcome"]: r["count"] for r in outcomes} == {
        "delivered": len(created),
        "retrying": len(created),
    }
