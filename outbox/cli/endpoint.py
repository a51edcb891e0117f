"""``outbox endpoint add|update|pause|resume|unblock|list|remove``.

The options of ``add`` and ``update`` come from the settings' declaration
(`outbox.settings.endpoint`), their defaults and the channels' own too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, get_args

import click
from pydantic import BaseModel, ValidationError

from outbox import operate
from outbox.cli.app import database_option, main, on_database
from outbox.cli.inputs import parse_headers
from outbox.deliver.channels import registry
from outbox.errors import to_input_error
from outbox.operate.endpoint_config import EndpointConfig, EndpointUpdate
from outbox.settings import endpoint as declared
from outbox.settings.kinds import Millis
from outbox.settings.values import parse_duration

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


@main.group()
def endpoint() -> None:
    """Manage endpoints (destinations)."""


def shown(setting: declared.Setting, value: Any) -> str:
    """A value as the help shows it: ``10``, ``1s``, ``1d``, ``unordered``."""
    if isinstance(value, timedelta):
        return _duration(value.total_seconds())
    if setting.kind.flag == "switch":
        return setting.flag.lstrip("-").split("/--")[0 if value else 1]
    if isinstance(setting.kind, Millis) and setting.kind.flag == "duration":
        return _duration(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _help(setting: declared.Setting) -> str:
    notes = []
    if setting.default not in (None, {}, ()):
        notes.append(f"default: {shown(setting, setting.default)}")
    for spec in registry.channels().values():
        if setting.name in spec.defaults:
            notes.append(f"{spec.name} default: {shown(setting, spec.defaults[setting.name])}")
    if setting.channel_specific:
        takers = [s.name for s in registry.channels().values() if setting.name in s.settings]
        notes.append(f"{', '.join(takers)} only")
    return setting.help + (f" [{'; '.join(notes)}]" if notes else "")


def _convert(setting: declared.Setting) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """What a flag's text becomes: the value the endpoint models take."""

    def convert(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value is None or value == ():
            return None
        flag = setting.kind.flag
        if flag == "header":
            return parse_headers(value, setting.flag)
        if flag == "duration":
            duration = parse_duration(value, setting.flag)
            return duration.total_seconds() if isinstance(setting.kind, Millis) else duration
        return value

    return convert


def _option(setting: declared.Setting) -> Decorator:
    flag = setting.kind.flag
    kwargs: dict[str, Any] = {"help": _help(setting), "callback": _convert(setting)}
    if flag in ("int", "float"):
        kwargs["type"] = int if flag == "int" else float
    elif flag == "duration":
        kwargs["metavar"] = "DURATION"
    elif flag == "switch":
        kwargs["default"] = None
    elif flag == "choice":
        kwargs["type"] = click.Choice(get_args(setting.kind.annotation))
    elif flag in ("header", "repeat"):
        kwargs["multiple"] = True
        kwargs["metavar"] = "'Name: value'" if flag == "header" else "CIDR"
    return click.option(setting.flag, setting.name, **kwargs)


def setting_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """An option for every declared setting, in the declaration's order."""
    for setting in reversed(declared.SETTINGS):
        func = _option(setting)(func)
    return func


def _model(model: type[BaseModel], values: Mapping[str, Any]) -> Any:
    try:
        return model.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise to_input_error(exc) from None


def _channels_help() -> str:
    return "; ".join(f"{s.name}: {s.summary}" for s in registry.channels().values())


@endpoint.command("add")
@database_option
@click.argument("name")
@click.option(
    "--channel", type=click.Choice(list(registry.channels())), required=True, help=_channels_help()
)
@setting_options
@click.pass_context
def endpoint_add(
    ctx: click.Context, /, database_url: str | None, name: str, channel: str, **settings: Any
) -> None:
    """Register endpoint NAME."""
    config = _model(EndpointConfig, {"name": name, "channel": channel, **settings})
    on_database(ctx, lambda conn: operate.add_endpoint(conn, config))
    click.echo(f"endpoint {name!r} added ({channel})")


@endpoint.command("update")
@database_option
@click.argument("name")
@setting_options
@click.option(
    "--secret-grace",
    metavar="DURATION",
    callback=lambda _c, _p, v: None if v is None else parse_duration(v, "--secret-grace"),
    help="How long the previous secret still signs (both signatures are sent) "
    f"[default: {_duration(declared.SECRET_GRACE.total_seconds())}].",
)
@click.option(
    "--clear",
    multiple=True,
    type=click.Choice(declared.clearable()),
    help="Set a setting back to none (repeatable).",
)
@click.pass_context
def endpoint_update(
    ctx: click.Context,
    /,
    database_url: str | None,
    name: str,
    secret_grace: timedelta | None,
    clear: tuple[str, ...],
    **settings: Any,
) -> None:
    """Change settings of endpoint NAME; the ones not given stay as they are.

    A new --secret keeps the old one signing for --secret-grace."""
    changes = _model(
        EndpointUpdate, {**settings, "secret_grace": secret_grace, "clear": frozenset(clear)}
    )
    on_database(ctx, lambda conn: operate.update_endpoint(conn, name, changes))
    click.echo(f"endpoint {name!r} updated")


@endpoint.command("pause")
@database_option
@click.argument("name")
@click.option("--reason", help="Why (shown in endpoint list and outbox.endpoint_health).")
@click.pass_context
def endpoint_pause(
    ctx: click.Context, database_url: str | None, name: str, reason: str | None
) -> None:
    """Stop delivering to NAME now; its messages wait, spending no attempts."""
    on_database(ctx, lambda conn: operate.pause_endpoint(conn, name, reason))
    click.echo(f"endpoint {name!r} paused")


@endpoint.command("resume")
@database_option
@click.argument("name")
@click.pass_context
def endpoint_resume(ctx: click.Context, database_url: str | None, name: str) -> None:
    """Deliver to NAME again (also after it was disabled or its circuit opened)."""
    on_database(ctx, lambda conn: operate.resume_endpoint(conn, name))
    click.echo(f"endpoint {name!r} resumed")


@endpoint.command("unblock")
@database_option
@click.argument("name")
@click.argument("key")
@click.pass_context
def endpoint_unblock(ctx: click.Context, database_url: str | None, name: str, key: str) -> None:
    """Release KEY of ordered endpoint NAME, blocked after a dead letter (--on-dead block)."""
    freed = on_database(ctx, lambda conn: operate.unblock_key(conn, name, key))
    click.echo(f"key {key!r} of endpoint {name!r} released; {freed} message(s) continue")


@endpoint.command("list")
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def endpoint_list(ctx: click.Context, database_url: str | None, as_json: bool) -> None:
    """List endpoints (secrets and header values are never shown)."""
    infos = on_database(ctx, operate.list_endpoints)
    if as_json:
        click.echo(json.dumps([i.to_json() for i in infos], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "channel", "url", "secret", "limits", "state", "unfinished")
    for i in infos:
        secret = "set" if i.settings.get("secret") else ""
        if secret and i.rotating_secret:
            secret = "set, rotating"
        table.add_row(
            i.name,
            i.channel,
            i.settings.get("url") or "",
            secret,
            i.limits(),
            i.state + (f": {i.state_reason}" if i.state_reason else ""),
            str(i.unfinished),
        )
    Console().print(table)


@endpoint.command("remove")
@database_option
@click.argument("name")
@click.pass_context
def endpoint_remove(ctx: click.Context, database_url: str | None, name: str) -> None:
    """Remove endpoint NAME (refused while it has unfinished messages)."""
    on_database(ctx, lambda conn: operate.remove_endpoint(conn, name))
    click.echo(f"endpoint {name!r} removed")
