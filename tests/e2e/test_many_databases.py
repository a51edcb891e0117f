"""One fleet, many databases: a real `outbox worker` serving several databases at
once (OUTBOX_DATABASE_URLS), each with its own schema, endpoints and processes.

* A backlog of 100,000 in one database does not delay another's ten.
* Logs, metrics and `outbox stats` name each database, never its password.
* One database down (it does not exist yet) leaves the others delivering, and
  is served as soon as it exists; a killed process is restarted for its own
  database, the others' untouched.

OUTBOX_MANYDB_REPORT=path writes the fairness run's figures there as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import psutil
import pytest
from support import FAST_RETRIES, WorkerProcess, add_endpoint, enqueue, free_port, until

from outbox.db.connect import connect
from outbox.devtools.receiver import Action, Receiver, always

pytestmark = pytest.mark.e2e

PASSWORD = "fleet-pw-7c1d"  # trust auth accepts and ignores it; it must show nowhere
BACKLOG = 100_000


def with_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or "postgres"
    return urlunsplit(parts._replace(netloc=f"{user}:{PASSWORD}@{host}"))


def started(output: str, database: str) -> list[int]:
    """The pids the supervisor started for ``database``, in order."""
    pattern = rf"started worker process \d+ for database {re.escape(database)} \(pid (\d+)\)"
    return [int(pid) for pid in re.findall(pattern, output)]


def log_records(output: str) -> list[dict[str, object]]:
    records = []
    for line in output.splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def outbox_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``outbox ARGS`` with ``env``, and no database variable but those in it."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_DATABASE_URL")}
    return subprocess.run(
        [sys.executable, "-m", "outbox", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def get(port: int, path: str) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        return (await client.get(f"http://127.0.0.1:{port}{path}")).text


def write_report(figures: dict[str, object]) -> None:
    """Adds this run to the JSON list at OUTBOX_MANYDB_REPORT, if set."""
    if report := os.environ.get("OUTBOX_MANYDB_REPORT"):
        path = Path(report)
        runs = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps([*runs, figures], indent=2) + "\n")


async def ready(port: int) -> bool:
    try:
        return "2/2" in await get(port, "/healthz")
    except httpx.HTTPError:
        return False


async def ten_delivered(conn: asyncpg.Connection, rx: Receiver) -> float:
    """Seconds from the commit of ten messages to the arrival of the last of them."""
    committed = time.time()
    ids = {str(i) for i in await enqueue(conn, "orders", 10)}
    await until(lambda: ids <= rx.ids(), within=60)
    return max(r.arrived for r in rx.snapshot() if r.message_id in ids) - committed


async def count(conn: asyncpg.Connection, sql: str) -> int:
    return int(await conn.fetchval(sql))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("drain", ["full speed", "10 ms per message"])
async def test_a_backlog_of_100000_in_one_database_does_not_delay_another_s_ten(
    drain: str,
    database_url: str,
    new_database: Callable[..., str],
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    big_url, small_url = database_url, new_database()
    big, small = await connect(big_url), await connect(small_url)
    port = free_port()
    try:
        delay = 0.01 if drain == "10 ms per message" else 0.0
        with Receiver(always(Action(delay=delay))) as slow, Receiver() as fast:
            await add_endpoint(big, "bulk", slow.url())
            await add_endpoint(small, "orders", fast.url())
            fleet = WorkerProcess(
                {"big": with_password(big_url), "small": with_password(small_url)},
                "--concurrency", "50", "--metrics-port", str(port),
                log_dir=tmp_path, env={"OUTBOX_LOG_FORMAT": "json"},
            )  # fmt: skip
            workers.append(fleet)
            await until(lambda: ready(port), within=30)
            await ten_delivered(small, fast)  # its worker is up and has delivered
            await asyncio.sleep(1)  # and is idle again
            # With nothing queued anywhere: what ten cost the small database alone.
            idle = await ten_delivered(small, fast)
            await big.execute(
                "SELECT outbox.enqueue_many(array_fill('bulk'::text, ARRAY[$1::int]),"
                " (SELECT array_agg(jsonb_build_object('n', g)) FROM generate_series(1, $1) g))",
                BACKLOG,
            )
            # The big database's drain is under way before the small one gets ten more.
            await until(lambda: len(slow.ids()) >= 500, within=60)
            waited = await ten_delivered(small, fast)
            left = await count(big, "SELECT count(*) FROM outbox.messages")
            server = await big.fetchval("SHOW server_version")
            # The ten did not wait behind the backlog: most of it is still there.
            assert left >= BACKLOG // 2, (left, waited)

            metrics = await get(port, "/metrics")
            health = await get(port, "/healthz")
            env = {
                "OUTBOX_DATABASE_URLS": f"big={with_password(big_url)} "
                f"small={with_password(small_url)}"
            }
            stats = outbox_cli("stats", "--json", env=env)
            table = outbox_cli("stats", env={**env, "COLUMNS": "200"})
            fleet.signal(signal.SIGTERM)
            assert fleet.wait(60) == 0, fleet.output()
    finally:
        await big.close()
        await small.close()

    delivered = r'outbox_attempts_total\{database="%s",endpoint="%s",outcome="delivered"\} (\S+)'
    assert float(re.search(delivered % ("small", "orders"), metrics)[1]) == 30  # type: ignore[index]
    assert float(re.search(delivered % ("big", "bulk"), metrics)[1]) >= 500  # type: ignore[index]
    assert 'outbox_pending{database="big",endpoint="bulk"}' in metrics
    assert re.findall(r"^(\w+): (\d+/\d+)$", health, re.M) == [("big", "1/1"), ("small", "1/1")]

    assert stats.returncode == 0, stats.stderr
    rows = {(row["database"], row["endpoint"]): row for row in json.loads(stats.stdout)}
    assert set(rows) == {("big", "bulk"), ("small", "orders")}
    assert rows["small", "orders"]["pending"] == 0
    assert rows["big", "bulk"]["pending"] > 0
    assert table.returncode == 0, table.stderr
    assert "database" in table.stdout
    assert "small" in table.stdout
    assert "bulk" in table.stdout

    output = fleet.output()
    records = log_records(output)
    for name in ("big", "small"):
        assert any(r.get("database") == name and "started" in str(r["message"]) for r in records)
    for text in (output, metrics, health, stats.stdout, stats.stderr, table.stdout):
        assert PASSWORD not in text

    write_report(
        {
            "machine": f"{os.cpu_count()} cores, {sys.platform}",
            "postgresql": server,
            "settings": "one outbox worker, OUTBOX_DATABASE_URLS of 2 databases, 1 process "
            "each, --concurrency 50; the small database's receiver answers at once; the ten "
            "enqueued (in one transaction) before the backlog, then once 500 of the "
            "backlog were delivered; from commit to the last one's arrival",
            "big_database_receiver": drain,
            "backlog": BACKLOG,
            "small_database_messages": 10,
            "small_database_ten_delivered_after_s": {
                "big_database_idle": round(idle, 4),
                "big_database_draining_its_backlog": round(waited, 4),
            },
            "big_database_left_then": left,
        }
    )


@pytest.mark.timeout(240)
async def test_a_database_down_and_a_killed_process_leave_the_others_delivering(
    database_url: str,
    new_database: Callable[..., str],
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    missing = f"outbox_later_{os.getpid()}_{int(time.time())}"
    later_url = urlunsplit(urlsplit(database_url)._replace(path=f"/{missing}"))
    up = await connect(database_url)
    port = free_port()
    try:
        with Receiver() as rx:
            await add_endpoint(up, "hook", rx.url())
            fleet = WorkerProcess(
                {"up": with_password(database_url), "later": with_password(later_url)},
                "--metrics-port", str(port),
                log_dir=tmp_path, env={**FAST_RETRIES, "OUTBOX_LOG_FORMAT": "json"},
            )  # fmt: skip
            workers.append(fleet)
            first = {str(i) for i in await enqueue(up, "hook", 5)}
            await until(lambda: first <= rx.ids(), within=60)

            # "later" does not exist: its process says why, by name, and keeps trying.
            def refused() -> bool:
                return any(
                    r.get("database") == "later" and "does not exist" in str(r["message"])
                    for r in log_records(fleet.output())
                )

            await until(refused, within=30)

            # Kill the up database's process: it alone is started again.
            await until(lambda: started(fleet.output(), "later"), within=10)
            (up_pid,) = started(fleet.output(), "up")
            (later_pid,) = started(fleet.output(), "later")
            psutil.Process(up_pid).kill()
            await until(lambda: len(started(fleet.output(), "up")) == 2, within=30)
            assert psutil.Process(later_pid).is_running()
            second = {str(i) for i in await enqueue(up, "hook", 5)}
            await until(lambda: second <= rx.ids(), within=60)

            # The missing database appears (migrated, with an endpoint): it is served
            # by the process that was waiting for it, not a new one.
            new_database(missing)
            later = await connect(later_url)
            try:
                await add_endpoint(later, "hook", rx.url("/later"))
                third = {str(i) for i in await enqueue(later, "hook", 3)}
                await until(lambda: third <= rx.ids(), within=60)
            finally:
                await later.close()
            assert started(fleet.output(), "later") == [later_pid]
            health = await get(port, "/healthz")
            fleet.signal(signal.SIGTERM)
            assert fleet.wait(60) == 0, fleet.output()
    finally:
        await up.close()
    assert re.findall(r"^(\w+): (\d+/\d+)$", health, re.M) == [("up", "1/1"), ("later", "1/1")]
    output = fleet.output()
    assert "exited with" in output
    assert "for database up" in output
    assert PASSWORD not in output


def test_stats_reports_a_database_that_does_not_answer_and_shows_the_others(
    database_url: str,
) -> None:
    gone = urlunsplit(urlsplit(database_url)._replace(path="/outbox_no_such_database"))
    added = outbox_cli(
        "endpoint", "add", "crm", "--channel", "webhook", "--url", "https://crm.example/hook",
        env={"OUTBOX_DATABASE_URL": database_url},
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    env = {"OUTBOX_DATABASE_URLS": f"here={database_url} gone={with_password(gone)}"}
    result = outbox_cli("stats", "--json", env=env)
    assert result.returncode == 1
    assert [(r["database"], r["endpoint"]) for r in json.loads(result.stdout)] == [("here", "crm")]
    assert "database gone:" in result.stderr
    assert "does not exist" in result.stderr
    assert PASSWORD not in result.stderr
    # A command that acts on one database will not guess which.
    which = outbox_cli("endpoint", "list", env=env)
    assert which.returncode == 1
    assert "names 2 databases (here, gone)" in which.stderr
    assert PASSWORD not in which.stderr


def test_one_listen_url_cannot_serve_several_databases_unless_the_fleet_polls(
    database_url: str,
    new_database: Callable[..., str],
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    other = new_database()
    env = {
        "OUTBOX_DATABASE_URLS": f"a={database_url},b={other}",
        "OUTBOX_LISTEN_URL": database_url,
    }
    refused = outbox_cli("worker", env=env)
    assert refused.returncode != 0
    assert "OUTBOX_LISTEN_URL is one database's listener and this worker serves 2" in (
        refused.stderr
    )
    polling = WorkerProcess({"a": database_url, "b": other}, "--no-listen", log_dir=tmp_path,
                            env={"OUTBOX_LISTEN_URL": database_url})  # fmt: skip
    workers.append(polling)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
        started(polling.output(), "a") and started(polling.output(), "b")
    ):
        time.sleep(0.1)
    assert started(polling.output(), "a"), polling.output()
    assert started(polling.output(), "b"), polling.output()
    polling.signal(signal.SIGTERM)
    assert polling.wait(30) == 0, polling.output()
