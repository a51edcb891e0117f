"""The `outbox` command line: thin commands over the library.

Every command takes ``--database-url`` (default: ``OUTBOX_DATABASE_URL``).
Errors print one line naming what was wrong and exit non-zero: 2 for bad
input, 1 for everything else.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from outbox import operate
from outbox.cli import operations as cli_operate
from outbox.db import migrate as db_migrate
from outbox.db.connect import connection
from outbox.errors import InvalidInputError, OutboxError, to_input_error
from outbox.operate.endpoint_config import EndpointConfig, EndpointUpdate, parse_duration
from outbox.produce.enqueue import enqueue as _enqueue
from outbox.settings import load_settings

T = TypeVar("T")

_DB_HELP = "PostgreSQL URL [default: $OUTBOX_DATABASE_URL]"


def _run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def _database_url(ctx: click.Context) -> str:
    explicit = ctx.params.get("database_url")
    if explicit:
        return str(explicit)
    return load_settings().require_database_url()


def database_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--database-url", default=None, metavar="URL", help=_DB_HELP)(func)


def _parse_headers(values: tuple[str, ...]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw in values:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip():
            raise InvalidInputError("--header", f"{raw!r} is not of the form 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers


def _read_payload(value: str, option: str = "--payload") -> dict[str, Any]:
    if value == "-":
        value = sys.stdin.read()
    elif value.startswith("@"):
        try:
            value = Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInputError(option, f"cannot read {value[1:]!r}: {exc.strerror}") from None
    try:
        payload = json.loads(value)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(option, f"is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidInputError(option, f"must be a JSON object, not {type(payload).__name__}")
    return payload


class _Group(click.Group):
    """Prints our errors as one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InvalidInputError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except OutboxError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="outbox")
def main() -> None:
    """outbox: a durable transactional outbox on PostgreSQL.

    Write messages in the same transaction as your business data; workers
    deliver them over HTTP with retries, record every attempt and
    dead-letter what cannot be delivered.
    """


@main.command()
@database_option
@click.pass_context
def migrate(ctx: click.Context, database_url: str | None) -> None:
    """Create or upgrade the outbox schema (idempotent).

    Also writes OUTBOX_MAX_PAYLOAD_BYTES and OUTBOX_DEDUPE_WINDOW_SECONDS to
    outbox.config when they are set.
    """
    url = _database_url(ctx)
    db_migrate.upgrade(url)
    settings = load_settings()
    if settings.max_payload_bytes is not None or settings.dedupe_window_seconds is not None:

        async def apply() -> operate.OutboxConfig:
            async with connection(url) as conn:
                return await operate.set_config(
                    conn,
                    max_payload_bytes=settings.max_payload_bytes,
                    dedupe_window_seconds=settings.dedupe_window_seconds,
                )

        _run(apply())
    click.echo(f"outbox schema is at revision {db_migrate.head_revision()}")


