"""The `outbox` command group, and what every command shares: the database
option, running a coroutine, and one clear line for every error.

Errors print one line naming what was wrong and exit non-zero: 2 for bad
input, 1 for everything else.
"""

from __future__ import annotations

import asyncio
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


class _Group(click.Group):
    """Prints our errors as one clear line instead of a traceback."""

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
