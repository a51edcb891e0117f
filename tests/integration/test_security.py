"""Security, black-box: injection strings land as data, secrets stay out of every
place text is kept, the SSRF guard holds through names and redirects, the
producer role is fenced in, and what a worker sends verifies independently.

Complements test_roles.py, test_telegram.py (the bot token), the SSRF cases
in test_destination_controls.py, tests/unit/test_ssrf.py and test_signing.py.
Everything goes through the worker, the CLI, the public API and the ledger:
no test here imports the webhook channel's internals.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import pytest
from click.testing import CliRunner, Result
from pydantic import SecretStr
from support import add_endpoint, running_worker, until

import outbox
from outbox import operate
from outbox.cli import main
from outbox.devtools.receiver import OK, Action, Receiver

INJECTIONS = [
    "'; DROP TABLE outbox.messages; --",
    "$$; DROP TABLE outbox.attempts; $$",
    "\\'; DELETE FROM outbox.endpoints; --\\",
    '" OR 1=1 --',
    "%s%s%s %(x)s {} {0} :name $1",
    "\u2019; DROP TABLE outbox.dead_letters; --\u201d",
    "x' || pg_sleep(5) || '",
]


def ascii_only(text: str) -> str:
    """Header values stay ASCII here: a non-ASCII one is accepted and never delivered
    (a known bug, test_fuzz.py::test_a_header_value_enqueue_accepts_is_delivered)."""
    return text.encode("ascii", "replace").decode()


def cli(database_url: str, *args: str) -> Result:
    """``outbox ARGS`` against ``database_url`` (in a thread: the CLI runs its own loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(
            CliRunner().invoke,
            main,
            list(args),
            env={"OUTBOX_DATABASE_URL": database_url, "COLUMNS": "300"},
        ).result()


async def outbox_tables(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT c.relname, c.relkind FROM pg_class AS c JOIN pg_namespace AS n"
        " ON n.oid = c.relnamespace WHERE n.nspname = 'outbox' ORDER BY 1"
    )
    return [(r["relname"], r["relkind"]) for r in rows]


def as_json(value: Any) -> Any:
    """A jsonb column's value, whichever codec the connection has."""
    return json.loads(value) if isinstance(value, str) else value


async def none_left(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT count(*) = 0 FROM outbox.messages"))


# -- SQL injection ------------------------------------------------------------------


async def test_injection_strings_in_every_text_field_land_as_data(
    database_url: str, conn: asyncpg.Connection
) -> None:
    tables = await outbox_tables(conn)
    with Receiver() as rx:
        # Endpoint names: the CLI refuses them by their pattern, with nothing written.
        for text in INJECTIONS:
            refused = cli(database_url, "endpoint", "add", text, "--channel", "null")
            assert refused.exit_code != 0
            assert "name" in refused.output.lower()
        assert await conn.fetchval("SELECT count(*) FROM outbox.endpoints") == 0
        # Header values, URL queries and pause reasons go in through the CLI...
        for i, text in enumerate(INJECTIONS):
            query = base64.urlsafe_b64encode(text.encode()).decode()
            url = rx.url(f"/in{i}?q={query}&raw=%27%3B--")
            header = ascii_only(text)
            added = cli(
                database_url, "endpoint", "add", f"inj{i}", "--channel", "webhook",
                "--url", url, "--header", f"X-Inj: {header}",
            )  # fmt: skip
            assert added.exit_code == 0, added.output
            row = await conn.fetchrow(
                "SELECT url, headers FROM outbox.endpoints WHERE name = $1", f"inj{i}"
            )
            assert row is not None
            assert row["url"] == url
            assert as_json(row["headers"]) == {"X-Inj": header}
        paused = cli(database_url, "endpoint", "pause", "inj0", "--reason", INJECTIONS[0])
        assert paused.exit_code == 0, paused.output
        reason = await conn.fetchval(
            "SELECT paused_reason FROM outbox.endpoints WHERE name = 'inj0'"
        )
        assert reason == INJECTIONS[0]
        assert cli(database_url, "endpoint", "resume", "inj0").exit_code == 0
        # ...keys, idempotency keys, payloads and message headers through the API and SQL.
        sent: dict[str, tuple[int, str]] = {}
        for i, text in enumerate(INJECTIONS):
            async with conn.transaction():
                api_id = await outbox.enqueue(
                    conn, f"inj{i}", {text: text, "n": [text]},
                    key=text, idempotency_key=text, headers={"X-Msg": ascii_only(text)},
                )  # fmt: skip
                sql_id = await conn.fetchval(
                    "SELECT outbox.enqueue($1, $2::jsonb, $3, $4)",
                    f"inj{i}", json.dumps({"sql": text}), text, text + "#sql",
                )  # fmt: skip
            sent[str(api_id)] = (i, text)
            sent[str(sql_id)] = (i, text)
            stored = await conn.fetchrow(
                "SELECT key, idempotency_key, payload, headers FROM outbox.messages WHERE id = $1",
                api_id,
            )
            assert stored is not None
            assert (stored["key"], stored["idempotency_key"]) == (text, text)
            assert as_json(stored["payload"]) == {text: text, "n": [text]}
            assert as_json(stored["headers"]) == {"X-Msg": ascii_only(text)}
        async with running_worker(database_url):
            await until(lambda: none_left(conn))
    # They arrived as data, byte for byte.
    arrived = rx.by_id()
    assert set(arrived) == set(sent)
    for message_id, (i, text) in sent.items():
        [got] = arrived[message_id]
        assert got.headers["X-Inj"] == ascii_only(text).strip()
        assert got.path == f"/in{i}"
        body = got.json()
        assert body in ({text: text, "n": [text]}, {"sql": text})
        if "sql" not in body:
            assert got.headers["X-Msg"] == ascii_only(text).strip()
    # The operators' filters take them as values too.
    dead_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO outbox.dead_letters (message_id, endpoint, payload, attempts, last_error,"
        " reason, created_at, dead_at, key)"
        " VALUES ($1, 'inj1', '{}', 1, $2, 'x', now(), now(), $2)",
        dead_id,
        INJECTIONS[1],
    )
    for text in INJECTIONS:
        listed = cli(database_url, "dead", "list", "--error", text, "--json")
        assert listed.exit_code == 0, listed.output
        expected = [str(dead_id)] if text == INJECTIONS[1] else []
        assert [d["message_id"] for d in json.loads(listed.output)] == expected
        by_endpoint = cli(database_url, "dead", "list", "--endpoint", text, "--json")
        assert by_endpoint.exit_code == 0, by_endpoint.output
        assert json.loads(by_endpoint.output) == []
        requeued = cli(database_url, "dead", "requeue", "--endpoint", text)
        assert requeued.exit_code == 0, requeued.output
        shown = cli(database_url, "message", "show", text)
        assert shown.exit_code != 0
        assert "Traceback" not in shown.output
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 1
    assert await outbox_tables(conn) == tables
    assert await conn.fetchval("SELECT count(*) FROM outbox.endpoints") == len(INJECTIONS)
    delivered = await conn.fetchval(
        "SELECT count(*) FROM outbox.attempts WHERE outcome = 'delivered'"
    )
    assert delivered == len(sent)


# -- secrets ------------------------------------------------------------------------

SIGNING_KEY = b"signing-key-that-must-never-leak-0123456789"
SECRET = "whsec_" + base64.b64encode(SIGNING_KEY).decode()
PLAIN_SECRET = "plain-secret-never-in-a-log-9f8e7d6c"
DB_PASSWORD = "db-password-never-in-a-log-5a4b3c"


def verify(secret: str, headers: Any, body: bytes) -> bool:
    """Standard Webhooks, written from the specification: HMAC-SHA256 over
    ``id.timestamp.body`` with the base64-decoded ``whsec_`` key (or the secret's
    bytes), base64, in a space-separated list of ``v1,<signature>``."""
    key = (
        base64.b64decode(secret[len("whsec_") :])
        if secret.startswith("whsec_")
        else secret.encode()
    )
    signed = b".".join(
        [headers["webhook-id"].encode(), headers["webhook-timestamp"].encode(), body]
    )
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        entry.startswith("v1,") and hmac.compare_digest(entry[3:], expected)
        for entry in headers["webhook-signature"].split(" ")
    )


async def test_secrets_stay_out_of_logs_rows_views_and_commands_under_failing_deliveries(
    database_url: str,
    conn: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every kind of failure, receivers that echo the secret back, then a look at
    every place text is kept; every arrival's signature verifies independently."""

    def script(path: str, _id: str | None, nth: int) -> Action:
        # The receiver quotes the endpoint's own secret back (a misconfigured one might).
        echo = f"bad signature; we expected {PLAIN_SECRET if path == '/retry' else SECRET}"
        faults = {
            "/500": Action(500, body=echo),
            "/reset": Action(reset=True),
            "/hang": Action(delay=1.0),
            "/401": Action(401, body=echo),
            "/retry": Action(503, body=echo) if nth == 1 else OK,
        }
        return faults.get(path, OK)

    caplog.set_level(logging.DEBUG)
    with Receiver(script) as rx:
        for path in ("/500", "/reset", "/hang", "/401", "/retry"):
            secret = PLAIN_SECRET if path == "/retry" else SECRET
            await add_endpoint(
                conn, path.strip("/"), rx.url(path), secret=secret, timeout_ms=300, max_attempts=2
            )
        await add_endpoint(conn, "refused", "http://127.0.0.1:1/x", secret=SECRET, max_attempts=2)
        await add_endpoint(
            conn, "nodns", "http://no-such-host.invalid/x", secret=SECRET, max_attempts=2
        )
        names = ["500", "reset", "hang", "401", "retry", "refused", "nodns"]
        async with conn.transaction():
            ids = await outbox.enqueue_many(
                conn, [{"endpoint": n, "payload": {"to": n}} for n in names]
            )
        async with running_worker(database_url):
            await until(lambda: none_left(conn), within=40)
        # A worker given a wrong database password: its error names no password.
        bad_url = database_url.replace("postgres@", f"no_such_role:{DB_PASSWORD}@", 1)
        assert DB_PASSWORD in bad_url
        with pytest.raises(asyncpg.PostgresError) as refused:
            async with running_worker(bad_url):
                pass
        error_texts = [str(refused.value), repr(refused.value)]
    # Everything that arrived was signed, and verifies with an independent implementation.
    arrivals = rx.snapshot()
    assert len(arrivals) >= 7
    for got in arrivals:
        secret = PLAIN_SECRET if got.path == "/retry" else SECRET
        assert verify(secret, got.headers, got.body), got.path
        assert not verify(secret, got.headers, got.body + b" ")
        assert got.headers["webhook-id"] in {str(i) for i in ids}
    places = [caplog.text, *error_texts]
    for table in ("attempts", "dead_letters", "messages", "endpoint_health", "stats",
                  "throughput", "blocked_keys", "endpoint_state", "attempt_minutes"):  # fmt: skip
        rows = await conn.fetch(f"SELECT * FROM outbox.{table}")
        places.append(json.dumps([dict(r) for r in rows], default=str))
    for args in (
        ["endpoint", "list", "--json"],
        ["endpoint", "list"],
        ["dead", "list", "--json"],
        ["stats", "--json"],
        *(["message", "show", str(i), "--json"] for i in ids),
    ):
        result = await asyncio.to_thread(cli, database_url, *args)
        assert result.exit_code == 0, (args, result.output)
        places.append(result.output)
    leaks = [SECRET, SECRET[len("whsec_") :], PLAIN_SECRET, SIGNING_KEY.decode(), DB_PASSWORD]
    for text in places:
        for secret in leaks:
            assert secret not in text, (secret, text[:2000])
    # The checks looked at real failures: each kind is on record.
    errors = " ".join(
        r["error"] or "" for r in await conn.fetch("SELECT error FROM outbox.attempts")
    )
    for words in ("HTTP 500", "HTTP 401", "HTTP 503"):
        assert words in errors
    excerpts = await conn.fetch(
        "SELECT response_excerpt FROM outbox.attempts WHERE status_code IN (500, 401, 503)"
    )
    assert excerpts
    assert all("we expected ***" in r["response_excerpt"] for r in excerpts)
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 6


# -- the SSRF guard -------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "[::1]",
        "0x7f000001",  # 127.0.0.1, spelled so only the resolver sees it
        "127.1",
        socket.gethostname(),  # this machine's name, /etc/hosts: a loopback address
    ],
)
async def test_the_guard_refuses_inward_addresses_behind_other_spellings(
    database_url: str, conn: asyncpg.Connection, host: str
) -> None:
    with Receiver() as rx:
        await add_endpoint(conn, "inside", f"http://{host}:{rx.port}/hook")
        async with conn.transaction():
            await outbox.enqueue(conn, "inside", {"a": 1})
        async with running_worker(database_url, allow=()):
            await until(lambda: none_left(conn))
        assert rx.snapshot() == []
    dead = await conn.fetchrow("SELECT reason, attempts FROM outbox.dead_letters")
    assert dead is not None
    assert dead["attempts"] == 1
    assert "refused" in dead["reason"] or "canonical" in dead["reason"], dead["reason"]
    attempt = await conn.fetchrow("SELECT status_code, error FROM outbox.attempts")
    assert attempt is not None
    assert attempt["status_code"] is None


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_inward_is_never_followed(
    database_url: str, conn: asyncpg.Connection, status: int
) -> None:
    """An allowed receiver answers 3xx towards the metadata service or another
    local server: the attempt records the 3xx and nothing else is contacted."""
    with Receiver() as inner:
        targets = {
            "/meta": "http://169.254.169.254/latest/meta-data/",
            "/inner": inner.url("/stolen"),
        }

        def bounce(path: str, _id: str | None, _nth: int) -> Action:
            return Action(status, headers={"Location": targets[path]})

        with Receiver(bounce) as outer:
            await add_endpoint(conn, "meta", outer.url("/meta"), max_attempts=1)
            await add_endpoint(conn, "inner", outer.url("/inner"), max_attempts=1)
            async with conn.transaction():
                for name in ("meta", "inner"):
                    await outbox.enqueue(conn, name, {"to": name})
            async with running_worker(database_url):  # loopback allowed: the guard is not why
                await until(lambda: none_left(conn))
            assert sorted(r.path for r in outer.snapshot()) == ["/inner", "/meta"]
        assert inner.snapshot() == []
    rows = await conn.fetch("SELECT endpoint, status_code, outcome, reason FROM outbox.attempts")
    assert sorted((r["endpoint"], r["status_code"], r["outcome"]) for r in rows) == [
        ("inner", status, "dead"),
        ("meta", status, "dead"),
    ]
    assert all("redirects are not followed" in r["reason"] for r in rows)


