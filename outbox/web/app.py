"""The dashboard's Starlette application: routes, sign-in, security headers.

`create_app` builds it on a pool of its own (opened in the lifespan). Every
page but the sign-in and the static files needs a session; every POST also
needs the session's CSRF token. Responses carry a strict Content Security
Policy (scripts and styles from this server only) and are not cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import asyncpg
import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from outbox._redact import redact_text, redact_url
from outbox.db.connect import DB_ERRORS, asyncpg_url
from outbox.errors import DatabaseError
from outbox.web import actions, data, pages
from outbox.web.auth import COOKIE, Sessions
from outbox.web.render import SESSION_SETTINGS, Renderer

log = logging.getLogger("outbox.web")

PUBLIC_PATHS = ("/login", "/static/")
_CONNECT_ERRORS: tuple[type[BaseException], ...] = (*DB_ERRORS, ValueError)
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

ROUTES = [
    Route("/login", pages.login, methods=["GET", "POST"]),
    Route("/logout", pages.logout, methods=["POST"]),
    Route("/", pages.overview),
    Route("/fragments/overview", pages.overview_fragment),
    Route("/api/throughput", pages.throughput_json),
    Route("/endpoints/{name}", pages.endpoint),
    Route("/messages", pages.messages),
    Route("/messages/{message_id}", pages.message),
    Route("/dead", pages.dead),
    Route("/endpoints/{name}/pause", actions.pause, methods=["POST"]),
    Route("/endpoints/{name}/resume", actions.resume, methods=["POST"]),
    Route("/endpoints/{name}/unblock", actions.unblock, methods=["POST"]),
    Route("/dead/requeue", actions.requeue, methods=["POST"]),
    Route("/dead/purge", actions.purge, methods=["POST"]),
]


def create_app(
    database_url: str,
    token: str,
    *,
    pool_size: int = 4,
    secure_cookies: bool = False,
    pooled: bool = False,
) -> Starlette:
    """The dashboard for the database at ``database_url``; ``token`` signs in.
    ``secure_cookies``: the session cookie is sent over HTTPS only (behind a TLS
    proxy; the dashboard itself speaks plain HTTP). ``pooled``: the URL goes
    through a pooler in transaction mode (PgBouncer): no settings at connect, no
    prepared-statement cache (`outbox.web.render.connection`)."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("outbox.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    app = Starlette(
        routes=[*ROUTES, Mount("/static", StaticFiles(directory=_static()), name="static")],
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=_guard)],
        lifespan=_lifespan(database_url, pool_size, pooled),
    )
    app.state.pooled = pooled
    app.state.sessions = Sessions(token)
    app.state.failed_sign_in = asyncio.Lock()
    app.state.secure_cookies = secure_cookies
    app.state.render = Renderer(environment)
    return app


def _pool_options(pooled: bool) -> dict[str, Any]:
    if pooled:  # application_name is one of the few startup parameters PgBouncer passes on
        return {"statement_cache_size": 0, "server_settings": {"application_name": "outbox web"}}
    return {"server_settings": {"application_name": "outbox web", **SESSION_SETTINGS}}


def _lifespan(
    database_url: str, pool_size: int, pooled: bool
) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    """The app's pool (and what its role may do), for as long as it serves."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            pool = await asyncpg.create_pool(
                asyncpg_url(database_url), min_size=1, max_size=pool_size,
                **_pool_options(pooled),
            )  # fmt: skip
        except _CONNECT_ERRORS as exc:
            where = redact_url(database_url)
            if isinstance(exc, ValueError):  # its text may quote a piece of the URL
                raise DatabaseError(f"cannot connect to {where}: the URL is malformed") from None
            problem = redact_text(str(exc), (database_url,))
            raise DatabaseError(f"cannot connect to {where}: {problem}") from None
        assert pool is not None
        async with pool.acquire() as conn:
            app.state.access = await data.access(conn)  # type: ignore[arg-type]
        app.state.pool = pool
        log.info("dashboard on the database as %s%s", app.state.access.role,
                 "" if app.state.access.act else " (read-only)")  # fmt: skip
        try:
            yield
        finally:
            await pool.close()

    return lifespan


def _static() -> Path:
    return Path(str(files("outbox.web").joinpath("static")))


async def _guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Sign-in for every page (a POST's CSRF token is checked by `actions.posted`),
    the security headers on every answer."""
    path = request.url.path
    if not path.startswith(PUBLIC_PATHS):
        sessions: Sessions = request.app.state.sessions
        session = sessions.get(request.cookies.get(COOKIE))
        if session is None:
            if request.method == "GET" and not path.startswith(("/fragments/", "/api/")):
                return _headers(RedirectResponse("/login", status_code=303))
            return _headers(Response("sign in first", status_code=401))
        request.state.session = session
    started = time.perf_counter()
    response = await call_next(request)
    spent = (time.perf_counter() - started) * 1000
    response.headers["Server-Timing"] = f"app;dur={spent:.2f}"  # what `outbox bench web` reads
    if not path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-store"
    return _headers(response)


def _headers(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers[name] = value
    return response
