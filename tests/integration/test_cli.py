"""The command line: migrate, endpoint add/list/remove, enqueue, config."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest
from click.testing import CliRunner, Result

from outbox.cli import main

COMMANDS = [
    [],
    ["migrate"],
    ["config"],
    ["endpoint"],
    ["endpoint", "add"],
    ["endpoint", "list"],
    ["endpoint", "remove"],
    ["endpoint", "update"],
    ["endpoint", "pause"],
    ["endpoint", "resume"],
    ["endpoint", "unblock"],
    ["enqueue"],
    ["stats"],
    ["dead"],
    ["dead", "list"],
    ["dead", "requeue"],
    ["dead", "purge"],
    ["message"],
    ["message", "show"],
    ["demo"],
    ["roles"],
    ["prune"],
]
GROUPS = (["endpoint"], ["dead"], ["message"])


@pytest.fixture
def run(database_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OUTBOX_DATABASE_URL", database_url)

    def invoke(*args: str, input: str | None = None) -> Result:
        # In a thread: the commands call asyncio.run(), which async tests'
        # running loop would refuse.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(
                CliRunner().invoke, main, list(args), input=input, catch_exceptions=False
            ).result()

    return invoke


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "outbox")
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    if command and command not in GROUPS:
        assert "--database-url" in result.output


def test_migrate_is_idempotent(run) -> None:  # type: ignore[no-untyped-def]
    for _ in range(2):
        result = run("migrate")
        assert result.exit_code == 0, result.output
        assert "revision" in result.output


def test_migrate_writes_limits_from_the_environment(run, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OUTBOX_MAX_PAYLOAD_BYTES", "1000")
    monkeypatch.setenv("OUTBOX_DEDUPE_WINDOW_SECONDS", "3600")
    assert run("migrate").exit_code == 0
    shown = json.loads(run("config", "--json").output)
    assert shown == {
        "max_payload_bytes": 1000,
        "dedupe_window_seconds": 3600,
        "attempts_retention_seconds": 30 * 86400,  # the defaults
        "dead_letters_retention_seconds": 90 * 86400,
        "delivered_retention_seconds": 7 * 86400,
        "alert_endpoint": None,
        "alert_payload": {},
        "alert_interval_seconds": 300,
    }


def test_endpoint_add_list_and_remove(run) -> None:  # type: ignore[no-untyped-def]
    result = run(
        "endpoint",
        "add",
        "orders",
        "--channel",
        "webhook",
        "--url",
        "https://example.test/hook",
        "--secret",
        "whsec_topsecret",
        "--header",
        "Authorization: Bearer tok123",
        "--timeout",
        "3",
        "--max-attempts",
        "7",
    )
    assert result.exit_code == 0, result.output
    listed = json.loads(run("endpoint", "list", "--json").output)
    assert len(listed) == 1
    assert listed[0]["name"] == "orders"
    assert listed[0]["timeout_ms"] == 3000
    assert listed[0]["max_attempts"] == 7
    assert listed[0]["has_secret"] is True
    table = run("endpoint", "list").output
    assert "orders" in table
    for shown in (json.dumps(listed), table):
        assert "whsec_topsecret" not in shown
        assert "tok123" not in shown
    assert run("endpoint", "remove", "orders").exit_code == 0
    assert json.loads(run("endpoint", "list", "--json").output) == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["x", "--channel", "webhook"], "needs --url"),
        (["x", "--channel", "webhook", "--url", "ftp://h/x"], "http:// or https://"),
        (["x", "--channel", "webhook", "--url", "https://user:pw@h/x"], "credentials"),
        (["x", "--channel", "webhook", "--url", "https:///nohost"], "host"),
        (["bad name", "--channel", "null"], "name"),
        (["x", "--channel", "telegram"], "bot token"),
        (["x", "--channel", "telegram", "--secret", "not-a-token"], "does not look like"),
        (["x", "--channel", "null", "--header", "no colon"], "Name: value"),
        (["x", "--channel", "null", "--header", "Host: evil"], "cannot be overridden"),
        (["x", "--channel", "null", "--timeout", "0"], "timeout"),
        (["x", "--channel", "null", "--max-attempts", "0"], "max_attempts"),
    ],
)
def test_endpoint_add_rejects_bad_input(run, args: list[str], words: str) -> None:  # type: ignore[no-untyped-def]
    result = run("endpoint", "add", *args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ")
    assert words in result.output
    assert json.loads(run("endpoint", "list", "--json").output) == []
    assert "not-a-token" not in result.output


def test_adding_an_existing_endpoint_is_refused(run) -> None:  # type: ignore[no-untyped-def]
    assert run("endpoint", "add", "n", "--channel", "null").exit_code == 0
    result = run("endpoint", "add", "n", "--channel", "null")
    assert result.exit_code == 2
    assert "already exists" in result.output


async def test_enqueue_prints_the_id_and_writes_the_row(run, conn: asyncpg.Connection) -> None:  # type: ignore[no-untyped-def]
    assert run("endpoint", "add", "n", "--channel", "null").exit_code == 0
    result = run(
        "enqueue",
        "n",
        "--payload",
        '{"hello": "world"}',
        "--key",
        "k",
        "--idempotency-key",
        "i",
        "--priority",
        "5",
        "--deliver-at",
        "2030-01-01T00:00:00+00:00",
    )
    assert result.exit_code == 0, result.output
    message_id = uuid.UUID(result.output.strip())
    row = await conn.fetchrow("SELECT * FROM outbox.messages WHERE id = $1", message_id)
    assert row is not None
    assert (row["payload"], row["key"], row["idempotency_key"], row["priority"]) == (
        {"hello": "world"},
        "k",
        "i",
        5,
    )
    assert row["available_at"].year == 2030
    again = run("enqueue", "n", "--payload", "{}", "--idempotency-key", "i")
    assert again.output.strip() == str(message_id)


def test_enqueue_reads_the_payload_from_stdin(run) -> None:  # type: ignore[no-untyped-def]
    run("endpoint", "add", "n", "--channel", "null")
    result = run("enqueue", "n", "--payload", "-", input='{"from": "stdin"}')
    assert result.exit_code == 0, result.output
    uuid.UUID(result.output.strip())


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["n", "--payload", "{not json"], "not valid JSON"),
        (["n", "--payload", "[1]"], "must be a JSON object"),
        (["ghost", "--payload", "{}"], "unknown endpoint 'ghost'"),
        (["n", "--payload", "{}", "--priority", "99999"], "priority"),
        (["n", "--payload", "@/nonexistent/file.json"], "cannot read"),
    ],
)
async def test_enqueue_rejects_bad_input(
    run, conn: asyncpg.Connection, args: list[str], words: str
) -> None:  # type: ignore[no-untyped-def]
    run("endpoint", "add", "n", "--channel", "null")
    result = run("enqueue", *args)
    assert result.exit_code == 2, result.output
    assert words in result.output
    assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 0


async def test_removing_an_endpoint_with_unfinished_messages_is_refused(
    run,
    conn: asyncpg.Connection,  # type: ignore[no-untyped-def]
) -> None:
    run("endpoint", "add", "n", "--channel", "null")
    run("enqueue", "n", "--payload", "{}")
    result = run("endpoint", "remove", "n")
    assert result.exit_code == 1
    assert "still has 1 unfinished message" in result.output
    assert await conn.fetchval("SELECT count(*) FROM outbox.endpoints") == 1
    await conn.execute("DELETE FROM outbox.messages")
    assert run("endpoint", "remove", "n").exit_code == 0


def test_removing_an_unknown_endpoint_says_so(run) -> None:  # type: ignore[no-untyped-def]
    result = run("endpoint", "remove", "ghost")
    assert result.exit_code == 2
    assert "unknown endpoint 'ghost'" in result.output


def test_no_database_configured_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OUTBOX_DATABASE_URL", raising=False)
    result = CliRunner().invoke(main, ["endpoint", "list"])
    assert result.exit_code == 1
    assert "OUTBOX_DATABASE_URL" in result.output


@pytest.mark.parametrize(
    "command", [["migrate"], ["endpoint", "list"], ["enqueue", "x", "--payload", "{}"]]
)
def test_a_password_in_the_url_never_reaches_an_error(command: list[str]) -> None:
    url = "postgresql://app:Sup3rS3cretPw@127.0.0.1:1/nowhere"
    result = CliRunner().invoke(main, [*command, "--database-url", url])
    assert result.exit_code != 0
    assert "Sup3rS3cretPw" not in result.output
    assert "error:" in result.output


@pytest.mark.parametrize(
    "command", [["endpoint", "list"], ["dead", "list"], ["stats"], ["config"], ["prune"]]
)
def test_a_database_without_the_schema_gets_one_clear_line_not_a_traceback(
    blank_database_url: str, command: list[str]
) -> None:
    url = blank_database_url.replace("postgres@", "postgres:Sup3rS3cretPw@")  # trust ignores it
    result = CliRunner().invoke(main, [*command, "--database-url", url])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "does not exist" in result.output
    assert "outbox migrate" in result.output
    assert "Sup3rS3cretPw" not in result.output


def test_a_password_in_the_environment_never_reaches_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OUTBOX_DATABASE_URL", "mysql://app:Sup3rS3cretPw@host/db")
    result = CliRunner().invoke(main, ["endpoint", "list"])
    assert result.exit_code == 1
    assert "Sup3rS3cretPw" not in result.output
    assert "OUTBOX_DATABASE_URL" in result.output


async def test_endpoint_policy_flags_round_trip(run, conn: asyncpg.Connection) -> None:  # type: ignore[no-untyped-def]
    result = run(
        "endpoint", "add", "hook", "--channel", "webhook", "--url", "https://example.org/h",
        "--rate", "12.5", "--burst", "3", "--key-interval", "250ms", "--ordered",
        "--on-dead", "block", "--breaker-failures", "7", "--breaker-cooldown", "1m",
        "--breaker-max-cooldown", "2h", "--disable-after", "3d", "--retry-window", "6h",
        "--allow-network", "10.0.0.0/8",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [info] = json.loads(run("endpoint", "list", "--json").output)
    assert {k: info[k] for k in ("rate_limit", "rate_burst", "key_interval_ms", "ordered")} == {
        "rate_limit": 12.5,
        "rate_burst": 3,
        "key_interval_ms": 250,
        "ordered": True,
    }
    assert info["on_dead"] == "block"
    assert info["breaker_failures"] == 7
    assert info["breaker_cooldown_seconds"] == 60
    assert info["breaker_max_cooldown_seconds"] == 7200
    assert info["disable_after_seconds"] == 3 * 86400
    assert info["retry_window_seconds"] == 6 * 3600
    assert info["allow_networks"] == ["10.0.0.0/8"]

    result = run("endpoint", "update", "hook", "--rate", "3", "--clear", "key_interval")
    assert result.exit_code == 0, result.output
    [info] = json.loads(run("endpoint", "list", "--json").output)
    assert info["rate_limit"] == 3
    assert info["key_interval_ms"] is None
    assert info["rate_burst"] == 3  # untouched


def test_telegram_endpoints_get_the_bot_api_limits(run) -> None:  # type: ignore[no-untyped-def]
    token = "123456:" + "A" * 35
    assert run("endpoint", "add", "bot", "--channel", "telegram", "--secret", token).exit_code == 0
    [info] = json.loads(run("endpoint", "list", "--json").output)
    assert (info["rate_limit"], info["key_interval_ms"], info["group_key_interval_ms"]) == (
        30,
        1000,
        3000,
    )


def test_rotating_a_secret_never_prints_it(run, conn) -> None:  # type: ignore[no-untyped-def]
    old, new = "whsec_" + "b2xkLXNlY3JldC1vbGQtb2xkLW9sZA==", "whsec_bmV3LXNlY3JldC1uZXctbmV3"
    run("endpoint", "add", "h", "--channel", "webhook", "--url", "https://e.org", "--secret", old)
    result = run("endpoint", "update", "h", "--secret", new, "--secret-grace", "1h")
    assert result.exit_code == 0, result.output
    listing = run("endpoint", "list").output + run("endpoint", "list", "--json").output
    assert "rotating" in listing
    assert "true" in listing  # rotating_secret
    for secret in (old, new):
        assert secret not in listing
        assert secret not in result.output


async def test_pause_resume_and_unblock(run, conn: asyncpg.Connection) -> None:  # type: ignore[no-untyped-def]
    run("endpoint", "add", "h", "--channel", "null")
    result = run("endpoint", "pause", "h", "--reason", "receiver migration")
    assert result.exit_code == 0, result.output
    assert "paused" in run("endpoint", "list").output
    [info] = json.loads(run("endpoint", "list", "--json").output)
    assert (info["state"], info["state_reason"]) == ("paused", "receiver migration")
    assert await conn.fetchval("SELECT paused_reason FROM outbox.endpoints") == "receiver migration"
    assert run("endpoint", "resume", "h").exit_code == 0
    assert await conn.fetchval("SELECT paused_at FROM outbox.endpoints") is None

    result = run("endpoint", "unblock", "h", "k1")
    assert result.exit_code == 2
    assert "not blocked" in result.output


ADD_X = ["add", "x", "--channel", "webhook", "--url", "http://a/"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["update", "nope", "--rate", "1"], "unknown endpoint 'nope'"),
        (["update", "h"], "nothing to change"),
        (["update", "h", "--rate", "-1"], "rate_limit"),
        (["update", "h", "--breaker-cooldown", "3h"], "breaker_max_cooldown"),
        (["update", "h", "--retry-window", "soon"], "--retry-window: 'soon' is not a duration"),
        (
            [
                "add",
                "x",
                "--channel",
                "webhook",
                "--url",
                "http://a/",
                "--allow-network",
                "10.0.0.300",
            ],
            "'10.0.0.300' is not an address range",
        ),
        (
            ["add", "x", "--channel", "webhook", "--url", "http://a/", "--coalesce", "1s"],
            "for telegram endpoints",
        ),
        (["pause", "nope"], "unknown endpoint 'nope'"),
    ],
)
def test_bad_policy_input_names_the_problem(run, args: list[str], expected: str) -> None:  # type: ignore[no-untyped-def]
    run("endpoint", "add", "h", "--channel", "null")
    result = run("endpoint", *args)
    assert result.exit_code == 2, result.output
    assert expected in result.output


def test_the_readme_destination_controls_commands_run(run) -> None:  # type: ignore[no-untyped-def]
    import shlex
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Destination controls", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = block.replace("\\\n", " ").splitlines()
    assert len(commands) >= 5
    for line in commands:
        args = shlex.split(line, comments=True)
        assert args[0] == "outbox"
        result = run(*args[1:])
        assert result.exit_code == 0, (line, result.output)