# -- the producer role ------------------------------------------------------------------


async def test_the_producer_cannot_read_forge_or_run_what_is_not_its_own(
    database_url: str, conn: asyncpg.Connection
) -> None:
    await operate.apply_roles(conn)
    await conn.execute(
        "INSERT INTO outbox.endpoints (name, channel, url, secret) VALUES"
        " ('hook', 'webhook', 'http://127.0.0.1:9/', $1)",
        SECRET,
    )
    producer = await asyncpg.connect(database_url)
    try:
        await producer.execute("SET ROLE outbox_producer")
        async with producer.transaction():
            mine = await outbox.enqueue(producer, "hook", {"a": 1}, idempotency_key="k")
        for forbidden in (
            "SELECT * FROM outbox.config",
            "SELECT alert_endpoint FROM outbox.config",
            "UPDATE outbox.config SET max_payload_bytes = 1000000000",
            "UPDATE outbox.endpoints SET paused_at = now()",
            "INSERT INTO outbox.endpoints (name, channel) VALUES ('evil', 'null')",
            "DELETE FROM outbox.endpoints",
            "SELECT url FROM outbox.endpoints",
            "SELECT headers FROM outbox.endpoints",
            "SELECT previous_secret FROM outbox.endpoints",
            "INSERT INTO outbox.attempts (message_id, endpoint, attempt, started_at,"
            " duration_ms, outcome) VALUES (gen_random_uuid(), 'hook', 1, now(), 1, 'delivered')",
            "INSERT INTO outbox.dead_letters (message_id, endpoint, payload, attempts)"
            " VALUES (gen_random_uuid(), 'hook', '{}', 1)",
            "DELETE FROM outbox.dead_letters",
            "TRUNCATE outbox.messages",
            "TRUNCATE outbox.attempts",
            "UPDATE outbox.idempotency_keys SET endpoint = 'other'",
            "DELETE FROM outbox.idempotency_keys",
            "INSERT INTO outbox.messages (endpoint, payload) VALUES ('hook', '{}')"
            " RETURNING payload",
            "SELECT * FROM outbox.throughput",
            "SELECT * FROM outbox.endpoint_health",
            "SELECT * FROM outbox.blocked_keys",
            "SELECT * FROM outbox.attempt_minutes",
            "SELECT * FROM outbox.key_blocks",
            "SELECT outbox._report_health('{hook}', '{1}', '{0}', '{0}', '{x}', '{1}', '{x}')",
            "SELECT * FROM outbox._claim_endpoint('hook', 10, gen_random_uuid(), 60, 'w', 1, 0.5)",
            "SELECT * FROM outbox._pick('hook', 10, false, false, 0, 0, NULL, 0, 0, NULL)",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with producer.transaction():
                    await producer.execute(forbidden)
    finally:
        await producer.close()
    assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 1
    assert await conn.fetchval("SELECT id FROM outbox.messages") == mine
    assert await conn.fetchval("SELECT count(*) FROM outbox.endpoints") == 1
    assert await conn.fetchval("SELECT max_payload_bytes FROM outbox.config") == 262144


async def test_the_producer_cannot_read_the_stats_through_their_function(
    database_url: str, conn: asyncpg.Connection
) -> None:
    await operate.apply_roles(conn)
    await conn.execute("INSERT INTO outbox.endpoints (name, channel) VALUES ('private', 'null')")
    producer = await asyncpg.connect(database_url)
    try:
        await producer.execute("SET ROLE outbox_producer")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await producer.fetch("SELECT * FROM outbox.stats")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await producer.fetch("SELECT endpoint, pending FROM outbox._stats()")
    finally:
        await producer.close()


async def test_a_row_the_database_refuses_is_reported_without_its_secret(
    conn: asyncpg.Connection,
) -> None:
    """Past the model's checks (model_construct skips them), a CHECK the database
    enforces still refuses the row; the error names a field, never the row (whose
    detail would show the secret), and nothing is written."""
    from outbox.operate.endpoint_config import EndpointConfig
    from outbox.settings import endpoint as declared

    defaults = {s.name: s.default for s in declared.SETTINGS}
    config = EndpointConfig.model_construct(
        name="leaky",
        channel="webhook",
        **defaults
        | {
            "url": "https://example.com/",
            "secret": SecretStr("whsec_dbsecret"),
            "max_attempts": 0,  # endpoints_max_attempts_range
        },
    )
    with pytest.raises(outbox.InvalidInputError) as caught:
        await operate.add_endpoint(conn, config)
    assert "dbsecret" not in str(caught.value)
    assert caught.value.__suppress_context__  # the driver's error, row and all, is not chained
    assert await conn.fetchval("SELECT count(*) FROM outbox.endpoints") == 0
