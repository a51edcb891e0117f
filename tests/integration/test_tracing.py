"""One trace from the producer's span to the receiver: W3C trace context stored at
enqueue, attempt spans in the worker (the OpenTelemetry SDK's in-memory exporter),
and the context the receiver gets in ``traceparent``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from support import add_endpoint, running_worker, until

import outbox
from outbox.db.connect import asyncpg_url
from outbox.deliver.channels import registry
from outbox.deliver.otel import OtelTracer
from outbox.devtools.receiver import Action, Receiver, fail_first
from outbox.operate.dead import requeue
from outbox.operate.messages import message_story
from outbox.produce.trace import trace_problem

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def tracer_for(provider: TracerProvider, *, links: bool = False) -> OtelTracer:
    telemetry = {name: spec.telemetry for name, spec in registry.channels().items()}
    return OtelTracer(provider, telemetry, links=links)


async def drained(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval("SELECT count(*) = 0 FROM outbox.messages")  # type: ignore[no-any-return]


def attempts(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    found = [s for s in exporter.get_finished_spans() if s.instrumentation_scope.name == "outbox"]
    return sorted(found, key=lambda s: s.start_time or 0)


def parts(traceparent: str) -> tuple[str, str, str]:
    version_, trace_id, parent_id, flags = traceparent.split("-")
    assert version_ == "00"
    return trace_id, parent_id, flags


# -- at enqueue ------------------------------------------------------------------


async def test_sql_producers_pass_the_context_and_existing_calls_still_work(
    conn: asyncpg.Connection,
) -> None:
    await add_endpoint(conn, "hook", "https://example.com/in")
    async with conn.transaction():
        plain = await conn.fetchval("SELECT outbox.enqueue('hook', '{}')")
        traced = await conn.fetchval(
            "SELECT outbox.enqueue('hook', '{}', traceparent => $1, tracestate => 'congo=t61')",
            TRACEPARENT,
        )
        many = await conn.fetchval(
            "SELECT outbox.enqueue_many(ARRAY['hook', 'hook'], ARRAY['{}', '{}']::jsonb[], "
            "traceparents => ARRAY[$1, NULL])",
            TRACEPARENT,
        )
    rows = {
        r["id"]: (r["traceparent"], r["tracestate"])
        for r in await conn.fetch("SELECT id, traceparent, tracestate FROM outbox.messages")
    }
    assert rows[plain] == (None, None)
    assert rows[traced] == (TRACEPARENT, "congo=t61")
    assert [rows[i] for i in many] == [(TRACEPARENT, None), (None, None)]


CASES = [
    ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None, None),
    ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "a=1,b@c=2 , ,x=y z", None),
    ("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-comes", None, None),
    ("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", None, "traceparent"),
    ("00-00000000000000000000000000000000-b7ad6b7169203331-01", None, "traceparent"),
    ("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", None, "traceparent"),
    ("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None, "traceparent"),
    ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x", None, "traceparent"),
    ("not a traceparent", None, "traceparent"),
    (None, "a=1", "tracestate"),
    ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "A=1", "tracestate"),
    ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "a=b=c", "tracestate"),
    ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "a=1 ", None),
    (
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ",".join(f"k{i}=v" for i in range(33)),
        "tracestate",
    ),
    ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "k=" + "v" * 600, "tracestate"),
]


@pytest.mark.parametrize(("traceparent", "tracestate", "field"), CASES)
async def test_python_and_sql_judge_a_context_alike_and_a_bad_one_inserts_nothing(
    conn: asyncpg.Connection, traceparent: str | None, tracestate: str | None, field: str | None
) -> None:
    await add_endpoint(conn, "hook", "https://example.com/in")
    python = trace_problem(traceparent, tracestate)
    assert (python and python[0]) == field
    if field is not None:
        with pytest.raises(outbox.InvalidInputError) as raised:
            async with conn.transaction():
                await outbox.enqueue(
                    conn, "hook", {}, traceparent=traceparent, tracestate=tracestate
                )
        assert raised.value.field == field
    sql_error: asyncpg.PostgresError | None = None
    try:
        async with conn.transaction():
            await conn.execute(
                "SELECT outbox.enqueue('hook', '{}', traceparent => $1, tracestate => $2)",
                traceparent,
                tracestate,
            )
    except asyncpg.PostgresError as exc:
        sql_error = exc
    if field is None:
        assert sql_error is None
        assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 1
    else:
        assert sql_error is not None
        assert sql_error.sqlstate == "OB002"
        assert getattr(sql_error, "column_name", None) == field
        assert python is not None
        assert str(sql_error) == f"{field}: {python[1]}"
        assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 0


async def test_python_producers_capture_the_current_span(
    conn: asyncpg.Connection,
    database_url: str,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, _ = spans
    tracer = provider.get_tracer("app")
    await add_endpoint(conn, "hook", "https://example.com/in")
    with tracer.start_as_current_span("POST /orders") as request:
        context = request.get_span_context()
        async with conn.transaction():
            one = await outbox.enqueue(conn, "hook", {"n": 1})
            batch = await outbox.enqueue_many(
                conn,
                [
                    {"endpoint": "hook", "payload": {"n": 2}},
                    {"endpoint": "hook", "payload": {"n": 3}, "traceparent": TRACEPARENT},
                ],
            )
        engine = create_async_engine(
            asyncpg_url(database_url).replace("postgresql", "postgresql+asyncpg", 1)
        )
        try:
            async with AsyncSession(engine) as session, session.begin():
                via_session = await outbox.enqueue(session, "hook", {"n": 4})
        finally:
            await engine.dispose()
    async with conn.transaction():
        outside = await outbox.enqueue(conn, "hook", {"n": 5})
    expected = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    rows = dict(await conn.fetch("SELECT id, traceparent FROM outbox.messages"))
    assert rows[one] == rows[batch[0]] == rows[via_session] == expected
    assert rows[batch[1]] == TRACEPARENT  # its own, given explicitly
    assert rows[outside] is None  # no current span


# -- at delivery -----------------------------------------------------------------


async def test_one_trace_from_the_producer_through_every_attempt_to_the_receiver(
    database_url: str,
    conn: asyncpg.Connection,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """Two failures then a success: three sibling spans under the producer's span,
    and each request's traceparent names its own attempt span as the parent."""
    provider, exporter = spans
    secret = "whsec_c2VjcmV0LXNpZ25pbmcta2V5LXRoYXQtaXMtbG9uZw=="
    with Receiver(fail_first(2, Action(status=503))) as rx:
        await add_endpoint(
            conn,
            "hook",
            rx.url("/in").replace("http://", "http://user:url-password@"),
            secret=secret,
            headers=json.dumps({"Authorization": "Bearer header-secret"}),
        )
        async with conn.transaction():
            message_id = await outbox.enqueue(
                conn,
                "hook",
                {"order": 1},
                traceparent=TRACEPARENT,
                tracestate="congo=t61rcWkgMzE",
            )
        async with running_worker(database_url, tracer=tracer_for(provider)):
            await until(lambda: drained(conn))
    got = rx.snapshot()
    found = attempts(exporter)
    assert len(got) == len(found) == 3
    for number, (request, span) in enumerate(zip(got, found, strict=True), start=1):
        trace_id, parent_id, flags = parts(request.headers["traceparent"])
        assert trace_id == TRACE_ID == f"{span.context.trace_id:032x}"
        assert parent_id == f"{span.context.span_id:016x}"  # the receiver's parent: this attempt
        assert flags == "01"
        assert request.headers["tracestate"] == "congo=t61rcWkgMzE"
        assert span.parent is not None
        assert span.parent.span_id == 0xB7AD6B7169203331  # siblings, under the producer's span
        assert span.kind is SpanKind.CLIENT
        assert span.name == "POST hook"
        attributes = dict(span.attributes or {})
        assert attributes["outbox.message.id"] == str(message_id)
        assert attributes["outbox.endpoint"] == "hook"
        assert attributes["outbox.attempt"] == number
        assert attributes["http.request.method"] == "POST"
        assert attributes["server.address"] == "127.0.0.1"
        assert attributes["server.port"] == int(rx.url().split(":")[2].split("/")[0])
        if number < 3:
            assert attributes["outbox.outcome"] == "retrying"
            assert attributes["http.response.status_code"] == 503
            assert attributes["error.type"] == "503"
            assert "outbox.next_retry_at" in attributes
            assert span.status.status_code is StatusCode.ERROR
        else:
            assert attributes["outbox.outcome"] == "delivered"
            assert attributes["http.response.status_code"] == 200
            assert "error.type" not in attributes
            assert span.status.status_code is not StatusCode.ERROR
        shown = json.dumps({**attributes, "events": [e.name for e in span.events]})
        for secret_text in ("url-password", "header-secret", secret, "c2VjcmV0"):
            assert secret_text not in shown
        assert "user" not in attributes.get("server.address", "")


