"""``outbox enqueue``: one message, in a transaction of its own."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
import click

from outbox.cli.app import database_option, main, on_database
from outbox.cli.inputs import parse_headers, read_payload
from outbox.produce.enqueue import enqueue


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
@click.option(
    "--traceparent",
    envvar="TRACEPARENT",
    help="W3C trace context the receiver's trace joins (default: $TRACEPARENT, as a traced "
    "parent process passes it).",
)
@click.option("--tracestate", envvar="TRACESTATE", help="W3C tracestate (default: $TRACESTATE).")
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
    traceparent: str | None,
    tracestate: str | None,
) -> None:
    """Enqueue one message for ENDPOINT and print its id."""
    body = read_payload(payload)
    extra = parse_headers(headers) or None

    async def go(conn: asyncpg.Connection) -> uuid.UUID:
        async with conn.transaction():
            return await enqueue(
                conn,
                endpoint_name,
                body,
                key=key,
                idempotency_key=idempotency_key,
                priority=priority,
                deliver_at=deliver_at,
                headers=extra,
                traceparent=traceparent,
                tracestate=tracestate,
            )

    click.echo(str(on_database(ctx, go)))
