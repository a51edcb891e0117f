"""``outbox stats``: per endpoint, the queue, dead letters, the last hour, latency,
state; of one database, or of every database a fleet serves."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import click

from outbox.cli.app import databases_for, databases_option, main, run
from outbox.errors import OutboxError
from outbox.operate.stats import fleet_stats, stats_table
from outbox.settings.databases import Database


@main.command("stats")
@databases_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the outbox.stats rows).")
@click.option("--watch", is_flag=True, help="Refresh the table until interrupted.")
@click.option("--interval", type=float, default=2.0, show_default=True, help="--watch period, s.")
@click.pass_context
def stats_cmd(
    ctx: click.Context,
    database_urls: tuple[str, ...],
    as_json: bool,
    watch: bool,
    interval: float,
) -> None:
    """Per endpoint: queue, dead letters, last hour's deliveries, latency, state.

    Of every database given (--database-url repeated, or OUTBOX_DATABASE_URLS),
    each row naming its database; one that does not answer is reported and
    makes the command exit 1, after the others are shown.
    """
    databases = databases_for(ctx)
    if as_json:
        rows, errors = run(fleet_stats(databases))
        click.echo(json.dumps(rows, indent=2))
        _fail_on(errors)
        return
    from rich.console import Console

    console = Console()
    by_database = len(databases) > 1
    if not watch:
        rows, errors = run(fleet_stats(databases))
        console.print(stats_table(rows, by_database=by_database))
        _fail_on(errors)
        return
    with contextlib.suppress(KeyboardInterrupt):
        run(_watch(console, databases, by_database, interval))


async def _watch(console: Any, databases: list[Database], by_database: bool, every: float) -> None:
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    with Live(console=console, auto_refresh=False) as screen:
        while True:
            rows, errors = await fleet_stats(databases)
            notes = [Text(f"{name}: {why}", style="red") for name, why in errors.items()]
            screen.update(Group(stats_table(rows, by_database=by_database), *notes), refresh=True)
            await asyncio.sleep(every)


def _fail_on(errors: dict[str, str]) -> None:
    """Every database that did not answer, as one error (exit 1)."""
    if errors:
        raise OutboxError("; ".join(f"database {name}: {why}" for name, why in errors.items()))