async def test_with_links_each_attempt_starts_a_trace_of_its_own_linked_to_the_producer(
    database_url: str,
    conn: asyncpg.Connection,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    with Receiver(fail_first(1, Action(status=500))) as rx:
        await add_endpoint(conn, "hook", rx.url())
        async with conn.transaction():
            await outbox.enqueue(conn, "hook", {}, traceparent=TRACEPARENT)
        async with running_worker(database_url, tracer=tracer_for(provider, links=True)):
            await until(lambda: drained(conn))
    found = attempts(exporter)
    assert len(found) == 2
    assert found[0].context.trace_id != found[1].context.trace_id  # a trace each
    for request, span in zip(rx.snapshot(), found, strict=True):
        assert span.parent is None
        assert [f"{link.context.trace_id:032x}" for link in span.links] == [TRACE_ID]
        trace_id, parent_id, _ = parts(request.headers["traceparent"])
        assert (trace_id, parent_id) == (
            f"{span.context.trace_id:032x}",
            f"{span.context.span_id:016x}",
        )


async def test_without_a_tracer_the_producers_context_goes_on_unchanged(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver() as rx:
        await add_endpoint(conn, "hook", rx.url())
        async with conn.transaction():
            await outbox.enqueue(conn, "hook", {}, traceparent=TRACEPARENT, tracestate="a=1")
            await outbox.enqueue(conn, "hook", {})
        async with running_worker(database_url):
            await until(lambda: drained(conn))
    by_trace = sorted(r.headers.get("traceparent", "") for r in rx.snapshot())
    assert by_trace == ["", TRACEPARENT]
    traced = next(r for r in rx.snapshot() if "traceparent" in r.headers)
    assert traced.headers["tracestate"] == "a=1"


async def test_a_message_without_context_gets_a_root_span_and_the_receiver_joins_it(
    database_url: str,
    conn: asyncpg.Connection,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    with Receiver() as rx:
        await add_endpoint(conn, "hook", rx.url())
        async with conn.transaction():
            await outbox.enqueue(conn, "hook", {})
        async with running_worker(database_url, tracer=tracer_for(provider)):
            await until(lambda: drained(conn))
    (span,) = attempts(exporter)
    assert span.parent is None
    trace_id, parent_id, _ = parts(rx.snapshot()[0].headers["traceparent"])
    assert (trace_id, parent_id) == (
        f"{span.context.trace_id:032x}",
        f"{span.context.span_id:016x}",
    )


async def test_a_requeued_dead_letter_keeps_its_trace(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver(fail_first(1, Action(status=400))) as rx:
        await add_endpoint(conn, "hook", rx.url())
        async with conn.transaction():
            message_id = await outbox.enqueue(conn, "hook", {}, traceparent=TRACEPARENT)
        async with running_worker(database_url):
            await until(lambda: drained(conn))
            assert (
                await conn.fetchval(
                    "SELECT traceparent FROM outbox.dead_letters WHERE message_id = $1", message_id
                )
                == TRACEPARENT
            )
            assert await requeue(conn, ids=[message_id]) == 1  # as `outbox dead requeue` does
            await until(lambda: len(rx.snapshot()) == 2)
    assert rx.snapshot()[1].headers["traceparent"] == TRACEPARENT
    assert rx.snapshot()[1].headers["webhook-id"] == str(message_id)


async def test_a_messages_story_shows_its_trace_context(conn: asyncpg.Connection) -> None:
    """`outbox message show` names the trace to look up, pending or dead."""
    await add_endpoint(conn, "hook", "https://example.com/in")
    async with conn.transaction():
        message_id = await outbox.enqueue(conn, "hook", {}, traceparent=TRACEPARENT)
    story = await message_story(conn, message_id)
    assert story.to_json()["traceparent"] == TRACEPARENT
    assert story.to_json()["tracestate"] is None


async def test_the_enqueue_command_takes_the_context_from_its_flags_or_the_environment(
    database_url: str, conn: asyncpg.Connection
) -> None:
    from click.testing import CliRunner, Result

    from outbox.cli import main

    await add_endpoint(conn, "hook", "https://example.com/in")

    def invoke(*args: str, **env: str) -> Result:
        environ = {"OUTBOX_DATABASE_URL": database_url, **env}
        return CliRunner().invoke(main, list(args), env=environ)

    def run(*args: str, **env: str) -> Result:  # in a thread: the command runs its own loop
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(invoke, *args, **env).result()

    flags = run("enqueue", "hook", "--payload", "{}", "--traceparent", TRACEPARENT)
    assert flags.exit_code == 0, flags.output
    inherited = run("enqueue", "hook", "--payload", "{}", TRACEPARENT=TRACEPARENT, TRACESTATE="a=1")
    assert inherited.exit_code == 0, inherited.output
    bad = run("enqueue", "hook", "--payload", "{}", "--traceparent", "x")
    assert bad.exit_code != 0
    assert "traceparent: is not a W3C traceparent" in bad.output
    stored = await conn.fetch("SELECT traceparent, tracestate FROM outbox.messages ORDER BY seq")
    assert [tuple(r) for r in stored] == [(TRACEPARENT, None), (TRACEPARENT, "a=1")]
