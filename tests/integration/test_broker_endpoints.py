"""Broker endpoints in the database: the settings only they take, checked by
the endpoint trigger too, and what their target needs, refused at enqueue."""

from __future__ import annotations

import asyncio
import json
import re
import uuid

import asyncpg
import pytest
from click.testing import CliRunner

import outbox
from outbox.cli import main
from outbox.db import migrate
from outbox.errors import InvalidInputError
from outbox.settings.template import TemplateError, parse


async def _add(conn: asyncpg.Connection, name: str, channel: str, url: str, **cols: object) -> None:
    columns = {"name": name, "channel": channel, "url": url, **cols}
    names = ", ".join(columns)
    params = ", ".join(f"${i + 1}" for i in range(len(columns)))
    await conn.execute(
        f"INSERT INTO outbox.endpoints ({names}) VALUES ({params})", *columns.values()
    )


@pytest.mark.parametrize(
    ("channel", "url", "cols", "problem"),
    [
        ("nats", "nats://h", {}, "target: a nats endpoint needs it"),
        ("webhook", "http://h", {"target": "x"}, "target: webhook endpoints do not take it"),
        ("nats", "nats://h", {"target": "x", "exchange": "e"}, "exchange: nats endpoints do not"),
        ("amqp", "amqp://h", {"target": "x", "max_len": 5}, "max_len: amqp endpoints do not"),
        ("redis", "redis://h", {"target": "x", "retain": True}, "retain: redis endpoints do not"),
        ("mqtt", "http://h", {"target": "x"}, "url: is not a URL a mqtt endpoint can send to"),
    ],
)
async def test_the_database_refuses_an_endpoint_that_does_not_fit_its_channel(
    conn: asyncpg.Connection, channel: str, url: str, cols: dict[str, object], problem: str
) -> None:
    with pytest.raises(asyncpg.PostgresError, match=problem):
        await _add(conn, "e1", channel, url, **cols)
    assert await conn.fetchval("SELECT count(*) FROM outbox.endpoints") == 0


async def test_a_setting_the_channel_does_not_take_cannot_be_set_later(
    conn: asyncpg.Connection,
) -> None:
    await _add(conn, "r", "redis", "redis://h", target="s", max_len=10)
    with pytest.raises(asyncpg.PostgresError, match="exchange: redis endpoints do not take it"):
        await conn.execute("UPDATE outbox.endpoints SET exchange = 'x' WHERE name = 'r'")
    with pytest.raises(asyncpg.PostgresError, match="target: a redis endpoint needs it"):
        await conn.execute("UPDATE outbox.endpoints SET target = NULL WHERE name = 'r'")


def test_the_cli_adds_lists_and_refuses(database_url: str) -> None:
    runner = CliRunner()
    db = ["--database-url", database_url]
    added = runner.invoke(main, ["endpoint", "add", "orders", "--channel", "amqp", "--url",
                                 "amqp://app:hunter2@127.0.0.1/", "--exchange", "amq.topic",
                                 "--target", "orders.{key}", *db])  # fmt: skip
    assert added.exit_code == 0, added.output
    listed = runner.invoke(main, ["endpoint", "list", "--json", *db])
    assert "hunter2" not in listed.output
    (row,) = json.loads(listed.output)
    assert row["url"] == "amqp://app:***@127.0.0.1/"
    assert (row["target"], row["exchange"]) == ("orders.{key}", "amq.topic")
    refused = runner.invoke(main, ["endpoint", "add", "n", "--channel", "nats", "--url",
                                   "nats://h", "--target", "a.{who}", *db])  # fmt: skip
    assert refused.exit_code != 0
    assert "{who} is not a field" in refused.output
    wrong = runner.invoke(main, ["endpoint", "add", "w", "--channel", "webhook", "--url",
                                 "https://example.com", "--max-len", "3", *db])  # fmt: skip
    assert wrong.exit_code != 0
    assert "--max-len is for redis endpoints, not webhook" in wrong.output


async def test_enqueue_refuses_what_the_target_lacks_and_inserts_nothing(
    conn: asyncpg.Connection,
) -> None:
    await _add(conn, "n", "nats", "nats://h", target="orders.{key}.{payload.region}")
    refusals = [
        ("key", "uses {key}", lambda: outbox.enqueue(conn, "n", {"region": "eu"})),
        ("payload.region", "is a JSON object",
         lambda: outbox.enqueue(conn, "n", {"region": {"x": 1}}, key="k")),
        ("messages[1].payload.region", "is missing", lambda: outbox.enqueue_many(
            conn,
            [{"endpoint": "n", "payload": {"region": "eu"}, "key": "k"},
             {"endpoint": "n", "payload": {}, "key": "k"}],
        )),
    ]  # fmt: skip
    for field, problem, call in refusals:
        with pytest.raises(InvalidInputError, match=re.escape(problem)) as info:
            async with conn.transaction():
                await call()
        assert info.value.field == field
    assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 0
    async with conn.transaction():
        await outbox.enqueue(conn, "n", {"region": 7}, key="k")
    assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 1


CASES = [
    ("t.{key}", {}, None),
    ("t.{key}", {}, "k"),
    ("t.{payload.a}", {"a": "x"}, None),
    ("t.{payload.a}", {"a": 1.5}, None),
    ("t.{payload.a}", {"a": False}, None),
    ("t.{payload.a}", {"a": None}, None),
    ("t.{payload.a}", {"a": []}, None),
    ("t.{payload.a.b}", {"a": {"b": "x"}}, None),
    ("t.{payload.a.b}", {"a": "b"}, None),
    ("{{payload.a}}.{id}", {}, None),
    ("{{{key}}}", {}, None),
]


@pytest.mark.parametrize(("text", "payload", "key"), CASES)
async def test_the_database_and_the_worker_read_a_target_alike(
    conn: asyncpg.Connection, text: str, payload: dict[str, object], key: str | None
) -> None:
    problem = await conn.fetchval(
        "SELECT outbox._target_problem($1, $2::text::jsonb, $3)", text, json.dumps(payload), key
    )
    field = None
    try:
        parse(text).render(uuid.uuid4(), key, payload)
    except TemplateError as exc:
        field = exc.field
    assert (problem.split("¦")[1] if problem else None) == field


async def test_a_downgrade_to_0004_takes_the_broker_settings_away_and_back(
    database_url: str, conn: asyncpg.Connection
) -> None:
    await _add(conn, "m", "mqtt", "mqtt://h", target="a/{key}", retain=True)
    await asyncio.to_thread(migrate.downgrade, database_url, "0004")
    columns = await conn.fetch(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'outbox' AND table_name = 'endpoints'"
    )
    assert not {"target", "exchange", "max_len", "retain"} & {c[0] for c in columns}
    assert (
        await conn.fetchval("SELECT to_regprocedure('outbox._target_problem(text,jsonb,text)')")
        is None
    )
    await asyncio.to_thread(migrate.upgrade, database_url)
    assert await conn.fetchval("SELECT to_regprocedure('outbox._target_problem(text,jsonb,text)')")
    settings = await conn.fetchval("SELECT settings FROM outbox.channels WHERE name = 'mqtt'")
    assert "retain" in (settings if isinstance(settings, dict) else json.loads(settings))