@main.command("config")
@database_option
@click.option("--max-payload-bytes", type=int, help="Largest payload outbox.enqueue() accepts.")
@click.option(
    "--dedupe-window", type=int, metavar="SECONDS", help="How long idempotency keys last."
)
@click.option(
    "--attempts-retention",
    metavar="AGE",
    help="Keep ledger rows this long (e.g. 30d) [default: 30d].",
)
@click.option(
    "--dead-letters-retention",
    metavar="AGE",
    help="Keep dead letters this long (e.g. 90d) [default: 90d].",
)
@click.option(
    "--alert-endpoint",
    metavar="NAME",
    help="Send alerts (dead letters, paused or disabled endpoints) to this endpoint; '' for none.",
)
@click.option(
    "--alert-payload",
    metavar="JSON",
    help="What alert messages start from, e.g. '{\"chat_id\": -1001234}' for Telegram.",
)
@click.option(
    "--alert-interval",
    metavar="AGE",
    help="At most one alert of a kind about an endpoint this often [default: 5m].",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def config_cmd(
    ctx: click.Context,
    database_url: str | None,
    max_payload_bytes: int | None,
    dedupe_window: int | None,
    attempts_retention: str | None,
    dead_letters_retention: str | None,
    alert_endpoint: str | None,
    alert_payload: str | None,
    alert_interval: str | None,
    as_json: bool,
) -> None:
    """Show (or change) the settings every producer and worker shares:
    outbox.enqueue()'s limits and how long history is kept."""
    url = _database_url(ctx)
    keep_attempts = _seconds(attempts_retention, "--attempts-retention")
    keep_dead = _seconds(dead_letters_retention, "--dead-letters-retention")

    payload = _read_payload(alert_payload, "--alert-payload") if alert_payload is not None else None
    every = _seconds(alert_interval, "--alert-interval")

    async def go() -> operate.OutboxConfig:
        async with connection(url) as conn:
            cfg = await operate.get_config(conn)
            if (max_payload_bytes, dedupe_window, keep_attempts, keep_dead) != (None,) * 4:
                cfg = await operate.set_config(
                    conn,
                    max_payload_bytes=max_payload_bytes,
                    dedupe_window_seconds=dedupe_window,
                    attempts_retention_seconds=keep_attempts,
                    dead_letters_retention_seconds=keep_dead,
                )
            if alert_endpoint is not None or payload is not None or every is not None:
                changes: dict[str, Any] = {"payload": payload, "interval_seconds": every}
                if alert_endpoint is not None:
                    changes["endpoint"] = alert_endpoint or None
                cfg = await operate.set_alerts(conn, **changes)
            return cfg

    cfg = _run(go())
    values = {
        "max_payload_bytes": cfg.max_payload_bytes,
        "dedupe_window_seconds": cfg.dedupe_window_seconds,
        "attempts_retention_seconds": cfg.attempts_retention_seconds,
        "dead_letters_retention_seconds": cfg.dead_letters_retention_seconds,
        "alert_endpoint": cfg.alert_endpoint,
        "alert_payload": cfg.alert_payload,
        "alert_interval_seconds": cfg.alert_interval_seconds,
    }
    if as_json:
        click.echo(json.dumps(values))
    else:
        for name, value in values.items():
            click.echo(f"{name:<32}{value}")


def _seconds(value: str | None, option: str) -> int | None:
    return None if value is None else round(parse_duration(value, option).total_seconds())


@main.group()
def endpoint() -> None:
    """Manage endpoints (destinations)."""


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> timedelta | None:
    if value is None:
        return None
    return parse_duration(value, f"--{(param.name or 'duration').replace('_', '-')}")


_POLICY_OPTIONS: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    click.option("--timeout", type=float, help="Total timeout per attempt, seconds [default: 10]."),
    click.option("--connect-timeout", type=float, help="Connect timeout, seconds [default: 5]."),
    click.option("--max-attempts", type=int, help="Attempts before dead-lettering [default: 25]."),
    click.option(
        "--retry-window",
        callback=_duration,
        metavar="DURATION",
        help="Stop retrying this long after the first attempt (e.g. 90s, 2h, 1d) [default: 1d].",
    ),
    click.option(
        "--rate",
        "rate_limit",
        type=float,
        metavar="PER_SECOND",
        help="Messages per second across all workers [telegram default: 30].",
    ),
    click.option(
        "--burst",
        "rate_burst",
        type=int,
        help="Messages the rate lets through at once [default: 1].",
    ),
    click.option(
        "--key-interval",
        callback=_duration,
        metavar="DURATION",
        help="Minimum time between two messages with the same key [telegram default: 1s].",
    ),
    click.option(
        "--group-key-interval",
        callback=_duration,
        metavar="DURATION",
        help="The same for keys starting with '-' (Telegram group chats) [telegram default: 3s].",
    ),
    click.option(
        "--coalesce",
        callback=_duration,
        metavar="DURATION",
        help="Telegram: merge a chat's waiting messages created within this window into one "
        "message (texts joined, up to 4096 characters).",
    ),
    click.option(
        "--ordered/--unordered",
        default=None,
        help="Deliver messages with the same key one at a time, in order [default: unordered].",
    ),
    click.option(
        "--on-dead",
        type=click.Choice(["release", "block"]),
        help="Ordered: when a key's message is dead-lettered, release the key or block it "
        "[default: release].",
    ),
    click.option(
        "--breaker-failures",
        type=int,
        help="Consecutive failures that open the circuit [default: 5].",
    ),
    click.option(
        "--breaker-cooldown",
        callback=_duration,
        metavar="DURATION",
        help="First circuit cool-down; doubles after each failed probe [default: 30s].",
    ),
    click.option(
        "--breaker-max-cooldown",
        callback=_duration,
        metavar="DURATION",
        help="Longest cool-down [default: 1h].",
    ),
    click.option(
        "--disable-after",
        callback=_duration,
        metavar="DURATION",
        help="Disable the endpoint after failing this long without a success [default: 5d].",
    ),
    click.option(
        "--allow-network",
        "allow_networks",
        multiple=True,
        metavar="CIDR",
        help="A non-public address range this webhook may reach (SSRF guard; repeatable).",
    ),
]


