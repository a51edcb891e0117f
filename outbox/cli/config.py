"""``outbox config``: the settings every producer and worker shares (``outbox.config``)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import click

from outbox import operate
from outbox.cli.app import database_option, main, on_database
from outbox.cli.inputs import read_payload, seconds


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
    "--delivered-retention",
    metavar="AGE",
    help="Keep delivered messages' payloads this long, for `outbox message resend` and "
    "`outbox replay` (e.g. 7d; 0 keeps none) [default: 7d].",
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
    delivered_retention: str | None,
    alert_endpoint: str | None,
    alert_payload: str | None,
    alert_interval: str | None,
    as_json: bool,
) -> None:
    """Show (or change) the settings every producer and worker shares:
    outbox.enqueue()'s limits, how long history (and delivered payloads, for
    replay) is kept, where alerts go."""
    limits = {
        "max_payload_bytes": max_payload_bytes,
        "dedupe_window_seconds": dedupe_window,
        "attempts_retention_seconds": seconds(attempts_retention, "--attempts-retention"),
        "dead_letters_retention_seconds": seconds(
            dead_letters_retention, "--dead-letters-retention"
        ),
        "delivered_retention_seconds": (
            0
            if delivered_retention == "0"
            else seconds(delivered_retention, "--delivered-retention")
        ),
    }
    payload = None if alert_payload is None else read_payload(alert_payload, "--alert-payload")
    alerts: dict[str, Any] = {
        "payload": payload,
        "interval_seconds": seconds(alert_interval, "--alert-interval"),
    }
    if alert_endpoint is not None:
        alerts["endpoint"] = alert_endpoint or None

    async def go(conn: asyncpg.Connection) -> operate.OutboxConfig:
        cfg = await operate.get_config(conn)
        if any(v is not None for v in limits.values()):
            cfg = await operate.set_config(conn, **limits)
        if any(v is not None for v in alerts.values()) or "endpoint" in alerts:
            cfg = await operate.set_alerts(conn, **alerts)
        return cfg

    _show(on_database(ctx, go), as_json)


def _show(cfg: operate.OutboxConfig, as_json: bool) -> None:
    values = {
        "max_payload_bytes": cfg.max_payload_bytes,
        "dedupe_window_seconds": cfg.dedupe_window_seconds,
        "attempts_retention_seconds": cfg.attempts_retention_seconds,
        "dead_letters_retention_seconds": cfg.dead_letters_retention_seconds,
        "delivered_retention_seconds": cfg.delivered_retention_seconds,
        "alert_endpoint": cfg.alert_endpoint,
        "alert_payload": cfg.alert_payload,
        "alert_interval_seconds": cfg.alert_interval_seconds,
    }
    if as_json:
        click.echo(json.dumps(values))
    else:
        for name, value in values.items():
            click.echo(f"{name:<32}{value}")
