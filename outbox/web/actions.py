"""What changes delivery (POST, with the session's CSRF token, checked by the
app): pause, resume, unblock a key, requeue and purge dead letters. A role
that may only read gets 403 before anything runs; the database would refuse
it too. A requeue of everything that matches a filter, and every purge, first
answer with a page that says how many it would touch and asks to confirm."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from outbox.errors import InvalidInputError
from outbox.operate.dead import count_dead
from outbox.operate.dead import purge as purge_dead
from outbox.operate.dead import requeue as requeue_dead
from outbox.operate.endpoints import pause_endpoint, resume_endpoint, unblock_key
from outbox.settings.values import parse_duration, parse_when
from outbox.web import inputs
from outbox.web.auth import Session, csrf_ok
from outbox.web.render import back, page, state

Handler = Callable[[Request, FormData], Awaitable[Response]]


def posted(handler: Handler, *, acts: bool = True) -> Callable[[Request], Awaitable[Response]]:
    """A POST route: its form read once, its CSRF token checked (403 if missing
    or not this session's), and, for an action, the role's right to act (403)."""

    async def route(request: Request) -> Response:
        form = await request.form()
        try:
            for name, value in [*form.multi_items(), *request.path_params.items()]:
                inputs.text(value, name)
        except InvalidInputError as exc:
            return _problem(request, str(exc))
        session: Session = request.state.session
        offered = form.get("csrf")
        if not csrf_ok(session, offered if isinstance(offered, str) else None):
            stale = "The form's CSRF token is missing or stale: reload the page."
            return page(request, "problem.html", status=403, problem=stale)
        if acts and (refused := _refused(request)) is not None:
            return refused
        return await handler(request, form)

    return route


async def _pause(request: Request, form: FormData) -> Response:
    name = request.path_params["name"]
    reason = str(form.get("reason") or "").strip() or None
    return await _run(request, f"/endpoints/{name}", lambda c: pause_endpoint(c, name, reason),
                      f"Paused {name}.")  # fmt: skip


async def _resume(request: Request, form: FormData) -> Response:
    name = request.path_params["name"]
    return await _run(request, f"/endpoints/{name}", lambda c: resume_endpoint(c, name),
                      f"Resumed {name}.")  # fmt: skip


async def _unblock(request: Request, form: FormData) -> Response:
    name = request.path_params["name"]
    key = str(form.get("key") or "")
    try:
        async with state(request).pool.acquire() as conn:
            freed = await unblock_key(conn, name, key)
    except InvalidInputError as exc:
        return _problem(request, str(exc))
    return back(request, f"/endpoints/{name}", f"Unblocked key {key!r}: {freed} message(s) freed.")


async def _requeue(request: Request, form: FormData) -> Response:
    filters = {k: str(form.get(k) or "").strip() for k in ("endpoint", "since", "until", "error")}
    to = "/dead?" + urlencode({k: v for k, v in filters.items() if v})
    try:
        if form.get("scope") == "matching":
            where: dict[str, Any] = {
                "endpoint": filters["endpoint"] or None, "error": filters["error"] or None,
                "since": parse_when(filters["since"], "since") if filters["since"] else None,
                "until": parse_when(filters["until"], "until") if filters["until"] else None,
            }  # fmt: skip
            everything = not any(where.values())
            async with state(request).pool.acquire() as conn:
                if form.get("confirm") != "yes":
                    count = await count_dead(conn, **where)
                    return _confirm(request, "requeue", count, filters)
                moved = await requeue_dead(conn, everything=everything, **where)
        else:
            ids = [_uuid(str(v)) for v in form.getlist("id")]
            if not ids:
                raise InvalidInputError("id", "select at least one dead letter")
            async with state(request).pool.acquire() as conn:
                moved = await requeue_dead(conn, ids=ids)
    except InvalidInputError as exc:
        return _problem(request, str(exc))
    return back(request, to, f"Requeued {moved} dead letter(s).")


async def _purge(request: Request, form: FormData) -> Response:
    older = str(form.get("older_than") or "").strip()
    name = str(form.get("endpoint") or "").strip() or None
    try:
        age = parse_duration(older, "older_than")
        if age < timedelta(0):
            raise InvalidInputError("older_than", "must not be negative")
        async with state(request).pool.acquire() as conn:
            if form.get("confirm") != "yes":
                count = await count_dead(conn, endpoint=name, until=parse_when(older, "older_than"))
                filters = {"older_than": older, "endpoint": name or ""}
                return _confirm(request, "purge", count, filters)
            removed = await purge_dead(conn, older_than=age, endpoint=name)
    except InvalidInputError as exc:
        return _problem(request, str(exc))
    return back(request, "/dead", f"Purged {removed} dead letter(s) older than {older}.")


pause = posted(_pause)
resume = posted(_resume)
unblock = posted(_unblock)
requeue = posted(_requeue)
purge = posted(_purge)


async def _run(request: Request, to: str, action: Any, done: str) -> Response:
    try:
        async with state(request).pool.acquire() as conn:
            await action(conn)
    except InvalidInputError as exc:
        return _problem(request, str(exc))
    return back(request, to, done)


def _refused(request: Request) -> Response | None:
    access = state(request).access
    if access.act:
        return None
    return page(
        request, "problem.html", status=403,
        problem=f"The dashboard's role ({access.role}) may only read: it cannot change delivery.",
    )  # fmt: skip


def _confirm(request: Request, action: str, count: int, filters: dict[str, str]) -> Response:
    return page(request, "confirm.html", action=action, count=count, filters=filters)


def _problem(request: Request, problem: str) -> Response:
    return page(request, "problem.html", status=400, problem=problem)


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidInputError("id", f"{value!r} is not a message id (a UUID)") from None