def policy_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_POLICY_OPTIONS):
        func = option(func)
    return func


def _policy(options: dict[str, Any]) -> dict[str, Any]:
    """The policy flags given (None: not given), in the models' terms."""
    values = {k: v for k, v in options.items() if v is not None}
    for name in ("key_interval", "group_key_interval", "coalesce"):
        if name in values:
            values[name] = values[name].total_seconds()
    if not values.get("allow_networks"):
        values.pop("allow_networks", None)
    return values


@endpoint.command("add")
@database_option
@click.argument("name")
@click.option("--channel", type=click.Choice(["webhook", "telegram", "null"]), required=True)
@click.option("--url", help="Webhook URL, or the Bot API base URL for telegram.")
@click.option(
    "--secret",
    help="Webhook signing secret or Telegram bot token; env:NAME reads it from $NAME at delivery.",
)
@click.option(
    "--header", "headers", multiple=True, metavar="'Name: value'", help="Extra header (repeatable)."
)
@policy_options
@click.pass_context
def endpoint_add(
    ctx: click.Context,
    /,
    database_url: str | None,
    name: str,
    channel: str,
    url: str | None,
    secret: str | None,
    headers: tuple[str, ...],
    **options: Any,
) -> None:
    """Register endpoint NAME."""
    db = _database_url(ctx)
    try:
        config = EndpointConfig(
            name=name,
            channel=channel,
            url=url,
            secret=secret,
            headers=_parse_headers(headers),
            **_policy(options),
        )
    except ValidationError as exc:
        raise to_input_error(exc) from None

    async def go() -> None:
        async with connection(db) as conn:
            await operate.add_endpoint(conn, config)

    _run(go())
    click.echo(f"endpoint {name!r} added ({channel})")


@endpoint.command("update")
@database_option
@click.argument("name")
@click.option("--url", help="New URL (webhook) or Bot API base URL (telegram).")
@click.option(
    "--secret",
    help="New secret or bot token. A webhook keeps signing with the old one too "
    "for --secret-grace.",
)
@click.option(
    "--secret-grace",
    callback=_duration,
    metavar="DURATION",
    help="How long the previous secret still signs (both signatures are sent) [default: 1d].",
)
@click.option(
    "--header", "headers", multiple=True, metavar="'Name: value'", help="Replace the extra headers."
)
@click.option(
    "--clear",
    multiple=True,
    type=click.Choice(
        ["rate_limit", "key_interval", "group_key_interval", "coalesce", "allow_networks"]
    ),
    help="Remove an optional setting (repeatable).",
)
@policy_options
@click.pass_context
def endpoint_update(
    ctx: click.Context,
    /,
    database_url: str | None,
    name: str,
    url: str | None,
    secret: str | None,
    secret_grace: timedelta | None,
    headers: tuple[str, ...],
    clear: tuple[str, ...],
    **options: Any,
) -> None:
    """Change settings of endpoint NAME; the ones not given stay as they are."""
    db = _database_url(ctx)
    fields: dict[str, Any] = {"clear": frozenset(clear), **_policy(options)}
    if url is not None:
        fields["url"] = url
    if secret is not None:
        fields["secret"] = secret
    if secret_grace is not None:
        fields["secret_grace"] = secret_grace
    if headers:
        fields["headers"] = _parse_headers(headers)
    try:
        changes = EndpointUpdate(**fields)
    except ValidationError as exc:
        raise to_input_error(exc) from None

    async def go() -> None:
        async with connection(db) as conn:
            await operate.update_endpoint(conn, name, changes)

    _run(go())
    click.echo(f"endpoint {name!r} updated")


@endpoint.command("pause")
@database_option
@click.argument("name")
@click.option("--reason", help="Why (shown in endpoint list and outbox.endpoint_health).")
@click.pass_context
def endpoint_pause(
    ctx: click.Context, database_url: str | None, name: str, reason: str | None
) -> None:
    """Stop delivering to NAME now; its messages wait, spending no attempts."""
    db = _database_url(ctx)

    async def go() -> None:
        async with connection(db) as conn:
            await operate.pause_endpoint(conn, name, reason)

    _run(go())
    click.echo(f"endpoint {name!r} paused")


