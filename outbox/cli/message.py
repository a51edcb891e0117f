"""``outbox message show``: where one message is, and every attempt it had;
``outbox message resend`` and ``outbox replay``: send delivered messages again."""

from __future__ import annotations

import json

import asyncpg
import click

from outbox import operate
from outbox.cli.app import database_option, main, on_database
from outbox.cli.inputs import Progress, message_id, when
from outbox.db.queries import QUERIES
from outbox.operate.replay import BATCH, Replayed, replay, replay_total, resend


@main.group("message")
def message() -> None:
    """Look at one message, or send a delivered one again."""


@message.command("show")
@database_option
@click.argument("message_id_text", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def message_show(
    ctx: click.Context, database_url: str | None, message_id_text: str, as_json: bool
) -> None:
    """Where message ID is and its attempt timeline."""
    wanted = message_id(message_id_text)
    story = on_database(ctx, lambda conn: operate.message_story(conn, wanted))
    if as_json:
        click.echo(json.dumps(story.to_json(), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"message {story.id}: [bold]{story.state}[/bold] (endpoint {story.endpoint})")
    shown = (
        "key",
        "attempts",
        "created_at",
        "next_attempt_at",
        "last_error",
        "held",
        "traceparent",
    )
    for field in shown:
        if story.details.get(field) is not None:
            console.print(f"  {field}: {story.details[field]}")
    table = Table("#", "started", "ms", "status", "outcome", "why")
    for a in story.attempts:
        table.add_row(
            str(a["attempt"]),
            str(a["started_at"]),
            f"{a['duration_ms']:.0f}",
            str(a["status_code"] or ""),
            a["outcome"] + (" (replay)" if a.get("replay") else ""),
            a["reason"] or a["error"] or "",
        )
    console.print(table)


@message.command("resend")
@database_option
@click.argument("message_id_text", metavar="ID")
@click.option(
    "--endpoint", default=None, help="Send it to this endpoint instead of its own (same id)."
)
@click.pass_context
def message_resend(
    ctx: click.Context, database_url: str | None, message_id_text: str, endpoint: str | None
) -> None:
    """Send delivered message ID again, from its kept payload (outbox config
    --delivered-retention): same id, an outbox-replay header, and its attempts
    marked replay in the ledger."""
    wanted = message_id(message_id_text)
    sent = on_database(ctx, lambda conn: resend(conn, wanted, endpoint))
    click.echo(f"resent 1 message: {sent}")


@main.command("replay")
@database_option
@click.option("--endpoint", required=True, help="Whose deliveries to send again.")
@click.option("--since", required=True, metavar="WHEN", help="From: a time, or an age (2h).")
@click.option("--until", default=None, metavar="WHEN", help="Until (default: now).")
@click.option("--topic", default=None, metavar="PATTERN", help="Only topics it matches.")
@click.option("--batch", type=click.IntRange(1, 100_000), default=BATCH, show_default=True,
              help="Messages per transaction.")  # fmt: skip
@click.pass_context
def replay_cmd(
    ctx: click.Context, database_url: str | None, endpoint: str, since: str,
    until: str | None, topic: str | None, batch: int,
) -> None:  # fmt: skip
    """Send again everything ENDPOINT was delivered in a window (a receiver lost
    it): oldest first, each message once, same ids, in batches, with progress."""
    start = when(since, "--since")
    end = when(until, "--until")
    assert start is not None

    async def go(conn: asyncpg.Connection) -> Replayed:
        now = await conn.fetchval(QUERIES["database_now"])
        stop = now if end is None else min(end, now)
        seen = [0]
        with Progress("resending", await replay_total(conn, endpoint, start, stop)) as advance:

            def progress(resent: int, skipped: int) -> None:
                advance(resent + skipped - seen[0])
                seen[0] = resent + skipped

            return await replay(
                conn, endpoint, start, stop, topic=topic, batch=batch, progress=progress
            )

    done = on_database(ctx, go)
    skipped = f" ({done.skipped} queued already, skipped)" if done.skipped else ""
    click.echo(f"resent {done.resent} message(s) to {endpoint}{skipped}")
