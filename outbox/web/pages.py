"""The dashboard's pages (GET): overview, an endpoint, messages, a message,
dead letters; and the sign-in."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from outbox.errors import InvalidInputError
from outbox.operate.dead import DeadLetter
from outbox.settings.values import parse_when
from outbox.web import data, inputs
from outbox.web.actions import posted
from outbox.web.auth import COOKIE
from outbox.web.render import connection, page, session_cookie, state

DEAD_SHOWN = 200


async def login(request: Request) -> Response:
    """Sign in with the token: a form, or ``/login?token=...`` (the link printed at start)."""
    offered: Any = request.query_params.get("token")
    if request.method == "POST":
        offered = (await request.form()).get("token")
    if offered is None:
        return page(request, "login.html", problem=None)
    session_id = state(request).sessions.sign_in(offered if isinstance(offered, str) else "")
    if session_id is None:
        async with state(request).failed_sign_in:  # one wrong guess a second, however many are sent
            await asyncio.sleep(1.0)
        return page(request, "login.html", status=401, problem="That is not the dashboard's token.")
    response = RedirectResponse("/", status_code=303)
    secure = state(request).secure_cookies or request.url.scheme == "https"
    session_cookie(response, session_id, secure=secure)
    return response


async def _logout(request: Request, form: FormData) -> Response:
    state(request).sessions.sign_out(request.cookies.get(COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


logout = posted(_logout, acts=False)


async def overview(request: Request) -> Response:
    async with connection(request) as conn:
        rows = await data.overview(conn)
    return page(request, "overview.html", endpoints=rows)


async def overview_fragment(request: Request) -> Response:
    """The overview's table alone, for its live refresh."""
    async with connection(request) as conn:
        rows = await data.overview(conn)
    return page(request, "_endpoints.html", endpoints=rows)


async def throughput_json(request: Request) -> Response:
    """Per minute of the last hour, for the chart: ``{minute, delivered, failed}``."""
    try:
        name = inputs.text(request.query_params.get("endpoint"), "endpoint") or None
    except InvalidInputError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    async with connection(request) as conn:
        series = await data.throughput(conn, name)
    return JSONResponse(series)


async def endpoint(request: Request) -> Response:
    try:
        name = inputs.text(request.path_params["name"], "endpoint")
    except InvalidInputError as exc:
        return _missing(request, str(exc))
    access: data.Access = state(request).access
    async with connection(request) as conn:
        found = await data.endpoint(conn, name)
        if found is None:
            return _missing(request, f"There is no endpoint {name!r}.")
        keys = await data.blocked_keys(conn, name)
        attempts = await data.recent_attempts(conn, name) if access.read_messages else None
    return page(request, "endpoint.html", endpoint=found, keys=keys, attempts=attempts)


async def messages(request: Request) -> Response:
    access: data.Access = state(request).access
    query = request.query_params
    filters = dict.fromkeys(("id", "key", "endpoint", "state"), "")
    problem, found = None, None
    if access.read_messages:
        try:
            filters = {k: inputs.text(query.get(k), k) for k in filters}
            message_id = _uuid(filters["id"]) if filters["id"] else None
            if filters["state"] and filters["state"] not in data.STATES:
                raise InvalidInputError("state", f"must be one of {', '.join(data.STATES)}")
            async with connection(request) as conn:
                found = await data.messages(
                    conn, message_id=message_id, key=filters["key"] or None,
                    endpoint=filters["endpoint"] or None, state=filters["state"] or None,
                )  # fmt: skip
        except InvalidInputError as exc:
            problem = str(exc)
    return page(
        request, "messages.html", status=400 if problem else 200, filters=filters,
        found=found, problem=problem, states=data.STATES,
    )  # fmt: skip


async def message(request: Request) -> Response:
    access: data.Access = state(request).access
    if not access.read_messages:
        return _cannot_read(request)
    try:
        message_id = _uuid(request.path_params["message_id"])
        async with connection(request) as conn:
            story = await data.story(conn, message_id)
    except InvalidInputError as exc:
        return _missing(request, str(exc))
    return page(request, "message.html", story=story)


async def dead(request: Request) -> Response:
    access: data.Access = state(request).access
    if not access.read_messages:
        return _cannot_read(request)
    query = request.query_params
    filters = dict.fromkeys(("endpoint", "since", "until", "error"), "")
    problem: str | None = None
    letters: list[DeadLetter] = []
    total = 0
    try:
        filters = {k: inputs.text(query.get(k), k) for k in filters}
        since = _when(filters["since"], "since")
        until = _when(filters["until"], "until")
        async with connection(request) as conn:
            names = await data.endpoint_names(conn)
            letters, total = await data.dead(
                conn, endpoint=filters["endpoint"] or None, since=since, until=until,
                error=filters["error"] or None, limit=DEAD_SHOWN,
            )  # fmt: skip
    except InvalidInputError as exc:
        problem, names = str(exc), []
    return page(
        request, "dead.html", status=400 if problem else 200, filters=filters,
        letters=letters, total=total, names=names, problem=problem,
    )  # fmt: skip


def _when(value: str, field: str) -> datetime | None:
    return parse_when(value, field) if value else None


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise InvalidInputError("id", f"{value!r} is not a message id (a UUID)") from None


def _missing(request: Request, problem: str) -> Response:
    return page(request, "problem.html", status=404, problem=problem)


def _cannot_read(request: Request) -> Response:
    role = state(request).access.role
    return page(
        request, "problem.html", status=403,
        problem=f"The dashboard's role ({role}) may read the views only, not messages or dead "
        "letters: connect it as a role granted outbox_operator to see them.",
    )  # fmt: skip