@endpoint.command("resume")
@database_option
@click.argument("name")
@click.pass_context
def endpoint_resume(ctx: click.Context, database_url: str | None, name: str) -> None:
    """Deliver to NAME again (also after it was disabled or its circuit opened)."""
    db = _database_url(ctx)

    async def go() -> None:
        async with connection(db) as conn:
            await operate.resume_endpoint(conn, name)

    _run(go())
    click.echo(f"endpoint {name!r} resumed")


@endpoint.command("unblock")
@database_option
@click.argument("name")
@click.argument("key")
@click.pass_context
def endpoint_unblock(ctx: click.Context, database_url: str | None, name: str, key: str) -> None:
    """Release KEY of ordered endpoint NAME, blocked after a dead letter (--on-dead block)."""
    db = _database_url(ctx)

    async def go() -> int:
        async with connection(db) as conn:
            return await operate.unblock_key(conn, name, key)

    freed = _run(go())
    click.echo(f"key {key!r} of endpoint {name!r} released; {freed} message(s) continue")


@endpoint.command("list")
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def endpoint_list(ctx: click.Context, database_url: str | None, as_json: bool) -> None:
    """List endpoints (secrets are never shown)."""
    db = _database_url(ctx)

    async def go() -> list[operate.EndpointInfo]:
        async with connection(db) as conn:
            return await operate.list_endpoints(conn)

    infos = _run(go())
    if as_json:
        click.echo(json.dumps([i.to_json() for i in infos], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "channel", "url", "secret", "limits", "state", "unfinished")
    for i in infos:
        limits = []
        if i.policy["rate_limit"]:
            limits.append(f"{i.policy['rate_limit']:g}/s")
        if i.policy["key_interval_ms"]:
            limits.append(f"key {i.policy['key_interval_ms'] / 1000:g}s")
        if i.policy["ordered"]:
            limits.append("ordered")
        state = i.state + (f": {i.state_reason}" if i.state_reason else "")
        table.add_row(
            i.name,
            i.channel,
            i.url or "",
            ("set, rotating" if i.policy["rotating_secret"] else "set") if i.has_secret else "",
            ", ".join(limits),
            state,
            str(i.unfinished),
        )
    Console().print(table)


@endpoint.command("remove")
@database_option
@click.argument("name")
@click.pass_context
def endpoint_remove(ctx: click.Context, database_url: str | None, name: str) -> None:
    """Remove endpoint NAME (refused while it has unfinished messages)."""
    db = _database_url(ctx)

    async def go() -> None:
        async with connection(db) as conn:
            await operate.remove_endpoint(conn, name)

    _run(go())
    click.echo(f"endpoint {name!r} removed")


@main.command("enqueue")
@database_option
@click.argument("endpoint_name", metavar="ENDPOINT")
@click.option("--payload", required=True, help="JSON object; @FILE reads a file, - reads stdin.")
@click.option("--key", help="Ordering / rate-limit key.")
@click.option("--idempotency-key", help="Repeats within the dedupe window return the first id.")
@click.option("--priority", type=int, default=0, show_default=True, help="Higher goes first.")
@click.option(
    "--deliver-at",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z"]),
    help="Not before this time (ISO 8601 with a UTC offset).",
)
@click.option(
    "--header", "headers", multiple=True, metavar="'Name: value'", help="Extra header (repeatable)."
)
@click.pass_context
def enqueue_cmd(
    ctx: click.Context,
    database_url: str | None,
    endpoint_name: str,
    payload: str,
    key: str | None,
    idempotency_key: str | None,
    priority: int,
    deliver_at: datetime | None,
    headers: tuple[str, ...],
) -> None:
    """Enqueue one message for ENDPOINT and print its id."""
    db = _database_url(ctx)
    body = _read_payload(payload)
    extra = _parse_headers(headers) or None

    async def go() -> str:
        async with connection(db) as conn, conn.transaction():
            message_id = await _enqueue(
                conn,
                endpoint_name,
                body,
                key=key,
                idempotency_key=idempotency_key,
                priority=priority,
                deliver_at=deliver_at,
                headers=extra,
            )
            return str(message_id)

    click.echo(_run(go()))


@main.command("worker")
@database_option
@click.option("--concurrency", type=int, help="Deliveries in flight per process [default: 100].")
@click.option("--processes", type=int, help="Worker processes under one supervisor [default: 1].")
@click.option("--batch-size", type=int, help="Messages claimed per query [default: 200].")
@click.option("--lease-seconds", type=float, help="How long a claim lasts [default: 60].")
@click.option("--poll-interval", type=float, help="Idle polling period, seconds [default: 1].")
@click.option(
    "--shutdown-grace", type=float, help="Seconds to finish in-flight work [default: 30]."
)
@click.option(
    "--metrics-port",
    type=int,
    help="Serve Prometheus /metrics, /healthz and /readyz on this port (with --processes, "
    "the supervisor serves all children's).",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "text"]),
    help="Log lines as JSON or text [default: auto: text on a terminal, JSON otherwise].",
)
@click.pass_context
def worker_cmd(ctx: click.Context, /, database_url: str | None, **flags: Any) -> None:
    """Deliver messages until SIGTERM/SIGINT, then stop gracefully.

    A first signal stops claiming, hands back claimed-but-unstarted messages,
    lets deliveries in flight finish (--shutdown-grace) and exits 0; a second
    signal exits at once (leases then expire and other workers retry).
    """
    url = _database_url(ctx)
    overrides = {k: v for k, v in flags.items() if v is not None}
    settings = load_settings(**overrides)
    _configure_logging(settings.log_level, settings.log_format)
    if settings.processes > 1:
        from outbox.deliver.supervisor import Supervisor

        child_args: list[str] = []
        for name, value in overrides.items():
            if name not in ("processes", "metrics_port"):  # the supervisor serves metrics
                child_args += [f"--{name.replace('_', '-')}", str(value)]
        supervisor = Supervisor(
            child_args,
            settings.processes,
            settings.shutdown_grace,
            database_url=url,
            metrics_port=settings.metrics_port,
        )
        ctx.exit(supervisor.run())
    from outbox.deliver.runner import run_worker

    code = _run_event_loop(run_worker(url, settings.worker_config(), worker_id=settings.worker_id))
    ctx.exit(code)


