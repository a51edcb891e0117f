"""``outbox migrate``, ``outbox prune`` and ``outbox roles``: the schema, its
history's retention, and who may do what."""

from __future__ import annotations

import asyncpg
import click

from outbox import operate
from outbox.cli.app import database_option, databases_for, databases_option, main, on_database, run
from outbox.db import migrate as migrations
from outbox.db.connect import command_connection
from outbox.deliver import retention
from outbox.errors import OutboxError
from outbox.settings import load_settings


@main.command("migrate")
@databases_option
@click.pass_context
def migrate_cmd(ctx: click.Context, database_urls: tuple[str, ...]) -> None:
    """Create or upgrade the outbox schema (idempotent), in each database given
    (--database-url repeated, or OUTBOX_DATABASE_URLS), one after another.

    Also writes OUTBOX_MAX_PAYLOAD_BYTES and OUTBOX_DEDUPE_WINDOW_SECONDS to
    outbox.config when they are set.
    """
    databases = databases_for(ctx)
    settings = load_settings()
    for database in databases:
        migrations.upgrade(database.url)
        if settings.max_payload_bytes is not None or settings.dedupe_window_seconds is not None:

            async def configure(url: str = database.url) -> None:
                async with command_connection(url) as conn:
                    await operate.set_config(
                        conn,
                        max_payload_bytes=settings.max_payload_bytes,
                        dedupe_window_seconds=settings.dedupe_window_seconds,
                    )

            run(configure())
        where = f" in {database.name}" if len(databases) > 1 else ""
        click.echo(f"outbox schema is at revision {migrations.head_revision()}{where}")


@main.command("prune")
@database_option
@click.pass_context
def prune_cmd(ctx: click.Context, database_url: str | None) -> None:
    """Delete what is past retention now: ledger rows, dead letters, spent
    idempotency keys (see `outbox config`). Workers also do it every 5 minutes."""
    counts: dict[str, int] = {}

    def note(what: str, n: int) -> None:
        counts[what] = counts.get(what, 0) + n
        click.echo(f"  {what}: {counts[what]}", err=True)

    async def go(conn: asyncpg.Connection) -> retention.Pruned | None:
        return await retention.prune(conn, progress=note)

    pruned = on_database(ctx, go)
    if pruned is None:
        raise OutboxError("another pruner (a worker, or `outbox prune`) is running; try later")
    click.echo(
        f"pruned {pruned.attempts} ledger row(s), {pruned.dead_letters} dead letter(s), "
        f"{pruned.idempotency_keys} idempotency key(s), {pruned.delivered} kept payload(s), "
        f"{pruned.publications} publication(s)"
    )


@main.command("roles")
@database_option
@click.pass_context
def roles_cmd(ctx: click.Context, database_url: str | None) -> None:
    """Create the roles outbox_producer, outbox_worker, outbox_monitor and
    outbox_operator (if missing) and grant each exactly what it needs in this
    database.

    Then give them to your login roles, e.g. GRANT outbox_producer TO app.
    Needs a role allowed to create roles and to grant on the outbox schema.
    """
    on_database(ctx, operate.apply_roles)
    click.echo(
        "roles outbox_producer, outbox_worker, outbox_monitor, outbox_operator are ready; e.g."
    )
    click.echo("  GRANT outbox_producer TO app;  GRANT outbox_worker TO worker;")
    click.echo("  GRANT outbox_monitor TO grafana;  GRANT outbox_operator TO oncall;")
