"""``outbox worker``: deliver until SIGTERM/SIGINT. Its options are settings
(`outbox.settings.Settings`), with their defaults and descriptions from there."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args

import click

from outbox.cli.app import databases_option, main, run_fast
from outbox.errors import ConfigurationError
from outbox.settings import Settings, load_settings

# The settings `outbox worker` takes as flags, in the order --help shows them.
FLAGS = (
    "concurrency",
    "processes",
    "batch_size",
    "lease_seconds",
    "poll_interval",
    "shutdown_grace",
    "metrics_port",
    "log_format",
    "trace_spans",
    "listen",
    "pooled",
)


def _option(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    field = Settings.model_fields[name]
    flag = f"--{name.replace('_', '-')}"
    if field.annotation is bool:
        return click.option(
            f"{flag}/--no-{flag[2:]}", default=None,
            help=f"{field.description} (OUTBOX_{name.upper()}) [default: {field.default}]",
        )  # fmt: skip
    kind: Any = field.annotation
    choices = get_args(kind)
    if choices and all(isinstance(c, str) for c in choices):
        kind = click.Choice(choices)
    elif int in choices:  # int | None
        kind = int
    default = "" if field.default is None else f" [default: {field.default}]"
    return click.option(
        flag,
        type=kind,
        help=f"{field.description} (OUTBOX_{name.upper()}){default}",
    )


def worker_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for name in reversed(FLAGS):
        func = _option(name)(func)
    return func


@main.command("worker")
@databases_option
@worker_options
@click.pass_context
def worker_cmd(ctx: click.Context, /, database_urls: tuple[str, ...], **flags: Any) -> None:
    """Deliver messages until SIGTERM/SIGINT, then stop gracefully.

    A first signal stops claiming, hands back claimed-but-unstarted messages,
    lets deliveries in flight finish (--shutdown-grace) and exits 0; a second
    signal exits at once (leases then expire and other workers retry).

    Given several databases (--database-url repeated, or OUTBOX_DATABASE_URLS),
    it runs --processes worker processes for each, under one supervisor.
    """
    overrides = {k: v for k, v in flags.items() if v is not None}
    settings = load_settings(**overrides)
    databases = settings.databases(database_urls)
    from outbox.deliver.logs import configure

    configure(
        settings.log_level,
        settings.log_format,
        database=databases[0].name if len(databases) == 1 else None,
    )
    from outbox.deliver.config import WorkerConfig

    config = WorkerConfig.from_settings(settings)  # refuses settings that do not go together
    if len(databases) > 1 and settings.listen and settings.listen_url is not None:
        raise ConfigurationError(
            "OUTBOX_LISTEN_URL is one database's listener and this worker serves "
            f"{len(databases)}: run one `outbox worker` per database to give each its "
            "listener, or poll (--no-listen)"
        )
    if settings.processes > 1 or len(databases) > 1:
        from outbox.deliver.supervisor import Supervisor

        child_args: list[str] = []
        for name, value in overrides.items():
            flag = f"--{name.replace('_', '-')}"
            if name in ("processes", "metrics_port"):  # the supervisor serves metrics
                continue
            if isinstance(value, bool):
                child_args.append(flag if value else f"--no-{flag[2:]}")
            else:
                child_args += [flag, str(value)]
        supervisor = Supervisor(
            child_args,
            settings.processes,
            settings.shutdown_grace,
            databases=databases,
            metrics_port=settings.metrics_port,
        )
        ctx.exit(supervisor.run())
    from outbox.deliver.runner import run_worker

    (database,) = databases
    ctx.exit(
        run_fast(
            run_worker(database.url, config, worker_id=settings.worker_id, database=database.name)
        )
    )