def _run_event_loop(coro: Awaitable[T]) -> T:
    """asyncio.run on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return _run(coro)

    async def main() -> T:
        return await coro

    return uvloop.run(main())


def _configure_logging(level: str, fmt: str = "auto") -> None:
    from outbox.deliver.logs import configure

    configure(level, fmt)  # type: ignore[arg-type]  # checked by Settings


def _measured_database(ctx: click.Context) -> tuple[str, Any]:
    """The database to measure on: the one given, or else an embedded PostgreSQL
    (durable settings) started in a temporary directory, returned to be stopped."""
    import tempfile

    explicit = ctx.params.get("database_url") or load_settings().database_url
    if explicit:
        return _database_url(ctx), None
    from outbox.devtools.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(tempfile.mkdtemp(prefix="outbox-bench-") + "/pgdata")
    server.start()
    return server.url(), server


def _drop_measured_database(server: Any) -> None:
    """Stop the embedded server `_measured_database` started, and delete its files."""
    import shutil

    if server is not None:
        server.stop()
        shutil.rmtree(server.data_dir.parent, ignore_errors=True)


BENCH_SCENARIOS = ("enqueue", "drain", "http", "latency", "backlog", "memory", "transport", "stats")


@main.command("bench")
@database_option
@click.argument("scenarios", nargs=-1, type=click.Choice(BENCH_SCENARIOS))
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Rounds per figure (medians).",
)
@click.option(
    "--messages",
    type=click.IntRange(min=100),
    default=None,
    help="drain, http, memory: backlog size [defaults: 50,000, 20,000, 50,000].",
)
@click.option(
    "--backlog",
    "backlog_messages",
    type=click.IntRange(min=100),
    default=1_000_000,
    show_default=True,
    help="backlog: messages to drain.",
)
@click.option("--rate", type=float, default=500.0, show_default=True, help="latency: messages/s.")
@click.option("--seconds", type=float, default=10.0, show_default=True, help="latency: duration.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_context
def bench_cmd(
    ctx: click.Context,
    /,
    database_url: str | None,
    scenarios: tuple[str, ...],
    rounds: int,
    messages: int | None,
    backlog_messages: int,
    rate: float,
    seconds: float,
    as_json: bool,
) -> None:
    """Measure outbox against its ceilings (default: every scenario).

    enqueue: outbox.enqueue() vs a bare INSERT at 1 and 32 producers, and the
    batch form. drain: one worker process vs a raw-SQL claim-and-complete loop.
    http: one worker delivering webhooks (ledger included) to a receiver process
    vs a bare aiohttp client posting to it.
    latency: commit-to-receipt at a steady rate. backlog: the first and the last
    tenth of a 1,000,000-message drain. memory: a worker's peak resident memory
    at --concurrency 500. transport: httpx vs httpx over aiohttp vs bare aiohttp.
    stats: SELECT * FROM outbox.stats with 1,000,000 ledger rows in the last
    hour and 100,000 queued messages (written and removed again). Without a
    database URL an embedded PostgreSQL (durable settings) is started in a
    temporary directory.
    """
    import platform

    from outbox.devtools.bench import common

    chosen = scenarios or BENCH_SCENARIOS
    url, server = _measured_database(ctx)
    report: dict[str, Any] = {"machine": common.machine_facts(), "results": []}
    common.BARS = not as_json

    def progress(name: str, value: float) -> None:
        if not as_json:
            click.echo(f"  {name}: {value:,.1f}", err=True)

    async def go() -> None:
        from outbox.db.connect import connect
        from outbox.devtools.bench import (
            backlog,
            drain,
            enqueue,
            http,
            latency,
            memory,
            stats,
            transport,
        )

        sized = {"messages": messages} if messages else {}
        conn = await connect(url)
        report["server"] = await common.server_facts(conn)
        await conn.close()
        for scenario in chosen:
            if not as_json:
                click.echo(f"{scenario} ...", err=True)
            if scenario == "enqueue":
                result = await enqueue.run(url, rounds=rounds, progress=progress)
            elif scenario == "drain":
                result = await drain.run(url, rounds=rounds, progress=progress, **sized)
            elif scenario == "latency":
                result = await latency.run(
                    url, rate=rate, seconds=seconds, rounds=rounds, progress=progress
                )
            elif scenario == "backlog":
                result = await backlog.run(
                    url, messages=backlog_messages, rounds=rounds, progress=progress
                )
            elif scenario == "memory":
                result = await memory.run(url, rounds=rounds, progress=progress, **sized)
            elif scenario == "stats":
                result = await stats.run(url, progress=progress)
            elif scenario == "http":
                result = await http.run(url, rounds=rounds, progress=progress, **sized)
            else:
                result = await transport.run(rounds=rounds, progress=progress)
            report["results"].append(result)

    try:
        db_migrate.upgrade(url)
        _run_event_loop(go())
    finally:
        _drop_measured_database(server)
    report["python"] = platform.python_version()
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        from outbox.devtools.bench.report import render

        click.echo(render(report))


@main.command("soak")
@database_option
@click.option("--minutes", type=click.FloatRange(min=1), default=30.0, show_default=True)
@click.option(
    "--rate", type=click.FloatRange(min=1), default=1000.0, show_default=True, help="Messages/s."
)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=100, show_default=True)
@click.option(
    "--fail-share",
    type=click.FloatRange(0, 1),
    default=0.02,
    show_default=True,
    help="Share of requests the receiver answers with 503.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_context
def soak_cmd(
    ctx: click.Context,
    /,
    database_url: str | None,
    minutes: float,
    rate: float,
    workers: int,
    concurrency: int,
    fail_share: float,
    as_json: bool,
) -> None:
    """Constant load for a long time; memory and throughput minute by minute.

    A producer commits --rate webhook messages a second; --workers worker
    processes deliver them to a local receiver that answers --fail-share of
    requests with 503. Each minute: enqueued, delivered and failed (from
    outbox.throughput), delivery latency, queue length, each worker's
    resident memory and the outbox tables' size; lines follow wall-clock
    minutes, the first being the part of a minute the run started in. Without
    a database URL an embedded PostgreSQL is started in a temporary directory.
    """
    from outbox.devtools.bench import common, soak

    url, server = _measured_database(ctx)

    def line(minute: soak.Minute) -> None:
        click.echo(soak.render_minute(minute), err=as_json)  # with --json, on stderr

    try:
        db_migrate.upgrade(url)
        result = _run_event_loop(
            soak.run(
                url,
                minutes=minutes,
                rate=rate,
                workers=workers,
                concurrency=concurrency,
                fail_share=fail_share,
                on_minute=line,
            )
        )
    finally:
        _drop_measured_database(server)
    report = result.to_json() | {"machine": common.machine_facts()}
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        click.echo(json.dumps(report["summary"], indent=2))


# `outbox stats`, `outbox dead ...`, `outbox message show`.
cli_operate.register(main, database_option, _database_url, _run)
