"""``outbox dead list|requeue|purge``: look at, resend and delete dead letters."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import asyncpg
import click

from outbox import operate
from outbox.cli.app import database_option, main, on_database
from outbox.cli.inputs import Progress, message_id, when
from outbox.settings.values import parse_duration


@main.group("dead")
def dead() -> None:
    """Look at, requeue and purge dead letters."""


@dead.command("list")
@database_option
@click.option("--endpoint", help="Only this endpoint's.")
@click.option("--since", metavar="WHEN", help="Dead since: a time (ISO 8601) or an age (2h).")
@click.option("--error", "error_text", metavar="TEXT", help="Text in the last error or reason.")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, payloads included.")
@click.pass_context
def dead_list(
    ctx: click.Context,
    database_url: str | None,
    endpoint: str | None,
    since: str | None,
    error_text: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List dead letters, newest first."""
    since_at = when(since, "--since")
    letters = on_database(
        ctx,
        lambda conn: operate.dead_letters(
            conn, endpoint=endpoint, since=since_at, error=error_text, limit=limit
        ),
    )
    if as_json:
        click.echo(json.dumps([d.to_json() for d in letters], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("message", "endpoint", "key", "attempts", "dead at", "why")
    for d in letters:
        table.add_row(
            str(d.message_id),
            d.endpoint,
            d.key or "",
            str(d.attempts),
            d.dead_at.isoformat(timespec="seconds"),
            d.reason or d.last_error or "",
        )
    Console().print(table)
    if len(letters) == limit:
        click.echo(f"(the newest {limit}; --limit for more)", err=True)


@dead.command("requeue")
@database_option
@click.argument("ids", nargs=-1)
@click.option("--endpoint", help="All of this endpoint's.")
@click.option("--since", metavar="WHEN", help="Dead at or after: a time or an age (2h).")
@click.option("--until", metavar="WHEN", help="Dead before: a time or an age.")
@click.option("--error", metavar="TEXT", help="Text in the last error or the reason.")
@click.option("--all", "everything", is_flag=True, help="Every dead letter.")
@click.pass_context
def dead_requeue(
    ctx: click.Context,
    database_url: str | None,
    ids: tuple[str, ...],
    endpoint: str | None,
    since: str | None,
    until: str | None,
    error: str | None,
    everything: bool,
) -> None:
    """Send dead letters again: by IDS, by endpoint and time range, or --all.

    They are due at once and their attempts start from zero; their history
    stays in outbox.attempts. Same message id, so receivers still deduplicate.
    """
    id_list = [message_id(i) for i in ids] if ids else None
    since_at, until_at = when(since, "--since"), when(until, "--until")

    async def go(conn: asyncpg.Connection) -> int:
        total = None
        if id_list is None:
            total = await operate.count_dead(
                conn, endpoint=endpoint, since=since_at, until=until_at, error=error
            )
        with Progress("requeueing", total) as advance:
            return await operate.requeue(
                conn,
                ids=id_list,
                endpoint=endpoint,
                since=since_at,
                until=until_at,
                error=error,
                everything=everything,
                progress=advance,
            )

    moved = on_database(ctx, go)
    click.echo(f"{moved} dead letter(s) requeued")
    if id_list is not None and moved < len(id_list):
        click.echo(
            f"{len(id_list) - moved} id(s) not requeued: not dead letters, or their "
            "endpoint no longer exists",
            err=True,
        )


@dead.command("purge")
@database_option
@click.option(
    "--older-than", required=True, metavar="AGE", help="Delete those dead longer (e.g. 30d)."
)
@click.option("--endpoint", help="Only this endpoint's.")
@click.pass_context
def dead_purge(
    ctx: click.Context, database_url: str | None, older_than: str, endpoint: str | None
) -> None:
    """Delete old dead letters for good (their ledger rows stay)."""
    age = parse_duration(older_than, "--older-than")

    async def go(conn: asyncpg.Connection) -> int:
        total = await operate.count_dead(conn, endpoint=endpoint, until=datetime.now(UTC) - age)
        with Progress("purging", total) as advance:
            return await operate.purge(conn, older_than=age, endpoint=endpoint, progress=advance)

    click.echo(f"{on_database(ctx, go)} dead letter(s) purged")
