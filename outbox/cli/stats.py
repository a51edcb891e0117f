"""``outbox stats``: per endpoint, the queue, dead letters, the last hour, latency, state."""

from __future__ import annotations

import asyncio
import contextlib
import json

import click

from outbox import operate
from outbox.cli.app import database_option, main, on_database, run, url_for
from outbox.db.connect import connection
from outbox.operate.stats import stats_table


@main.command("stats")
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the outbox.stats rows).")
@click.option("--watch", is_flag=True, help="Refresh the table until interrupted.")
@click.option("--interval", type=float, default=2.0, show_default=True, help="--watch period, s.")
@click.pass_context
def stats_cmd(
    ctx: click.Context, database_url: str | None, as_json: bool, watch: bool, interval: float
) -> None:
    """Per endpoint: queue, dead letters, last hour's deliveries, latency, state."""
    if as_json:
        click.echo(json.dumps(on_database(ctx, operate.stats), indent=2))
        return
    from rich.console import Console
    from rich.live import Live

    console = Console()
    if not watch:
        console.print(stats_table(on_database(ctx, operate.stats)))
        return
    url = url_for(ctx)

    async def live() -> None:
        async with connection(url) as conn:
            with Live(console=console, auto_refresh=False) as screen:
                while True:
                    screen.update(stats_table(await operate.stats(conn)), refresh=True)
                    await asyncio.sleep(interval)

    with contextlib.suppress(KeyboardInterrupt):
        run(live())
