"""``outbox subscription``: which endpoints get a copy of what is published on
which topics (``outbox.publish()``)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import click

from outbox.cli.app import database_option, main, on_database
from outbox.cli.inputs import read_payload
from outbox.operate.subscriptions import (
    Subscription,
    add_subscription,
    list_subscriptions,
    pause_subscription,
    remove_subscription,
)

_TOPIC_HELP = (
    "Topic pattern: dot-separated words; * matches one word, # (last) the rest, e.g. "
    "'order.*' or 'order.#'."
)


@main.group("subscription")
def subscription() -> None:
    """Subscribe endpoints to topics: what `outbox.publish(topic, ...)` sends where."""


def _topic(func: Any) -> Any:
    return click.option("--topic", required=True, metavar="PATTERN", help=_TOPIC_HELP)(func)


@subscription.command("add")
@database_option
@click.argument("endpoint")
@_topic
@click.option(
    "--filter", "filter_text", metavar="JSON",
    help="Only payloads that contain this JSON object (payload @> filter), e.g. "
    '\'{"country": "NL"}\'; @file or - reads it.',
)  # fmt: skip
@click.pass_context
def subscription_add(
    ctx: click.Context, database_url: str | None, endpoint: str, topic: str,
    filter_text: str | None,
) -> None:  # fmt: skip
    """Send ENDPOINT a copy of every event published on a topic PATTERN matches."""
    wanted = None if filter_text is None else read_payload(filter_text, "--filter")
    added = on_database(ctx, lambda conn: add_subscription(conn, endpoint, topic, wanted))
    shown = (
        "" if added.filter is None else f" where the payload contains {json.dumps(added.filter)}"
    )
    click.echo(f"{endpoint} subscribes to {topic!r}{shown}")


@subscription.command("list")
@database_option
@click.option("--endpoint", default=None, help="Only this endpoint's.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def subscription_list(
    ctx: click.Context, database_url: str | None, endpoint: str | None, as_json: bool
) -> None:
    """Every subscription: endpoint, pattern, filter, paused."""
    found: list[Subscription] = on_database(ctx, lambda conn: list_subscriptions(conn, endpoint))
    if as_json:
        click.echo(json.dumps([s.to_json() for s in found], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("endpoint", "topic", "filter", "state", "since")
    for s in found:
        table.add_row(
            s.endpoint,
            s.topic,
            "" if s.filter is None else json.dumps(s.filter),
            "paused" if s.paused_at else "active",
            (s.paused_at or s.created_at).isoformat(timespec="seconds"),
        )
    Console().print(table)


def _change(name: str, summary: str, done: str, action: Any) -> None:
    @subscription.command(name, help=summary)
    @database_option
    @click.argument("endpoint")
    @_topic
    @click.pass_context
    def command(ctx: click.Context, database_url: str | None, endpoint: str, topic: str) -> None:
        async def go(conn: asyncpg.Connection) -> None:
            await action(conn, endpoint, topic)

        on_database(ctx, go)
        click.echo(f"{endpoint}'s subscription to {topic!r} {done}")


_change("remove", "Remove ENDPOINT's subscription to PATTERN.", "removed", remove_subscription)
_change(
    "pause",
    "Pause ENDPOINT's subscription to PATTERN: what is published meanwhile makes it no copy.",
    "paused",
    pause_subscription,
)
_change(
    "resume",
    "Resume ENDPOINT's subscription to PATTERN.",
    "resumed",
    lambda conn, endpoint, topic: pause_subscription(conn, endpoint, topic, paused=False),
)
