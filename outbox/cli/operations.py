"""Operators' commands: ``outbox stats``, ``outbox dead ...``, ``outbox message show``.

Thin wrappers over `outbox.operate`, registered on the main group by
`outbox.cli`. Tables use rich; ``--json`` prints what scripts want.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from outbox import operate
from outbox.db.connect import connection
from outbox.deliver import retention
from outbox.errors import InvalidInputError, OutboxError
from outbox.operate.endpoint_config import parse_duration
from outbox.operate.stats import stats_table

T = TypeVar("T")
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def register(
    main: click.Group,
    database_option: Decorator,
    get_url: Callable[[click.Context], str],
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    """Add the commands to ``main`` (the helpers come from `outbox.cli`)."""

    @main.command("stats")
    @database_option
    @click.option("--json", "as_json", is_flag=True, help="Print JSON (the outbox.stats rows).")
    @click.option("--watch", is_flag=True, help="Refresh the table until interrupted.")
    @click.option(
        "--interval", type=float, default=2.0, show_default=True, help="--watch period, s."
    )
    @click.pass_context
    def stats_cmd(
        ctx: click.Context, database_url: str | None, as_json: bool, watch: bool, interval: float
    ) -> None:
        """Per endpoint: queue, dead letters, last hour's deliveries, latency, state."""
        url = get_url(ctx)
        if as_json:
            rows = run(_with_conn(url, operate.stats))
            click.echo(json.dumps(rows, indent=2))
            return
        from rich.console import Console
        from rich.live import Live

        console = Console()
        if not watch:
            console.print(stats_table(run(_with_conn(url, operate.stats))))
            return

        async def live() -> None:
            async with connection(url) as conn:
                with Live(console=console, auto_refresh=False) as screen:
                    while True:
                        screen.update(stats_table(await operate.stats(conn)), refresh=True)
                        await asyncio.sleep(interval)

        with contextlib.suppress(KeyboardInterrupt):
            run(live())

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
        url = get_url(ctx)
        since_at = _when(since, "--since")

        async def go(conn: Any) -> list[operate.DeadLetter]:
            return await operate.dead_letters(
                conn, endpoint=endpoint, since=since_at, error=error_text, limit=limit
            )

        letters = run(_with_conn(url, go))
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
    @click.option("--all", "everything", is_flag=True, help="Every dead letter.")
    @click.pass_context
    def dead_requeue(
        ctx: click.Context,
        database_url: str | None,
        ids: tuple[str, ...],
        endpoint: str | None,
        since: str | None,
        until: str | None,
        everything: bool,
    ) -> None:
        """Send dead letters again: by IDS, by endpoint and time range, or --all.

        They are due at once and their attempts start from zero; their history
        stays in outbox.attempts. Same message id, so receivers still deduplicate.
        """
        url = get_url(ctx)
        id_list = [_uuid(i) for i in ids] if ids else None
        since_at, until_at = _when(since, "--since"), _when(until, "--until")

        async def go(conn: Any) -> int:
            total = None
            if id_list is None:
                total = await operate.count_dead(
                    conn, endpoint=endpoint, since=since_at, until=until_at
                )
            with _Progress("requeueing", total) as advance:
                return await operate.requeue(
                    conn,
                    ids=id_list,
                    endpoint=endpoint,
                    since=since_at,
                    until=until_at,
                    everything=everything,
                    progress=advance,
                )

        moved = run(_with_conn(url, go))
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
        url = get_url(ctx)
        age = parse_duration(older_than, "--older-than")

        async def go(conn: Any) -> int:
            total = await operate.count_dead(conn, endpoint=endpoint, until=datetime.now(UTC) - age)
            with _Progress("purging", total) as advance:
                return await operate.purge(
                    conn, older_than=age, endpoint=endpoint, progress=advance
                )

        click.echo(f"{run(_with_conn(url, go))} dead letter(s) purged")

    @main.command("prune")
    @database_option
    @click.pass_context
    def prune_cmd(ctx: click.Context, database_url: str | None) -> None:
        """Delete what is past retention now: ledger rows, dead letters, spent
        idempotency keys (see `outbox config`). Workers also do it every 5 minutes."""
        url = get_url(ctx)
        counts: dict[str, int] = {}

        def note(what: str, n: int) -> None:
            counts[what] = counts.get(what, 0) + n
            click.echo(f"  {what}: {counts[what]}", err=True)

        async def go(conn: Any) -> retention.Pruned | None:
            return await retention.prune(conn, progress=note)

        pruned = run(_with_conn(url, go))
        if pruned is None:
            raise OutboxError("another pruner (a worker, or `outbox prune`) is running; try later")
        click.echo(
            f"pruned {pruned.attempts} ledger row(s), {pruned.dead_letters} dead letter(s), "
            f"{pruned.idempotency_keys} idempotency key(s)"
        )

    @main.command("roles")
    @database_option
    @click.pass_context
    def roles_cmd(ctx: click.Context, database_url: str | None) -> None:
        """Create the roles outbox_producer, outbox_worker and outbox_monitor (if
        missing) and grant each exactly what it needs in this database.

        Then give them to your login roles, e.g. GRANT outbox_producer TO app.
        Needs a role allowed to create roles and to grant on the outbox schema.
        """
        url = get_url(ctx)

        async def go(conn: Any) -> None:
            await operate.apply_roles(conn)

        run(_with_conn(url, go))
        click.echo("roles outbox_producer, outbox_worker, outbox_monitor are ready; e.g.")
        click.echo("  GRANT outbox_producer TO app;  GRANT outbox_worker TO worker;")
        click.echo("  GRANT outbox_monitor TO grafana;")

    @main.command("demo")
    @database_option
    @click.option("--messages", type=int, default=120, show_default=True, help="Orders to place.")
    @click.option(
        "--duration", type=float, default=45.0, show_default=True, help="Longest run, seconds."
    )
    @click.option("--reset", is_flag=True, help="Start the embedded database afresh.")
    @click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="The embedded database's directory [default: a per-user cache directory].",
    )
    @click.pass_context
    def demo_cmd(
        ctx: click.Context,
        database_url: str | None,
        messages: int,
        duration: float,
        reset: bool,
        data_dir: Path | None,
    ) -> None:
        """See outbox work: an embedded PostgreSQL (unless OUTBOX_DATABASE_URL is set),
        receivers that fail on purpose, business transactions (some rolled back),
        worker processes, live progress, then the stats. About half a minute."""
        from outbox.devtools.demo import run as run_demo
        from outbox.settings import load_settings

        url = database_url or (
            load_settings().database_url.get_secret_value()  # type: ignore[union-attr]
            if load_settings().database_url is not None
            else None
        )
        code = run(
            run_demo(url, messages=messages, duration=duration, reset=reset, data_dir=data_dir,
                     say=click.echo)
        )  # fmt: skip
        ctx.exit(code)

    @main.group("message")
    def message() -> None:
        """Look at one message."""

    @message.command("show")
    @database_option
    @click.argument("message_id", metavar="ID")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.pass_context
    def message_show(
        ctx: click.Context, database_url: str | None, message_id: str, as_json: bool
    ) -> None:
        """Where message ID is and its attempt timeline."""
        url = get_url(ctx)
        wanted = _uuid(message_id)

        async def go(conn: Any) -> operate.MessageStory:
            return await operate.message_story(conn, wanted)

        story = run(_with_conn(url, go))
        if as_json:
            click.echo(json.dumps(story.to_json(), indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        console = Console()
        console.print(f"message {story.id}: [bold]{story.state}[/bold] (endpoint {story.endpoint})")
        for field in ("key", "attempts", "created_at", "next_attempt_at", "last_error", "held"):
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


async def _with_conn(url: str, work: Callable[[Any], Awaitable[T]]) -> T:
    async with connection(url) as conn:
        return await work(conn)


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidInputError("id", f"{value!r} is not a message id (a UUID)") from None


def _when(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 time (UTC if no offset), or an age such as ``2h`` (that long ago)."""
    if value is None:
        return None
    try:
        return datetime.now(UTC) - parse_duration(value, option)
    except InvalidInputError:
        pass
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(
            option, f"{value!r} is neither a time (2026-11-22T10:00:00Z) nor an age (2h)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class _Progress:
    """A progress bar on stderr when the total is known and large enough to matter."""

    def __init__(self, what: str, total: int | None) -> None:
        self.what = what
        self.total = total
        self._bar: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if self.total and self.total > operate.BATCH:
            from rich.console import Console
            from rich.progress import Progress

            self._bar = Progress(console=Console(stderr=True), transient=True)
            self._bar.start()
            task = self._bar.add_task(self.what, total=self.total)
            return lambda n: self._bar.advance(task, n)
        return lambda _n: None

    def __exit__(self, *_: object) -> None:
        if self._bar is not None:
            self._bar.stop()
