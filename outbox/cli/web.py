"""``outbox web``: the dashboard (the ``web`` extra)."""

from __future__ import annotations

import ipaddress
import os

import click

from outbox.cli.app import database_option, main, url_for
from outbox.errors import ConfigurationError, InvalidInputError
from outbox.settings import load_settings

TOKEN_VARIABLE = "OUTBOX_WEB_TOKEN"
MIN_TOKEN_CHARS = 16


@main.command("web")
@database_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--pooled/--no-pooled",
    default=None,
    help="The URL goes through a connection pooler in transaction mode (PgBouncer) "
    "[default: $OUTBOX_POOLED].",
)
@click.option(
    "--secure-cookies/--no-secure-cookies", default=None,
    help="Send the session cookie over HTTPS only (behind a TLS proxy) [default: on unless "
    "listening on loopback].",
)  # fmt: skip
@click.pass_context
def web_cmd(
    ctx: click.Context, database_url: str | None, host: str, port: int,
    pooled: bool | None, secure_cookies: bool | None,
) -> None:  # fmt: skip
    """Serve the dashboard: delivery at a glance, dead letters, actions.

    Every page needs a sign-in with a token: $OUTBOX_WEB_TOKEN, or one made
    and printed now. Connected as a role that may only read the views
    (outbox_monitor), it shows no action and refuses them; as outbox_operator
    (or the owner) it can pause, resume, unblock, requeue and purge.
    """
    try:
        import uvicorn

        from outbox.web.app import create_app
        from outbox.web.auth import new_token
    except ImportError as exc:
        raise ConfigurationError(
            f"outbox web needs the web extra: pip install 'outbox[web]' ({exc.name} is missing)"
        ) from None
    url = url_for(ctx)
    given = os.environ.get(TOKEN_VARIABLE, "").strip()
    if given and len(given) < MIN_TOKEN_CHARS:
        raise InvalidInputError(
            TOKEN_VARIABLE, f"must be at least {MIN_TOKEN_CHARS} characters (it signs in to it all)"
        )
    token = given or new_token()
    secure = not _loopback(host) if secure_cookies is None else secure_cookies
    if not _loopback(host):
        click.echo(
            f"warning: listening on {host}, beyond this machine: put TLS in front of it",
            err=True,
        )
    shown = "localhost" if host in ("127.0.0.1", "::1", "localhost") else host
    link = f"http://{shown}:{port}/"
    if given:
        click.echo(f"outbox web on {link} (sign in with ${TOKEN_VARIABLE})")
    else:
        click.echo(f"outbox web on {link}\nsign in: {link}login?token={token}")
    # No access log: its lines hold query strings, and /login?token= is one.
    config = uvicorn.Config(
        create_app(
            url, token, secure_cookies=secure,
            pooled=load_settings().pooled if pooled is None else pooled,
        ),
        host=host, port=port,
        log_level="warning",
        access_log=False, proxy_headers=False, server_header=False,
    )  # fmt: skip
    server = uvicorn.Server(config)
    server.run()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
