"""``outbox message show``: where one message is, and every attempt it had."""

from __future__ import annotations

import json

import click

from outbox import operate
from outbox.cli.app import database_option, main, on_database
from outbox.cli.inputs import message_id


@main.group("message")
def message() -> None:
    """Look at one message."""


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
            a["outcome"],
            a["reason"] or a["error"] or "",
        )
    console.print(table)
