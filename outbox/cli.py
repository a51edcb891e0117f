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

from outbox import admin, migrations
from outbox.db import connection
from outbox.errors import InvalidInputError, OutboxError
from outbox.models import EndpointConfig, to_input_error
from outbox.producer import enqueue as _enqueue
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


def _read_payload(value: str) -> dict[str, Any]:
    if value == "-":
        value = sys.stdin.read()
    elif value.startswith("@"):
        try:
            value = Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInputError(
                "--payload", f"cannot read {value[1:]!r}: {exc.strerror}"
            ) from None
    try:
        payload = json.loads(value)
    except json.JSONDecodeError as exc:
        raise InvalidInputError("--payload", f"is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidInputError("--payload", f"must be a JSON object, not {type(payload).__name__}")
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
    migrations.upgrade(url)
    settings = load_settings()
    if settings.max_payload_bytes is not None or settings.dedupe_window_seconds is not None:

        async def apply() -> admin.OutboxConfig:
            async with connection(url) as conn:
                return await admin.set_config(
                    conn,
                    max_payload_bytes=settings.max_payload_bytes,
                    dedupe_window_seconds=settings.dedupe_window_seconds,
                )

        _run(apply())
    click.echo(f"outbox schema is at revision {migrations.head_revision()}")


@main.command("config")
@database_option
@click.option("--max-payload-bytes", type=int, help="Largest payload outbox.enqueue() accepts.")
@click.option(
    "--dedupe-window", type=int, metavar="SECONDS", help="How long idempotency keys last."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def config_cmd(
    ctx: click.Context,
    database_url: str | None,
    max_payload_bytes: int | None,
    dedupe_window: int | None,
    as_json: bool,
) -> None:
    """Show (or change) the limits outbox.enqueue() enforces for every producer."""
    url = _database_url(ctx)

    async def go() -> admin.OutboxConfig:
        async with connection(url) as conn:
            if max_payload_bytes is None and dedupe_window is None:
                return await admin.get_config(conn)
            return await admin.set_config(
                conn, max_payload_bytes=max_payload_bytes, dedupe_window_seconds=dedupe_window
            )

    cfg = _run(go())
    if as_json:
        click.echo(
            json.dumps(
                {
                    "max_payload_bytes": cfg.max_payload_bytes,
                    "dedupe_window_seconds": cfg.dedupe_window_seconds,
                }
            )
        )
    else:
        click.echo(f"max_payload_bytes      {cfg.max_payload_bytes}")
        click.echo(f"dedupe_window_seconds  {cfg.dedupe_window_seconds}")


@main.group()
def endpoint() -> None:
    """Manage endpoints (destinations)."""


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
@click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="Total timeout, seconds."
)
@click.option(
    "--connect-timeout",
    type=float,
    default=5.0,
    show_default=True,
    help="Connect timeout, seconds.",
)
@click.option("--max-attempts", type=int, default=25, show_default=True)
@click.option(
    "--retry-window",
    type=float,
    default=86400,
    show_default=True,
    metavar="SECONDS",
    help="Stop retrying this long after the first attempt.",
)
@click.pass_context
def endpoint_add(
    ctx: click.Context,
    database_url: str | None,
    name: str,
    channel: str,
    url: str | None,
    secret: str | None,
    headers: tuple[str, ...],
    timeout: float,
    connect_timeout: float,
    max_attempts: int,
    retry_window: float,
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
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_attempts=max_attempts,
            retry_window=timedelta(seconds=retry_window),
        )
    except ValidationError as exc:
        raise to_input_error(exc) from None

    async def go() -> None:
        async with connection(db) as conn:
            await admin.add_endpoint(conn, config)

    _run(go())
    click.echo(f"endpoint {name!r} added ({channel})")


@endpoint.command("list")
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def endpoint_list(ctx: click.Context, database_url: str | None, as_json: bool) -> None:
    """List endpoints (secrets are never shown)."""
    db = _database_url(ctx)

    async def go() -> list[admin.EndpointInfo]:
        async with connection(db) as conn:
            return await admin.list_endpoints(conn)

    infos = _run(go())
    if as_json:
        click.echo(json.dumps([i.to_json() for i in infos], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "channel", "url", "secret", "timeout", "max attempts", "unfinished")
    for i in infos:
        table.add_row(
            i.name,
            i.channel,
            i.url or "",
            "set" if i.has_secret else "",
            f"{i.timeout_ms / 1000:g}s",
            str(i.max_attempts),
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
            await admin.remove_endpoint(conn, name)

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
@click.option("--metrics-port", type=int, help="Prometheus metrics port (not implemented yet).")
@click.pass_context
def worker_cmd(ctx: click.Context, /, database_url: str | None, **flags: Any) -> None:
    """Deliver messages until SIGTERM/SIGINT, then stop gracefully.

    A first signal stops claiming, hands back claimed-but-unstarted messages,
    lets deliveries in flight finish (--shutdown-grace) and exits 0; a second
    signal exits at once (leases then expire and other workers retry).
    """
    url = _database_url(ctx)
    if flags.get("metrics_port") is not None:
        click.echo(
            "warning: --metrics-port is not implemented yet; no metrics are served", err=True
        )
    overrides = {k: v for k, v in flags.items() if v is not None and k != "metrics_port"}
    settings = load_settings(**overrides)
    _configure_logging(settings.log_level)
    if settings.processes > 1:
        from outbox.supervisor import Supervisor

        child_args: list[str] = []
        for name, value in overrides.items():
            if name != "processes":
                child_args += [f"--{name.replace('_', '-')}", str(value)]
        supervisor = Supervisor(
            child_args, settings.processes, settings.shutdown_grace, database_url=url
        )
        ctx.exit(supervisor.run())
    from outbox.runner import run_worker

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


def _configure_logging(level: str) -> None:
    import logging

    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request URL at INFO; a Telegram URL holds the bot
    # token. Our own attempt records carry what matters, redacted.
    for noisy in ("httpx", "httpcore", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


BENCH_SCENARIOS = ("enqueue", "drain", "latency", "transport")


@main.command("bench")
@database_option
@click.argument("scenarios", nargs=-1, type=click.Choice(BENCH_SCENARIOS))
@click.option(
    "--rounds", type=int, default=3, show_default=True, help="Rounds per figure (medians)."
)
@click.option(
    "--messages", type=int, default=50_000, show_default=True, help="drain: backlog size."
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
    messages: int,
    rate: float,
    seconds: float,
    as_json: bool,
) -> None:
    """Measure outbox against its ceilings (default: every scenario).

    enqueue: outbox.enqueue() vs a bare INSERT at 1 and 32 producers, and the
    batch form. drain: one worker process vs a raw-SQL claim-and-complete loop.
    latency: commit-to-receipt at a steady rate. transport: httpx vs httpx over
    aiohttp vs bare aiohttp. Without a database URL an embedded PostgreSQL
    (durable settings) is started in a temporary directory.
    """
    import platform
    import tempfile

    from outbox.bench import common

    chosen = scenarios or BENCH_SCENARIOS
    explicit = ctx.params.get("database_url") or load_settings().database_url
    server = None
    if explicit:
        url = _database_url(ctx)
    else:
        from outbox.embedded import EmbeddedPostgres

        server = EmbeddedPostgres(tempfile.mkdtemp(prefix="outbox-bench-") + "/pgdata")
        server.start()
        url = server.url()
    report: dict[str, Any] = {"machine": common.machine_facts(), "results": []}

    def progress(name: str, value: float) -> None:
        if not as_json:
            click.echo(f"  {name}: {value:,.1f}", err=True)

    async def go() -> None:
        from outbox.bench import drain, enqueue, latency, transport
        from outbox.db import connect

        conn = await connect(url)
        report["server"] = await common.server_facts(conn)
        await conn.close()
        for scenario in chosen:
            if not as_json:
                click.echo(f"{scenario} ...", err=True)
            if scenario == "enqueue":
                result = await enqueue.run(url, rounds=rounds, progress=progress)
            elif scenario == "drain":
                result = await drain.run(url, messages=messages, rounds=rounds, progress=progress)
            elif scenario == "latency":
                result = await latency.run(url, rate=rate, seconds=seconds, progress=progress)
            else:
                result = await transport.run(rounds=rounds, progress=progress)
            report["results"].append(result)

    try:
        migrations.upgrade(url)
        _run_event_loop(go())
    finally:
        if server is not None:
            server.stop()
    report["python"] = platform.python_version()
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        from outbox.bench.report import render

        click.echo(render(report))
