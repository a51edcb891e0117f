"""The `outbox` command group, and what every command shares: the database
option, running a coroutine, and one clear line for every error.

Errors print one line naming what was wrong and exit non-zero: 2 for bad
input, 1 for everything else.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import click

from outbox.db.connect import DB_ERRORS, command_connection, describe
from outbox.errors import InvalidInputError, OutboxError
from outbox.settings import load_settings
from outbox.settings.databases import Database

T = TypeVar("T")

_DB_HELP = "PostgreSQL URL [default: $OUTBOX_DATABASE_URL]"


# Which module of outbox.cli defines each command. A command's module (and what
# it imports: SQLAlchemy and Alembic for `migrate`, the dashboard for `web`...)
# is imported when the command runs, or for the list in --help; a worker's
# start-up pays for `worker` alone.
COMMAND_MODULES = {
    "bench": "tools",
    "config": "config",
    "dead": "dead",
    "demo": "tools",
    "endpoint": "endpoint",
    "enqueue": "produce",
    "message": "message",
    "migrate": "maintain",
    "prune": "maintain",
    "replay": "message",
    "roles": "maintain",
    "soak": "tools",
    "stats": "stats",
    "subscription": "subscription",
    "web": "web",
    "worker": "worker",
}


class _Group(click.Group):
    """Loads each command's module when it is first asked for (`COMMAND_MODULES`);
    prints our errors as one clear line instead of a traceback."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            importlib.import_module(f"outbox.cli.{COMMAND_MODULES[cmd_name]}")
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        for module in sorted(set(COMMAND_MODULES.values())):
            importlib.import_module(f"outbox.cli.{module}")
        return super().list_commands(ctx)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InvalidInputError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except OutboxError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except DB_ERRORS as exc:  # the database (or the way to it) said no mid-command
            click.echo(f"error: {describe(exc)}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="outbox")
def main() -> None:
    """outbox: a durable transactional outbox on PostgreSQL.

    Write messages in the same transaction as your business data; workers
    deliver them over HTTP with retries, record every attempt and
    dead-letter what cannot be delivered.
    """


def database_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--database-url``, which every command takes."""
    return click.option("--database-url", default=None, metavar="URL", help=_DB_HELP)(func)


def databases_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--database-url``, repeatable, for the commands that serve several databases."""
    return click.option(
        "--database-url",
        "database_urls",
        multiple=True,
        metavar="[NAME=]URL",
        help="PostgreSQL URL, NAME=URL to name it; repeat for several databases "
        "[default: $OUTBOX_DATABASE_URLS, else $OUTBOX_DATABASE_URL]",
    )(func)


def databases_for(ctx: click.Context) -> list[Database]:
    """The databases given, else ``OUTBOX_DATABASE_URLS``, else ``OUTBOX_DATABASE_URL``."""
    return load_settings().databases(ctx.params.get("database_urls") or ())


def url_for(ctx: click.Context) -> str:
    """The URL given, else ``OUTBOX_DATABASE_URL``, else a clear error."""
    explicit = ctx.params.get("database_url")
    if explicit:
        return str(explicit)
    return load_settings().require_database_url()


def run(coro: Awaitable[T]) -> T:
    """Run a coroutine to its end (asyncio)."""

    async def main() -> T:
        return await coro

    return asyncio.run(main())


def run_fast(coro: Awaitable[T]) -> T:
    """The same on uvloop when it is installed (workers and benchmarks)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return run(coro)

    async def main() -> T:
        return await coro

    return uvloop.run(main())


def on_database(ctx: click.Context, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """``work(conn)`` on a connection to the command's database, opened and closed."""
    url = url_for(ctx)

    async def go() -> T:
        async with command_connection(url) as conn:
            return await work(conn)

    return run(go())
