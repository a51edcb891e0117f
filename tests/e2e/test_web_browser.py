"""``outbox web`` in a real browser: Playwright driving Debian's Chromium.

Signs in through the form, watches an endpoint turn "circuit open" while a
real worker fails against a receiver (the page refreshes itself, no reload),
requeues and purges dead letters and pauses and resumes an endpoint by
clicking, checks the database after each; a read-only role sees no action
and a forged one is refused; script in the data stays text.

Chromium: ``apt-get install chromium`` (Playwright's own download cannot work
here). Without it these tests skip, saying so, except in CI
(``OUTBOX_REQUIRE_BROWSER=1``), where they fail. ``OUTBOX_WEB_SCREENSHOTS=DIR``
saves the overview and a message timeline there (the README's are in docs/).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from support import WebProcess, WorkerProcess, add_endpoint

import outbox
from outbox import operate
from outbox.devtools.receiver import OK, Action, Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.single_pass]

TOKEN = "browser-test-token-51c0"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    chromium = shutil.which("chromium")
    if chromium is None:
        message = "no chromium on PATH: apt-get install chromium"
        if os.environ.get("OUTBOX_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@contextlib.asynccontextmanager
async def dashboard(database_url: str, tmp_path: Path, browser: Any) -> AsyncIterator[Any]:
    """``outbox web`` on ``database_url``, and a page signed in through the form."""
    web = WebProcess(database_url, TOKEN, log_dir=tmp_path)
    try:
        await web.ready()
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        page.set_default_timeout(15_000)
        await page.goto(web.url + "/")
        assert page.url.endswith("/login")  # sent to sign in first
        await page.fill("input[name=token]", TOKEN)
        await page.click("button:text-is('Sign in')")
        await page.wait_for_url(web.url + "/")
        page.web = web
        yield page
        await context.close()
    finally:
        web.stop()


def screenshot(page: Any, name: str, tmp_path: Path) -> Any:
    folder = Path(os.environ.get("OUTBOX_WEB_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return page.screenshot(path=str(folder / name), full_page=True)


async def test_an_endpoint_turns_circuit_open_live_while_a_worker_fails(
    database_url: str, conn: asyncpg.Connection, workers: list[WorkerProcess],
    tmp_path: Path, browser: Any,
) -> None:  # fmt: skip
    failing = Action(status=503)
    with Receiver(lambda path, _id, _nth: failing if path == "/hooks" else OK) as rx:
        await add_endpoint(conn, "crm", rx.url("/hooks"), breaker_failures=3,
                           breaker_cooldown=timedelta(minutes=10), max_attempts=2)  # fmt: skip
        await add_endpoint(conn, "audit", rx.url("/audit"), breaker_failures=1000)
        async with conn.transaction():
            await outbox.enqueue_many(
                conn, [{"endpoint": "crm", "payload": {"order": i}, "key": f"c{i % 3}"}
                       for i in range(12)]
                + [{"endpoint": "audit", "payload": {"event": i}} for i in range(40)],
            )  # fmt: skip
        async with dashboard(database_url, tmp_path, browser) as page:
            row = page.locator('tr[data-endpoint="crm"]')
            assert await row.locator(".state").inner_text() == "active"
            await page.evaluate("window.stillTheSamePage = true")
            worker = WorkerProcess(database_url, "--concurrency", "4", log_dir=tmp_path)
            workers.append(worker)
            await row.locator(".state-circuit_open").wait_for(timeout=30_000)
            assert await page.evaluate("window.stillTheSamePage") is True  # no reload
            assert "circuit open" in await row.inner_text()
            assert "503" in await row.locator(".why").inner_text()
            await page.locator('#throughput[data-drawn="true"] canvas').wait_for()
            # The chart redraws itself too: the deliveries and failed attempts reach it.
            await page.locator('#throughput[data-failed]:not([data-failed="0"])').wait_for()
            await page.locator('#throughput[data-delivered="40"]').wait_for()
            await screenshot(page, "web-overview.png", tmp_path)
            worker.signal(signal.SIGTERM)
            assert worker.wait(30) == 0, worker.output()
            await page.click('tr[data-endpoint="crm"] a')
            await page.wait_for_url("**/endpoints/crm")
            assert "circuit open" in await page.locator("h1").inner_text()
            attempt = page.locator("table.grid tbody tr td a").first
            await attempt.click()
            await page.wait_for_url("**/messages/*")
            timeline = await page.locator("table.grid").inner_text()
            assert "HTTP 503" in timeline
            await screenshot(page, "web-message.png", tmp_path)
    state = await conn.fetchval("SELECT state FROM outbox.endpoint_health WHERE endpoint = 'crm'")
    assert state == "circuit_open"


async def test_requeue_and_purge_dead_letters_by_clicking(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path, browser: Any
) -> None:
    await conn.execute("INSERT INTO outbox.endpoints (name, channel) VALUES ('ops', 'null')")
    fresh, old = uuid.uuid4(), uuid.uuid4()
    await conn.execute(
        "INSERT INTO outbox.dead_letters (message_id, endpoint, payload, attempts, last_error,"
        " reason, created_at, dead_at) VALUES"
        " ($1, 'ops', '{}', 5, 'HTTP 500', 'too many attempts', now(), now()),"
        " ($2, 'ops', '{}', 5, 'HTTP 500', 'too many attempts', now(), now() - interval '40 days')",
        fresh, old,
    )  # fmt: skip
    async with dashboard(database_url, tmp_path, browser) as page:
        await page.click("nav >> text=Dead letters")
        await page.wait_for_url("**/dead")
        assert await page.locator("#dead-total").inner_text() == "2"
        await page.click(f'tr[data-id="{fresh}"] button.requeue-one')
        await page.locator(".flash").wait_for()
        assert await page.locator(".flash").inner_text() == "Requeued 1 dead letter(s)."
        assert await conn.fetchval("SELECT count(*) FROM outbox.messages WHERE id = $1", fresh)
        await page.fill("input[name=older_than]", "30d")
        await page.click("text=Purge…")
        assert await page.locator("h1").inner_text() == "Purge 1 dead letter(s)?"
        assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 1  # not yet
        await page.click("button.danger")
        await page.locator(".flash").wait_for()
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0


async def test_pause_and_resume_an_endpoint_by_clicking(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path, browser: Any
) -> None:
    await conn.execute("INSERT INTO outbox.endpoints (name, channel) VALUES ('ops', 'null')")
    async with dashboard(database_url, tmp_path, browser) as page:
        await page.click('tr[data-endpoint="ops"] a')
        await page.fill("input[name=reason]", "receiver upgrade until 10:00")
        await page.click("button:text-is('Pause')")
        await page.locator("h1 .state-paused").wait_for()
        reason = await conn.fetchval(
            "SELECT paused_reason FROM outbox.endpoints WHERE name = 'ops'"
        )
        assert reason == "receiver upgrade until 10:00"
        await page.click("button:text-is('Resume')")
        await page.locator("h1 .state-active").wait_for()
    assert await conn.fetchval("SELECT paused_at FROM outbox.endpoints WHERE name = 'ops'") is None


async def test_a_read_only_role_sees_no_action_and_a_forged_one_is_refused(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path, browser: Any
) -> None:
    await operate.apply_roles(conn)
    await conn.execute("INSERT INTO outbox.endpoints (name, channel) VALUES ('ops', 'null')")
    async with dashboard(f"{database_url}?role=outbox_monitor", tmp_path, browser) as page:
        assert "read-only" in await page.locator("header .role").inner_text()
        await page.click('tr[data-endpoint="ops"] a')
        await page.wait_for_url("**/endpoints/ops")
        assert await page.locator("button:text-is('Pause')").count() == 0
        assert await page.locator("section.actions").count() == 0
        status = await page.evaluate(
            """async () => {
                const csrf = document.querySelector('input[name=csrf]').value;
                const body = new URLSearchParams({csrf, reason: 'forged'});
                const answer = await fetch('/endpoints/ops/pause', {method: 'POST', body});
                return answer.status;
            }"""
        )
        assert status == 403
    assert await conn.fetchval("SELECT paused_at FROM outbox.endpoints WHERE name = 'ops'") is None


async def test_script_in_the_data_shows_as_text_and_never_runs(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path, browser: Any
) -> None:
    script = "<script>window.ran = 'script'</script>"
    image = "<img src=x onerror=\"window.ran = 'img'\">"
    await conn.execute("INSERT INTO outbox.endpoints (name, channel) VALUES ('ops', 'null')")
    await operate.pause_endpoint(conn, "ops", image)
    letter = uuid.uuid4()
    await conn.execute(
        "INSERT INTO outbox.dead_letters (message_id, endpoint, key, payload, attempts,"
        " last_error, reason, created_at, dead_at)"
        " VALUES ($1, 'ops', $2, jsonb_build_object('note', $3::text), 1, $3, $2, now(), now())",
        letter, image, script,
    )  # fmt: skip
    dialogs: list[str] = []
    async with dashboard(database_url, tmp_path, browser) as page:
        page.on("dialog", lambda dialog: dialogs.append(dialog.message))
        for path in ("/", "/endpoints/ops", "/dead", f"/messages/{letter}"):
            await page.goto(page.web.url + path)
            assert await page.evaluate("window.ran === undefined"), path
        assert script in await page.locator("pre.payload").inner_text()
        await page.goto(page.web.url + "/dead")
        assert script in await page.locator(f'tr[data-id="{letter}"]').inner_text()
        await page.goto(page.web.url + "/")
        assert image in await page.locator('tr[data-endpoint="ops"] .why').inner_text()
    assert dialogs == []
