"""Endpoint settings are declared once: one `Setting` (and its column) is all a
new setting takes, and every setting goes the same way through add, update,
clear and list (``--clear coalesce`` was offered by the CLI and refused by
the model when each of those places kept its own list)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import asyncpg
from click.testing import CliRunner

from outbox.cli import main
from outbox.settings import endpoint as declared

TOKEN = "123456789:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


def test_every_clearable_setting_can_be_cleared(database_url: str) -> None:
    def run(*args: str) -> str:
        result = CliRunner().invoke(main, [*args, "--database-url", database_url])
        assert result.exit_code == 0, result.output
        return result.output

    run("endpoint", "add", "tg", "--channel", "telegram", "--secret", TOKEN, "--coalesce", "2s",
        "--allow-network", "10.0.0.0/8")  # fmt: skip
    [before] = json.loads(run("endpoint", "list", "--json"))
    assert (before["coalesce_ms"], before["allow_networks"]) == (2000, ["10.0.0.0/8"])
    clears = [arg for name in declared.clearable() for arg in ("--clear", name)]
    run("endpoint", "update", "tg", *clears)
    [after] = json.loads(run("endpoint", "list", "--json"))
    for name in declared.clearable():
        setting = declared.named(name)
        assert setting is not None
        assert all(v in (None, []) for v in setting.listed(None).values())
        assert [after[key] for key in setting.listed(None)] in ([None], [[]]), name


def test_a_setting_cannot_be_given_and_cleared_at_once(database_url: str) -> None:
    runner = CliRunner()
    runner.invoke(main, ["endpoint", "add", "n", "--channel", "null", "--database-url",
                         database_url])  # fmt: skip
    result = runner.invoke(main, ["endpoint", "update", "n", "--rate", "5", "--clear",
                                  "rate_limit", "--database-url", database_url])  # fmt: skip
    assert result.exit_code == 2
    assert "rate_limit: is both given and cleared" in result.output


MADE_UP = """
import json, sys
from outbox.settings import endpoint
from outbox.settings.kinds import number

# The one declaration a new setting takes.
endpoint.SETTINGS += (
    endpoint.Setting("max_batch", number(int, ge=1, le=100), "--max-batch",
                     "Messages per request (made up by a test).", default=7, clearable=True,
                     worker=True),
)

if sys.argv[1] == "worker-endpoint":  # what a worker's Endpoint holds
    import asyncio
    from outbox.db.connect import connect
    from outbox.deliver.store import PostgresStore

    async def show():
        conn = await connect(sys.argv[2])
        rows = await PostgresStore(conn, worker_id="w", lease_seconds=1).endpoints()
        from outbox.deliver.endpoints import Endpoint
        print(json.dumps({r["name"]: Endpoint.from_row(r, base=1, cap=1).settings["max_batch"]
                          for r in rows}))
        await conn.close()

    asyncio.run(show())
else:
    from outbox.cli import main
    main(sys.argv[1:])
"""


async def test_a_made_up_setting_needs_only_its_declaration(
    database_url: str, conn: asyncpg.Connection
) -> None:
    # The column its revision would add (with the declared default).
    await conn.execute("ALTER TABLE outbox.endpoints ADD COLUMN max_batch integer DEFAULT 7")

    def outbox(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(MADE_UP), *args],
            env={**os.environ, "OUTBOX_DATABASE_URL": database_url},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "--max-batch INTEGER" in outbox("endpoint", "add", "--help")
    assert "[default: 7]" in outbox("endpoint", "add", "--help")
    assert "max_batch" in outbox("endpoint", "update", "--help")  # a --clear choice
    outbox("endpoint", "add", "a", "--channel", "null", "--max-batch", "3")
    outbox("endpoint", "add", "b", "--channel", "null")
    listed = {e["name"]: e["max_batch"] for e in json.loads(outbox("endpoint", "list", "--json"))}
    assert listed == {"a": 3, "b": 7}
    outbox("endpoint", "update", "a", "--max-batch", "5")
    outbox("endpoint", "update", "b", "--clear", "max_batch")
    assert json.loads(outbox("worker-endpoint", database_url)) == {"a": 5, "b": None}
    assert await conn.fetchval("SELECT max_batch FROM outbox.endpoints WHERE name = 'a'") == 5


async def test_the_worker_reads_each_of_its_settings_without_a_type_lookup(
    database_url: str,
) -> None:
    # The worker's endpoint query names the columns of the settings workers load,
    # each as its kind reads it; an array of cidr came back as a type asyncpg
    # had to look up first, on every new connection (~10 ms of a start-up).
    from outbox import operate
    from outbox.deliver.endpoints import Endpoint
    from outbox.deliver.store import worker_endpoints_query
    from outbox.operate.endpoint_config import EndpointConfig

    conn = await asyncpg.connect(database_url)
    try:
        await operate.add_endpoint(conn, EndpointConfig(
            name="hook", channel="webhook", url="http://127.0.0.1:9/h",
            allow_networks=("10.0.0.0/8", "fd00::/8")))  # fmt: skip
    finally:
        await conn.close()
    looked_up: list[object] = []

    class Counting(asyncpg.Connection):  # type: ignore[misc]
        async def _introspect_types(self, *args: Any, **kwargs: Any) -> Any:  # asyncpg's lookup
            looked_up.append(args[0])
            return await super()._introspect_types(*args, **kwargs)

    conn = await asyncpg.connect(database_url, connection_class=Counting)
    try:
        [row] = await conn.fetch(worker_endpoints_query())
        assert looked_up == []
        await conn.fetch("SELECT allow_networks FROM outbox.endpoints")  # the column as it is
        assert len(looked_up) == 1, "no lookup seen: asyncpg changed how it looks types up"
    finally:
        await conn.close()
    endpoint = Endpoint.from_row(row, base=1.0, cap=60.0)
    assert endpoint.settings["allow_networks"] == ("10.0.0.0/8", "fd00::/8")
    assert set(endpoint.settings) == {s.name for s in declared.for_workers()} - {"secret"}
