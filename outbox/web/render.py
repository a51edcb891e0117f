"""Pages from templates: the Jinja2 environment (autoescaped), its filters,
and what every page gets (the CSRF token, what the role may do, a flash)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from outbox.web.auth import COOKIE, SESSION_SECONDS, Session

NONE = "\u2013"  # an en dash: no value
STATE_LABELS = {
    "active": "active",
    "throttled": "throttled",
    "circuit_open": "circuit open",
    "probing": "probing",
    "paused": "paused",
    "disabled": "disabled",
}


class Renderer:
    """Renders the templates with the filters below."""

    def __init__(self, environment: jinja2.Environment) -> None:
        environment.filters.update(
            ms=_ms, percent=_percent, when=_when, ago=_ago, state_label=_state_label,
            pretty=_pretty, duration=_duration,
        )  # fmt: skip
        self._environment = environment

    def page(self, request: Request, template: str, status: int = 200, **values: Any) -> Response:
        session: Session | None = getattr(request.state, "session", None)
        flash = None
        if session is not None and not template.startswith("_"):  # not in a refreshed part
            flash, session.flash = session.flash, None
        access = getattr(request.app.state, "access", None)
        body = self._environment.get_template(template).render(
            request=request, csrf=session.csrf if session else "", access=access, flash=flash,
            path=request.url.path, **values,
        )  # fmt: skip
        return HTMLResponse(body, status_code=status)


def back(request: Request, to: str, flash: str) -> Response:
    """After an action: say what it did on the next page, and go there."""
    session: Session | None = getattr(request.state, "session", None)
    if session is not None:
        session.flash = flash
    return RedirectResponse(to, status_code=303)


def session_cookie(response: Response, session_id: str, *, secure: bool) -> None:
    response.set_cookie(
        COOKIE, session_id, httponly=True, samesite="strict", secure=secure, path="/",
        max_age=int(SESSION_SECONDS),
    )  # fmt: skip


def page(request: Request, template: str, status: int = 200, **values: Any) -> Response:
    """``template`` rendered for this request (see `Renderer.page`)."""
    renderer: Renderer = request.app.state.render
    return renderer.page(request, template, status, **values)


def state(request: Request) -> Any:
    """The app's state: ``pool``, ``access``, ``sessions``, ``render``."""
    return request.app.state


@contextlib.asynccontextmanager
async def connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the app's pool for one page (reads). Through a pooler in
    transaction mode (``--pooled``) its statements share one transaction, which
    sets what a direct connection sets at connect. Actions take a plain
    connection of the pool: their functions commit batch by batch."""
    app = state(request)
    async with app.pool.acquire() as conn:
        if not app.pooled:
            yield conn
            return
        async with conn.transaction():
            await conn.execute(POOLED_SETTINGS)
            yield conn


# What the dashboard's connections set: `outbox.stats` and its neighbours are
# planned past jit_above_cost on big tables, and compiling them took longer than
# running them.
SESSION_SETTINGS = {"jit": "off"}
POOLED_SETTINGS = " ".join(f"SET LOCAL {k} = {v};" for k, v in SESSION_SETTINGS.items())


def _ms(value: float | None) -> str:
    if value is None:
        return NONE
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _percent(value: Any) -> str:
    return NONE if value is None else f"{float(value):.1%}"


def _when(value: datetime | str | None) -> str:
    if value is None:
        return NONE
    if isinstance(value, str):  # as `outbox.operate` gives it (ISO 8601)
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(value: datetime | None) -> str:
    if value is None:
        return NONE
    seconds = (datetime.now(UTC) - value).total_seconds()
    future = seconds < 0
    text = _duration(abs(seconds))
    return f"in {text}" if future else f"{text} ago"


def _duration(seconds: float | timedelta | None) -> str:
    if seconds is None:
        return NONE
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _state_label(value: str | None) -> str:
    return STATE_LABELS.get(value or "", value or "unknown")


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
