"""``outbox web`` over HTTP, as a real process on a real database: sign-in,
CSRF, the actions and their confirmations, the read-only role, escaping and
secrets. The browser tests (``test_web_browser.py``) click through the same."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
from support import WebProcess

from outbox import operate

pytestmark = pytest.mark.e2e

TOKEN = "web-test-token-3f9a8c"
SECRET = "whsec_c2lnbmluZy1zZWNyZXQtdGhhdC1tdXN0LW5vdC1zaG93"
XSS = "<script>alert('xss')</script>"
FORM = {"content-type": "application/x-www-form-urlencoded"}


async def seed(conn: asyncpg.Connection) -> dict[str, uuid.UUID]:
    """Two endpoints (one with every kind of secret), three dead letters, one queued message."""
    await conn.execute(
        "INSERT INTO outbox.endpoints (name, channel, url, secret, headers, ordered, on_dead)"
        " VALUES"
        " ('crm', 'webhook', 'https://user:URLPASSWORD@crm.example/hook/URLTOKEN?k=QUERYSECRET',"
        "  $1, '{\"Authorization\": \"Bearer HEADERSECRET\"}', true, 'block'),"
        " ('ops', 'null', NULL, NULL, '{}', false, 'release')",
        SECRET,
    )
    ids = {name: uuid.uuid4() for name in ("old", "new", "xss", "queued")}
    await conn.execute(
        "INSERT INTO outbox.dead_letters (message_id, endpoint, key, payload, attempts, last_error,"
        " reason, created_at, dead_at) VALUES"
        " ($1, 'crm', 'a', '{\"n\": 1}', 3, 'HTTP 500', 'too many attempts', now(),"
        "  now() - interval '40 days'),"
        " ($2, 'crm', 'b', '{\"n\": 2}', 1, 'timeout: 10 s', 'too many attempts', now(),"
        "  now()),"
        " ($3, 'ops', $4, $5::jsonb, 1, $4, 'rejected', now(), now())",
        ids["old"], ids["new"], ids["xss"], XSS, f'{{"html": "{XSS}"}}',
    )  # fmt: skip
    await conn.execute(
        "INSERT INTO outbox.key_blocks (endpoint, key, message_id) VALUES ('crm', 'a', $1)",
        ids["old"],
    )
    await conn.execute(
        "INSERT INTO outbox.messages (id, endpoint, payload, key) VALUES ($1, 'crm', '{}', 'z')",
        ids["queued"],
    )
    return ids


@pytest.fixture
async def web(database_url: str, tmp_path: Path) -> AsyncIterator[WebProcess]:
    process = WebProcess(database_url, TOKEN, log_dir=tmp_path)
    try:
        await process.ready()
        yield process
    finally:
        process.stop()


@contextlib.asynccontextmanager
async def signed_in(web: WebProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=web.url, timeout=10) as client:
        answer = await client.get("/login", params={"token": TOKEN})
        assert answer.status_code == 303
        assert answer.headers["location"] == "/"
        yield client


async def paused_at(conn: asyncpg.Connection, name: str) -> object:
    return await conn.fetchval("SELECT paused_at FROM outbox.endpoints WHERE name = $1", name)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page has no CSRF token"
    return found.group(1)


async def test_every_page_needs_a_sign_in_with_the_token(web: WebProcess) -> None:
    async with httpx.AsyncClient(base_url=web.url, timeout=10) as anonymous:
        page = await anonymous.get("/")
        assert (page.status_code, page.headers["location"]) == (303, "/login")
        for path in ("/api/throughput", "/fragments/overview"):
            assert (await anonymous.get(path)).status_code == 401
        assert (await anonymous.post("/endpoints/ops/pause")).status_code == 401
        wrong = await anonymous.post("/login", data={"token": "not-it"})
        assert wrong.status_code == 401
        assert "That is not the dashboard&#39;s token." in wrong.text
        assert "set-cookie" not in wrong.headers
        assert (await anonymous.get("/static/htmx-2.0.11.min.js")).status_code == 200
    async with signed_in(web) as client:
        cookie = client.cookies.jar
        (session,) = list(cookie)
        assert session.name == "outbox_session"
        assert session.has_nonstandard_attr("HttpOnly")
        page = await client.get("/")
        assert page.status_code == 200
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
        await client.post("/logout", data={"csrf": csrf_of(page.text)})
        assert (await client.get("/")).status_code == 303
    assert TOKEN not in web.output()


async def test_actions_need_the_session_csrf_token_and_then_work(
    web: WebProcess, conn: asyncpg.Connection
) -> None:
    await seed(conn)
    async with signed_in(web) as client:
        forged = await client.post("/endpoints/ops/pause", data={"reason": "x"})
        assert forged.status_code == 403
        stale = await client.post("/endpoints/ops/pause", data={"reason": "x", "csrf": "old"})
        assert stale.status_code == 403
        assert await paused_at(conn, "ops") is None
        csrf = csrf_of((await client.get("/endpoints/ops")).text)
        done = await client.post("/endpoints/ops/pause", data={"reason": "CRM down", "csrf": csrf})
        assert (done.status_code, done.headers["location"]) == (303, "/endpoints/ops")
        reason = await conn.fetchval(
            "SELECT paused_reason FROM outbox.endpoints WHERE name = 'ops'"
        )
        assert reason == "CRM down"
        shown = await client.get("/endpoints/ops")
        assert "Paused ops." in shown.text
        assert "Resume" in shown.text
        await client.post("/endpoints/ops/resume", data={"csrf": csrf})
        assert await paused_at(conn, "ops") is None
        unblocked = await client.post("/endpoints/crm/unblock", data={"key": "a", "csrf": csrf})
        assert unblocked.status_code == 303
        assert await conn.fetchval("SELECT count(*) FROM outbox.key_blocks") == 0
        missing = await client.post("/endpoints/crm/unblock", data={"key": "a", "csrf": csrf})
        assert missing.status_code == 400
        assert "is not blocked" in missing.text


async def test_dead_letters_requeue_one_a_selection_or_all_that_match_and_purge(
    web: WebProcess, conn: asyncpg.Connection
) -> None:
    ids = await seed(conn)
    async with signed_in(web) as client:
        page = await client.get("/dead", params={"error": "TIMEOUT"})
        assert page.status_code == 200
        assert '<strong id="dead-total">1</strong>' in page.text
        assert str(ids["new"]) in page.text
        assert str(ids["old"]) not in page.text
        csrf = csrf_of(page.text)
        # All that match: first a page that says how many, then the requeue.
        asked = await client.post(
            "/dead/requeue", data={"csrf": csrf, "scope": "matching", "error": "timeout"}
        )
        assert asked.status_code == 200
        assert "Requeue 1 dead letter(s)?" in asked.text
        assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 3
        done = await client.post(
            "/dead/requeue",
            data={"csrf": csrf, "scope": "matching", "error": "timeout", "confirm": "yes"},
        )
        assert done.status_code == 303
        assert await conn.fetchval("SELECT count(*) FROM outbox.messages WHERE id = $1", ids["new"])
        # A selection: the checked ids (one, as a row's own button sends it, or several).
        picked = [("csrf", csrf), ("id", str(ids["xss"])), ("id", str(ids["old"]))]
        await client.post("/dead/requeue", content=urlencode(picked), headers=FORM)
        assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0
        await conn.execute(
            "INSERT INTO outbox.dead_letters (message_id, endpoint, payload, attempts,"
            " created_at, dead_at) VALUES (gen_random_uuid(), 'crm', '{}', 1, now(),"
            " now() - interval '40 days')"
        )
        bad = await client.post("/dead/requeue", data={"csrf": csrf, "id": "nope"})
        assert bad.status_code == 400
        assert "is not a message id" in bad.text
        # Purge by age: the confirmation says how many.
        asked = await client.post("/dead/purge", data={"csrf": csrf, "older_than": "30d"})
        assert "Purge 1 dead letter(s)?" in asked.text
        await client.post("/dead/purge", data={"csrf": csrf, "older_than": "30d", "confirm": "yes"})
        assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0
        flash = await client.get("/dead")
        assert "Purged 1 dead letter(s) older than 30d." in flash.text
        wrong = await client.get("/dead", params={"since": "yesterday-ish"})
        assert wrong.status_code == 400
        assert "neither a time" in wrong.text


@pytest.mark.parametrize("role", ["outbox_monitor", "outbox_operator"])
async def test_what_each_role_sees_and_may_do(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path, role: str
) -> None:
    await operate.apply_roles(conn)
    await seed(conn)
    process = WebProcess(f"{database_url}?role={role}", TOKEN, log_dir=tmp_path)
    try:
        await process.ready()
        async with signed_in(process) as client:
            overview = await client.get("/")
            assert overview.status_code == 200
            assert role in overview.text
            endpoint = await client.get("/endpoints/crm")
            csrf = csrf_of(endpoint.text)
            pause = await client.post("/endpoints/crm/pause", data={"csrf": csrf, "reason": "x"})
            dead = await client.get("/dead")
            if role == "outbox_monitor":
                assert "read-only" in overview.text
                assert "Pause" not in endpoint.text
                assert "Unblock" not in endpoint.text
                assert pause.status_code == 403
                assert "may only read" in pause.text
                assert dead.status_code == 403
                requeue = await client.post(
                    "/dead/requeue", data={"csrf": csrf, "scope": "matching"}
                )
                assert requeue.status_code == 403
            else:
                assert "Pause" in endpoint.text
                assert pause.status_code == 303
                assert dead.status_code == 200
                assert "Requeue all 3 that match" in dead.text
    finally:
        process.stop()
    assert (await paused_at(conn, "crm") is not None) is (role == "outbox_operator")
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 3


async def test_output_is_escaped_and_no_secret_reaches_a_page(
    web: WebProcess, conn: asyncpg.Connection
) -> None:
    ids = await seed(conn)
    await operate.pause_endpoint(conn, "ops", XSS)
    pages = ["/", "/fragments/overview", "/endpoints/crm", "/endpoints/ops", "/dead",
             f"/messages/{ids['xss']}", f"/messages/{ids['queued']}", "/messages",
             "/messages?key=%3Cscript%3E", "/api/throughput"]  # fmt: skip
    async with signed_in(web) as client:
        texts = []
        for path in pages:
            answer = await client.get(path)
            assert answer.status_code == 200, path
            texts.append(answer.text)
    everything = "\n".join(texts)
    assert "<script>alert" not in everything
    assert "&lt;script&gt;alert(" in everything  # shown, as text
    hidden = (SECRET, SECRET[6:], "URLPASSWORD", "URLTOKEN", "QUERYSECRET", "HEADERSECRET", TOKEN)
    for secret in hidden:
        assert secret not in everything, secret
    assert "crm.example" in everything  # the host is shown
    assert "Authorization" in everything  # a header's name, not its value
    assert TOKEN not in web.output()


async def test_the_message_timeline_and_search(web: WebProcess, conn: asyncpg.Connection) -> None:
    ids = await seed(conn)
    await conn.execute(
        "INSERT INTO outbox.attempts (message_id, endpoint, attempt, started_at, duration_ms,"
        " status_code, outcome, error, reason, response_excerpt) VALUES"
        " ($1, 'crm', 1, now() - interval '2 minutes', 12.5, 503, 'retrying', NULL, 'HTTP 503',"
        "  'busy, try later')",
        ids["queued"],
    )
    async with signed_in(web) as client:
        story = await client.get(f"/messages/{ids['queued']}")
        assert "HTTP 503" in story.text
        assert "busy, try later" in story.text
        assert "retrying" in story.text
        found = await client.get("/messages", params={"key": "z"})
        assert str(ids["queued"]) in found.text
        dead = await client.get("/messages", params={"state": "dead", "endpoint": "crm"})
        assert str(ids["old"]) in dead.text
        assert str(ids["queued"]) not in dead.text
        unknown = await client.get(f"/messages/{uuid.uuid4()}")
        assert unknown.status_code == 404
        assert (await client.get("/endpoints/nope")).status_code == 404


async def test_the_chart_data_counts_the_last_hour(
    web: WebProcess, conn: asyncpg.Connection
) -> None:
    await seed(conn)
    await conn.execute(
        "INSERT INTO outbox.attempt_minutes (endpoint, minute, delivered, failed)"
        " VALUES ('crm', date_trunc('minute', now()), 7, 2),"
        " ('ops', date_trunc('minute', now()) - interval '2 hours', 100, 0)"
    )
    async with signed_in(web) as client:
        series = (await client.get("/api/throughput")).json()
    assert len(series["minute"]) == 60
    assert series["delivered"][-1] == 7
    assert series["failed"][-1] == 2
    assert sum(series["delivered"]) == 7  # two hours ago is not in the last hour
    assert timedelta(seconds=series["minute"][1] - series["minute"][0]) == timedelta(minutes=1)


async def test_bad_input_is_a_clear_400_never_a_500(
    web: WebProcess, conn: asyncpg.Connection
) -> None:
    await seed(conn)
    async with signed_in(web) as client:
        for path, params in [
            ("/dead", {"error": "a\x00b"}),
            ("/dead", {"since": "99999999999d"}),
            ("/dead", {"until": "0001-01-01T00:00:00+14:00"}),
            ("/messages", {"key": "\x00"}),
            ("/messages", {"id": "not-a-uuid"}),
            ("/messages", {"state": "lost"}),
            ("/api/throughput", {"endpoint": "\x00"}),
        ]:
            answer = await client.get(path, params=params)
            assert answer.status_code == 400, (path, params, answer.status_code)
        assert (await client.get("/endpoints/%00")).status_code == 404
        csrf = csrf_of((await client.get("/dead")).text)
        for path, form in [
            ("/endpoints/ops/pause", {"reason": "x\x00"}),
            ("/dead/purge", {"older_than": "1000000000000d"}),
            ("/dead/purge", {"older_than": "soon"}),
            ("/dead/requeue", {"scope": "matching", "since": "99999999999d"}),
        ]:
            answer = await client.post(path, data={"csrf": csrf, **form})
            assert answer.status_code == 400, (path, form, answer.status_code)
    assert await paused_at(conn, "ops") is None
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 3


async def test_the_cookie_is_https_only_when_asked(database_url: str, tmp_path: Path) -> None:
    process = WebProcess(database_url, TOKEN, "--secure-cookies", log_dir=tmp_path)
    try:
        await process.ready()
        async with httpx.AsyncClient(base_url=process.url) as client:
            answer = await client.get("/login", params={"token": TOKEN})
        assert "secure" in answer.headers["set-cookie"].lower().split("; ")
    finally:
        process.stop()


async def test_a_short_token_is_refused_at_start(database_url: str, tmp_path: Path) -> None:
    process = WebProcess(database_url, "short", log_dir=tmp_path)
    assert process.proc.wait(30) == 2
    assert "OUTBOX_WEB_TOKEN: must be at least 16 characters" in process.output()
    assert "short" not in process.output().replace("OUTBOX_WEB_TOKEN", "")
