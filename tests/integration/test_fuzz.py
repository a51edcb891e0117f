"""Fuzzed input against the real database: accepted and delivered, or rejected cleanly.

Hypothesis draws messages -- payloads (deep nesting, unicode up to U+10FFFF,
NUL characters, strings around the size limit, numbers at the edges: huge
integers, -0.0, 1e308, 5e-324, NaN and infinities), keys, idempotency keys,
priorities, delivery times and endpoint names, existing or not -- and sends
each through one of the producer APIs: `outbox.enqueue` and
`outbox.enqueue_many` on asyncpg, `outbox.enqueue` on a SQLAlchemy
AsyncConnection, `outbox.enqueue_sync` on a SQLAlchemy (psycopg) Connection,
and the SQL functions ``outbox.enqueue(...)`` / ``outbox.enqueue_many(...)``
called directly.

Each input must be either

* **rejected**: the Python API raises an `outbox.InvalidInputError` whose
  ``field`` is one of the fields the test knows to be wrong; the SQL functions
  raise a PostgreSQL error (SQLSTATE ``OB00x`` naming the field where
  ``outbox.enqueue`` itself judges it, or PostgreSQL's own error where the
  value cannot even become ``text``/``jsonb``: NUL, lone surrogates, NaN). In
  both cases ``outbox.messages`` and ``outbox.idempotency_keys`` hold exactly
  as many rows as before; or
* **accepted**: a row is inserted (or, for a repeated idempotency key, the
  first message's id comes back and nothing is inserted); after all examples
  one worker with the real webhook channel delivers every due message to a
  `Receiver`, and the received body is identical *in JSON meaning* to the
  input.

"Identical in JSON meaning" is checked precisely as follows (see
`meaning`): both sides become a tree where objects are unordered maps of
string keys (jsonb sorts keys and keeps the last of duplicates; Python dicts
have none), arrays keep their order, strings compare code point by code point
(escape spellings such as ``\\u00e9`` vs ``é`` do not matter), ``true``,
``false`` and ``null`` are distinct from numbers, and numbers compare as exact
decimal values of their JSON text: ``1`` = ``1.0`` = ``0.1e1``, ``-0.0`` =
``0``, ``1e308`` = a 1 followed by 308 zeros (jsonb keeps numbers as
``numeric``, so no digit is lost or invented). For a Python input the JSON
text is what ``json.dumps`` writes (a float's shortest repr); for the SQL
functions it is the text the test sent, as RFC 8259 reads it (an escaped
surrogate pair is one character). The body must also be valid UTF-8.

Per-message headers must arrive with the same value (HTTP strips surrounding
blanks); a delivery time in the future must be stored as given.

Inputs fuzzed per run: ``PYTHON_API_EXAMPLES + SQL_EXAMPLES`` (each example is
one call, with one message or a batch of up to three); the tests print the
count.

The bugs this fuzzing found (NUL and lone surrogates reaching the driver,
deep nesting, huge integers called NaN, non-ASCII header values) are fixed;
each has a deterministic test at the end, and the generators send those
inputs through both paths.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine
from support import add_endpoint, running_worker, until

import outbox
from outbox.db.connect import sqlalchemy_async_url
from outbox.devtools.receiver import Receiver
from outbox.settings.endpoint import ENDPOINT_NAME_PATTERN

PYTHON_API_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 150))
SQL_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 150))

LIMIT = 262_144  # outbox.config.max_payload_bytes, the migration's default
ENDPOINTS = ("hook", "hook.b-2")
PYTHON_APIS = ("enqueue", "enqueue_many", "sqlalchemy_async", "sqlalchemy_sync")
SQL_APIS = ("sql_enqueue", "sql_enqueue_many")

# -- what is drawn ---------------------------------------------------------------

SPECIAL = [
    "\x01",
    "\x1f",
    "\x7f",
    "\t",
    "\n",
    '"',
    "\\",
    "/",
    "'",
    "$$",
    "%s",
    "{}",
    "\u00e9",
    "e\u0301",  # combining accent
    "\u2028",
    "\u2029",
    "\ufeff",
    "\ud7ff",  # the code points on either side of the surrogate block
    "\ue000",
    "\uffff",
    "\U00010000",  # astral plane
    "\U0001f600",
    "\U0010ffff",
    "\u201c\u2019",  # unicode quotes
]
LONE_SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff", "\ud800\udc00"]


@st.composite
def mostly(
    draw: st.DrawFn, usual: st.SearchStrategy[Any], edge: st.SearchStrategy[Any], odds: int = 8
) -> Any:
    """``edge`` once in ``odds``, else ``usual``: most inputs must be valid, or the
    delivery half of the property would see too few of them."""
    return draw(edge) if draw(st.integers(1, odds)) == 1 else draw(usual)


def texts(
    *, surrogates: bool = False, min_size: int = 0, max_size: int = 20
) -> st.SearchStrategy[str]:
    """Strings of any characters but lone surrogates, salted with `SPECIAL` fragments;
    one in 32 may hold a NUL (and, with ``surrogates``, lone surrogates)."""
    clean = st.characters(codec="utf-8", exclude_characters="\x00") | st.sampled_from(SPECIAL)
    dirty = clean | st.just("\x00")
    if surrogates:
        dirty = dirty | st.sampled_from(LONE_SURROGATES)
    return mostly(
        st.lists(clean, min_size=min_size, max_size=max_size).map("".join),
        st.lists(dirty, min_size=min_size, max_size=max_size).map("".join),
        odds=32,
    )


numbers = mostly(
    st.one_of(
        st.integers(),
        st.integers(-(10**300), 10**300),
        st.sampled_from([0, -1, 2**31, 2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**30]),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from([-0.0, 0.1, 1e308, -1e308, 1.7976931348623157e308, 5e-324, 1e-300]),
    ),
    st.floats(),  # NaN and infinities too: JSON cannot carry them
)


def json_values(strings: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    leaves = st.none() | st.booleans() | numbers | strings
    return st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(strings, children, max_size=4)
        ),
        max_leaves=16,
    )


def nested(value: Any, depth: int) -> Any:
    """``value`` inside ``depth`` alternating arrays and objects."""
    for level in range(depth):
        value = [value] if level % 2 else {"d": value}
    return value


STRINGS = {s: texts(surrogates=s) for s in (False, True)}
VALUES = {s: json_values(STRINGS[s]) for s in (False, True)}
OBJECTS = {s: st.dictionaries(STRINGS[s], VALUES[s], max_size=5) for s in (False, True)}


@st.composite
def payloads(draw: st.DrawFn, *, surrogates: bool = False) -> Any:
    payload: Any = draw(OBJECTS[surrogates])
    if draw(st.integers(0, 9)) == 0:  # deep nesting (refused past the recursion limit)
        payload["deep"] = nested(draw(VALUES[surrogates]), draw(st.integers(50, 400)))
    if draw(st.integers(0, 9)) == 0:  # a string near the size limit, under or over it
        payload["big"] = "x" * (LIMIT - 40 + draw(st.integers(-100, 100)))
    if draw(st.integers(0, 29)) == 0:  # not an object at all
        payload = draw(VALUES[surrogates])
    return payload


endpoint_names = mostly(
    st.sampled_from(ENDPOINTS),
    st.sampled_from(
        [
            "missing",
            "",
            "a b",
            "x" * 64,
            "hook\n",
            "HOOK",
            "h\u00e9",
            "'; DROP TABLE outbox.messages; --",
        ]
    )
    | st.from_regex(ENDPOINT_NAME_PATTERN, fullmatch=True),
)


KEYS = {
    s: mostly(
        st.none() | texts(min_size=1, max_size=10),
        st.sampled_from(["", "a" * 255, "\u00e9" * 255, "a" * 256])
        | texts(surrogates=s, max_size=260),
    )
    for s in (False, True)
}
priorities = mostly(
    st.integers(-32768, 32767),
    st.integers(-(2**31), 2**31 - 1)
    | st.sampled_from([-32768, 32767, -32769, 32768, 2**31 - 1, -(2**31)]),
)
offsets = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-(23 * 60 + 59), 23 * 60 + 59)
)
# Years 2..9998: at datetime.min/max asyncpg and psycopg disagree (asyncpg sends
# them as -infinity/infinity); the SQL path tests those edges on their own.
wall_times = st.datetimes(datetime(2, 1, 1), datetime(9998, 12, 31))
soon = st.builds(lambda seconds: datetime.now(UTC) + timedelta(seconds=seconds), st.floats(-5, 0.5))
deliver_ats = mostly(
    st.none() | soon,
    wall_times
    | st.builds(lambda wall, tz: wall.replace(tzinfo=tz), wall_times, st.just(UTC) | offsets),
)
HEADER_NAMES = [
    "X-A",
    "x-trace-id",
    "Authorization",
    "webhook-id",
    "Content-Type",
    "a b",
    "X-\u00dc",
    "",
]
header_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E)
    | st.sampled_from(["\t", "\n", "\x00", "\x7f", "\u00eb", "\u2028", "\U0001f600"]),
    max_size=30,
)
headers = mostly(
    st.none(), st.dictionaries(st.sampled_from(HEADER_NAMES), header_values, max_size=3)
)


@dataclass
class Draft:
    endpoint: str
    payload: Any
    key: str | None
    idempotency_key: str | None
    priority: int
    deliver_at: datetime | None
    headers: dict[str, str] | None

    def __repr__(self) -> str:
        """Short enough to print: a string near the size limit shows as its length."""

        def cut(value: Any) -> Any:
            if isinstance(value, str) and len(value) > 300:
                return f"<{len(value)} chars: {value[:20]!r}...>"
            if isinstance(value, dict):
                return {cut(k): cut(v) for k, v in value.items()}
            if isinstance(value, list):
                return [cut(v) for v in value]
            return value

        fields = {f.name: cut(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return "Draft(" + ", ".join(f"{k}={v!r}" for k, v in fields.items()) + ")"

    def kwargs(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "idempotency_key": self.idempotency_key,
            "priority": self.priority,
            "deliver_at": self.deliver_at,
            "headers": self.headers,
        }


def drafts(*, surrogates: bool = False) -> st.SearchStrategy[Draft]:
    return st.builds(
        Draft,
        endpoint_names,
        payloads(surrogates=surrogates),
        KEYS[surrogates],
        KEYS[surrogates],
        priorities,
        deliver_ats,
        headers,
    )


# -- the oracle: which fields of a draft are wrong -------------------------------


def _walk(value: Any) -> list[Any]:
    out = [value]
    if isinstance(value, dict):
        for k, v in value.items():
            out += [k, *_walk(v)]
    elif isinstance(value, list):
        for v in value:
            out += _walk(v)
    return out


def _has_lone_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


def _payload_unstorable(payload: Any) -> bool:
    """NUL, a lone surrogate, NaN or an infinity anywhere in it."""
    for item in _walk(payload):
        if isinstance(item, str) and ("\x00" in item or _has_lone_surrogate(item)):
            return True
        if isinstance(item, float) and not math.isfinite(item):
            return True
    return False


def _key_wrong(key: str | None) -> bool:
    return key is not None and (
        key == "" or len(key) > 255 or "\x00" in key or _has_lone_surrogate(key)
    )


def _header_problem(headers: dict[str, str] | None) -> bool:
    import re

    if headers is None:
        return False
    reserved = {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type"}
    return any(
        not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}", name)
        or name.lower() in reserved
        or re.search(r"[\x00-\x08\x0a-\x1f\x7f]", value)
        or _has_lone_surrogate(value)
        for name, value in headers.items()
    )


async def problems(
    conn: asyncpg.Connection, draft: Draft, json_text: str, *, python: bool
) -> set[str]:
    """The fields of ``draft`` that must be rejected (empty: it must be accepted);
    ``json_text`` is its payload as sent, measured the way outbox.enqueue() does."""
    wrong: set[str] = set()
    if draft.endpoint not in ENDPOINTS:
        wrong.add("endpoint")
    if not isinstance(draft.payload, dict) or _payload_unstorable(draft.payload):
        wrong.add("payload")
    else:
        size = await conn.fetchval("SELECT octet_length($1::text::jsonb::text)", json_text)
        if size > LIMIT:
            wrong.add("payload")
    for name in ("key", "idempotency_key"):
        if _key_wrong(getattr(draft, name)):
            wrong.add(name)
    if not -32768 <= draft.priority <= 32767:
        wrong.add("priority")
    if draft.deliver_at is not None:
        if python and draft.deliver_at.tzinfo is None:
            wrong.add("deliver_at")  # the Python API wants an aware datetime
        if draft.deliver_at in (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)):
            wrong.add("deliver_at")  # asyncpg sends them as -infinity / infinity
    if _header_problem(draft.headers):
        wrong.add("headers")
    return wrong


# -- JSON meaning ----------------------------------------------------------------


def meaning(value: Any) -> Any:
    """``value`` as a comparable JSON tree; see the module docstring."""
    if value is None or isinstance(value, bool):
        return ("literal", value)
    if isinstance(value, int | Decimal):
        return ("number", Decimal(value))
    if isinstance(value, float):
        return ("number", Decimal(repr(value)))  # the JSON text json.dumps writes
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list | tuple):
        return ("array", [meaning(v) for v in value])
    if isinstance(value, dict):
        return ("object", {k: meaning(v) for k, v in value.items()})
    raise TypeError(type(value))


def read_json(text: str | bytes) -> Any:
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


# -- running the examples ----------------------------------------------------------


@dataclass
class Expected:
    payload: Any  # the JSON meaning to arrive
    headers: dict[str, str] | None
    deliver_at: datetime | None
    source: str  # how it was sent, for failure messages


@dataclass
class Session:
    """One database, receiver and set of clients for all of a test's examples."""

    url: str
    conn: asyncpg.Connection
    receiver: Receiver
    expected: dict[uuid.UUID, Expected] = field(default_factory=dict)
    idempotent: dict[tuple[str, str], uuid.UUID] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    accepted: int = 0

    @classmethod
    async def open(cls, url: str, receiver: Receiver) -> Session:
        conn = await asyncpg.connect(url)
        for name in ENDPOINTS:
            await add_endpoint(conn, name, receiver.url(f"/{name}"), max_attempts=1)
        return cls(url, conn, receiver)

    async def counts(self) -> tuple[int, int]:
        row = await self.conn.fetchrow(
            "SELECT (SELECT count(*) FROM outbox.messages) AS m,"
            " (SELECT count(*) FROM outbox.idempotency_keys) AS k"
        )
        assert row is not None
        return row["m"], row["k"]

    async def check_accepted(
        self, batch: list[Draft], ids: list[uuid.UUID], meanings: list[Any], before: tuple[int, int]
    ) -> None:
        """Ids are new, or the first id of a repeated idempotency key; rows match."""
        self.accepted += 1
        assert len(ids) == len(batch)
        new = 0
        for draft, message_id, payload in zip(batch, ids, meanings, strict=True):
            if draft.idempotency_key is not None:
                first = self.idempotent.setdefault(
                    (draft.endpoint, draft.idempotency_key), message_id
                )
                assert message_id == first, (draft, "a repeated idempotency key got a new id")
                if first != message_id or message_id in self.expected:
                    continue
            assert message_id not in self.expected
            new += 1
            self.expected[message_id] = Expected(
                payload, draft.headers, draft.deliver_at, repr(draft)
            )
            row = await self.conn.fetchrow(
                "SELECT available_at, priority, key FROM outbox.messages WHERE id = $1", message_id
            )
            assert row is not None, draft
            assert row["priority"] == draft.priority
            if draft.key is not None:
                assert row["key"] == draft.key
            if draft.deliver_at is not None:
                when = _aware(draft.deliver_at)
                if when > datetime.now(UTC) + timedelta(seconds=2):
                    assert row["available_at"] == when, draft
        after = await self.counts()
        assert after[0] == before[0] + new, (batch, before, after)

    async def deliver_and_compare(self) -> int:
        """Run one worker until every due message arrived; compare each to its input."""
        now = datetime.now(UTC) + timedelta(seconds=1)
        due = {
            i
            for i, e in self.expected.items()
            if e.deliver_at is None or _aware(e.deliver_at) <= now
        }
        scheduled = set(self.expected) - due
        async with running_worker(self.url):
            await until(lambda: due <= {uuid.UUID(i) for i in self.receiver.ids()}, within=40)
        received = self.receiver.by_id()
        for message_id in due:
            [got] = received[str(message_id)]
            expected = self.expected[message_id]
            body = got.body.decode("utf-8")  # strict: valid UTF-8
            assert meaning(read_json(body)) == expected.payload, expected.source
            assert got.headers["content-type"] == "application/json"
            for name, value in (expected.headers or {}).items():
                assert got.headers[name] == value.strip(" \t"), expected.source
        assert not scheduled & {uuid.UUID(i) for i in received}
        left = {r["id"] for r in await self.conn.fetch("SELECT id FROM outbox.messages")}
        assert left == scheduled
        return len(due)


def _aware(when: datetime) -> datetime:
    """A naive time as asyncpg sends it for timestamptz (this session's zone: UTC)."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _error_field(exc: outbox.InvalidInputError) -> tuple[int | None, str]:
    """(batch index or None, field without its prefix) of an error."""
    name = exc.field
    index = None
    if name.startswith("messages["):
        index = int(name[len("messages[") : name.index("]")])
        name = name[name.index("]") + 2 :]
    for known in (
        "endpoint",
        "payload",
        "key",
        "idempotency_key",
        "priority",
        "deliver_at",
        "headers",
    ):
        if name == known or name.startswith((f"{known}.", f"{known}[")):
            return index, known
    return index, name


async def send_python(
    session: Session, api: str, batch: list[Draft], engines: dict[str, Any]
) -> None:
    wrong = [
        await problems(session.conn, d, json.dumps(d.payload, ensure_ascii=False), python=True)
        for d in batch
    ]
    before = await session.counts()
    ids: list[uuid.UUID] = []
    error: outbox.InvalidInputError | None = None
    try:
        if api == "enqueue":
            async with session.conn.transaction():
                ids = [
                    await outbox.enqueue(
                        session.conn, batch[0].endpoint, batch[0].payload, **batch[0].kwargs()
                    )
                ]
        elif api == "enqueue_many":
            async with session.conn.transaction():
                ids = await outbox.enqueue_many(
                    session.conn,
                    [{"endpoint": d.endpoint, "payload": d.payload, **d.kwargs()} for d in batch],
                )
        elif api == "sqlalchemy_async":
            async with engines["async"].begin() as sa_conn:
                ids = [
                    await outbox.enqueue(
                        sa_conn, batch[0].endpoint, batch[0].payload, **batch[0].kwargs()
                    )
                ]
        else:
            with engines["sync"].begin() as sa_sync:
                ids = [
                    outbox.enqueue_sync(
                        sa_sync, batch[0].endpoint, batch[0].payload, **batch[0].kwargs()
                    )
                ]
    except outbox.InvalidInputError as exc:
        error = exc
    session.calls[api] = session.calls.get(api, 0) + 1
    if error is None:
        assert not any(wrong), (api, batch, wrong, "accepted, but it should have been rejected")
        meanings = [meaning(d.payload) for d in batch]
        await session.check_accepted(batch, ids, meanings, before)
        return
    index, name = _error_field(error)
    assert any(wrong), (api, batch, error, "rejected, but nothing is wrong with it")
    if index is None:
        assert api != "enqueue_many" or len(batch) == 1, error
        index = 0
    assert name in wrong[index], (api, batch, wrong, error)
    assert str(error).startswith(f"{error.field}: ")
    assert await session.counts() == before, (api, batch, error, "a rejected call wrote rows")


SQL_ENQUEUE = "SELECT outbox.enqueue($1, $2::text::jsonb, $3, $4, $5, $6, $7::text::jsonb)"
SQL_ENQUEUE_MANY = (
    "SELECT outbox.enqueue_many($1::text[], $2::text[]::jsonb[], $3::text[], $4::text[],"
    " $5::integer[], $6::timestamptz[], $7::text[]::jsonb[])"
)


async def send_sql(session: Session, api: str, batch: list[Draft], ascii_escapes: bool) -> None:
    texts_sent = [json.dumps(d.payload, ensure_ascii=ascii_escapes, allow_nan=True) for d in batch]
    # What the text sent means, read as RFC 8259 reads it (an escaped pair is one character).
    parsed = [json.loads(t, parse_float=Decimal, parse_int=Decimal) for t in texts_sent]
    as_read = [
        Draft(d.endpoint, p, d.key, d.idempotency_key, d.priority, d.deliver_at, d.headers)
        for d, p in zip(batch, parsed, strict=True)
    ]
    wrong = [
        await problems(session.conn, d, t, python=False)
        for d, t in zip(as_read, texts_sent, strict=True)
    ]
    header_texts = [None if d.headers is None else json.dumps(d.headers) for d in batch]
    before = await session.counts()
    ids: list[uuid.UUID] = []
    error: Exception | None = None
    try:
        async with session.conn.transaction():
            if api == "sql_enqueue":
                d = batch[0]
                ids = [
                    await session.conn.fetchval(
                        SQL_ENQUEUE,
                        d.endpoint,
                        texts_sent[0],
                        d.key,
                        d.idempotency_key,
                        d.priority,
                        d.deliver_at,
                        header_texts[0],
                    )
                ]
            else:
                ids = await session.conn.fetchval(
                    SQL_ENQUEUE_MANY,
                    [d.endpoint for d in batch],
                    texts_sent,
                    [d.key for d in batch],
                    [d.idempotency_key for d in batch],
                    [d.priority for d in batch],
                    [d.deliver_at for d in batch],
                    header_texts,
                )
    except (asyncpg.PostgresError, asyncpg.DataError) as exc:
        error = exc
    session.calls[api] = session.calls.get(api, 0) + 1
    if error is None:
        assert not any(wrong), (api, batch, wrong, "accepted, but it should have been rejected")
        await session.check_accepted(as_read, list(ids), [meaning(p) for p in parsed], before)
        return
    assert any(wrong), (api, batch, repr(error), "rejected, but nothing is wrong with it")
    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate in {"OB001", "OB002", "OB003"}:
        translated = outbox.errors.InvalidInputError  # the field is named: check it is a wrong one
        from outbox.db.pgerror import translate

        ours = translate(error)
        assert isinstance(ours, translated)
        index, name = _error_field(ours)
        assert name in wrong[index or 0], (api, batch, wrong, ours)
    assert await session.counts() == before, (api, batch, error, "a rejected call wrote rows")


def run_fuzz(
    database_url: str,
    examples: int,
    strategy: st.SearchStrategy[Any],
    send: Callable[[Session, Any, dict[str, Any]], Any],
) -> tuple[int, int, dict[str, int]]:
    """Draw ``examples`` inputs, send each, then deliver them all with one worker."""
    with asyncio.Runner() as runner, Receiver() as receiver:
        session = runner.run(Session.open(database_url, receiver))
        engines: dict[str, Any] = {
            "sync": create_engine("postgresql+psycopg://" + database_url.split("://", 1)[1]),
        }
        try:
            engines["async"] = create_async_engine(sqlalchemy_async_url(database_url))

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,  # every CI run draws afresh; a failure prints its input
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            )
            @given(strategy)
            def one(drawn: Any) -> None:
                runner.run(send(session, drawn, engines))

            one()
            delivered = runner.run(session.deliver_and_compare())
            calls = sum(session.calls.values())
            print(
                f"fuzzed {calls} calls {session.calls}: {session.accepted} accepted,"
                f" {calls - session.accepted} rejected; {delivered} messages delivered and compared"
            )
            # Both halves of the property were exercised, each a fair share of the time.
            assert session.accepted >= calls // 10
            assert calls - session.accepted >= calls // 10
            return calls, delivered, session.calls
        finally:
            runner.run(engines["async"].dispose())
            engines["sync"].dispose()
            runner.run(session.conn.close())


python_inputs = st.tuples(
    st.sampled_from(PYTHON_APIS), st.lists(drafts(surrogates=True), min_size=1, max_size=3)
)
# The SQL path also gets naive times and the datetime.min/max edges (asyncpg
# sends those as -infinity/infinity, which outbox.enqueue() refuses).
sql_edge_times = mostly(
    st.none(),
    st.sampled_from(
        [datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC), datetime(2030, 1, 1)]
    ),
)
sql_inputs = st.tuples(
    st.sampled_from(SQL_APIS),
    st.lists(drafts(surrogates=True), min_size=1, max_size=3),
    st.booleans(),
    sql_edge_times,
)


async def _send_python(session: Session, drawn: Any, engines: dict[str, Any]) -> None:
    api, batch = drawn
    if api != "enqueue_many":
        batch = batch[:1]
    await send_python(session, api, batch, engines)


async def _send_sql(session: Session, drawn: Any, _engines: dict[str, Any]) -> None:
    api, batch, ascii_escapes, when = drawn
    if api != "sql_enqueue_many":
        batch = batch[:1]
    if when is not None:
        batch = [dataclasses.replace(batch[0], deliver_at=when), *batch[1:]]
    await send_sql(session, api, batch, ascii_escapes)


def test_fuzzed_input_through_the_python_api_is_delivered_intact_or_rejected_cleanly(
    database_url: str,
) -> None:
    calls, delivered, per_api = run_fuzz(
        database_url, PYTHON_API_EXAMPLES, python_inputs, _send_python
    )
    assert calls >= PYTHON_API_EXAMPLES
    assert set(per_api) == set(PYTHON_APIS)
    assert delivered > 0


def test_fuzzed_calls_to_the_sql_functions_are_delivered_intact_or_rejected_cleanly(
    database_url: str,
) -> None:
    calls, delivered, per_api = run_fuzz(database_url, SQL_EXAMPLES, sql_inputs, _send_sql)
    assert calls >= SQL_EXAMPLES
    assert set(per_api) == set(SQL_APIS)
    assert delivered > 0


# -- bugs the fuzzing found: each input must be rejected naming its field ---------


async def _rejected_cleanly(
    conn: asyncpg.Connection, field_name: str, **kwargs: Any
) -> outbox.InvalidInputError:
    await conn.execute(
        "INSERT INTO outbox.endpoints (name, channel, url) VALUES ('hook', 'webhook', 'http://127.0.0.1:9/')"
    )
    kwargs.setdefault("payload", {"a": 1})
    with pytest.raises(outbox.InvalidInputError) as info:  # today: a raw driver error
        async with conn.transaction():
            await outbox.enqueue(conn, "hook", kwargs.pop("payload"), **kwargs)
    assert info.value.field == field_name
    assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 0
    return info.value


@pytest.mark.parametrize("name", ["key", "idempotency_key"])
async def test_a_nul_in_a_key_is_rejected_naming_the_field(
    conn: asyncpg.Connection, name: str
) -> None:
    await _rejected_cleanly(conn, name, **{name: "a\x00b"})


@pytest.mark.parametrize("payload", [{"a": "\ud800"}, {"\udfff": 1}])
async def test_a_lone_surrogate_in_a_payload_is_rejected_naming_the_field(
    conn: asyncpg.Connection, payload: dict[str, Any]
) -> None:
    await _rejected_cleanly(conn, "payload", payload=payload)


def _chain(depth: int) -> dict[str, Any]:
    """{"a": {"a": ... {}}}, ``depth`` objects deep."""
    payload: dict[str, Any] = {}
    for _ in range(depth):
        payload = {"a": payload}
    return payload


@pytest.mark.parametrize("payload", [_chain(1500), nested(1, 1501)], ids=["objects", "mixed"])
async def test_a_deeply_nested_payload_is_accepted_or_refused_for_its_depth(
    conn: asyncpg.Connection, payload: dict[str, Any]
) -> None:
    await conn.execute(
        "INSERT INTO outbox.endpoints (name, channel, url)"
        " VALUES ('hook', 'webhook', 'http://127.0.0.1:9/')"
    )
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)  # Python's default, what a producer process has
    try:
        async with conn.transaction():
            await outbox.enqueue(conn, "hook", payload)
    except outbox.InvalidInputError as exc:
        error: outbox.InvalidInputError | None = exc
    else:
        error = None
    finally:
        sys.setrecursionlimit(limit)
    rows = await conn.fetchval("SELECT count(*) FROM outbox.messages")
    if error is None:
        assert rows == 1
    else:
        assert error.field == "payload"
        assert "must be a JSON object" not in str(error)  # it is one
        assert rows == 0


async def test_a_huge_integer_is_not_called_nan(conn: asyncpg.Connection) -> None:
    error = await _rejected_cleanly(conn, "payload", payload={"n": 10**5000})
    assert "NaN" not in str(error)


async def test_a_header_value_enqueue_accepts_is_delivered(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver() as rx:
        await add_endpoint(conn, "hook", rx.url(), max_attempts=1)
        async with conn.transaction():
            await outbox.enqueue(conn, "hook", {"a": 1}, headers={"X-Name": "Zo\u00eb"})
        async with running_worker(database_url):
            await until(lambda: _none_left(conn))
    dead = await conn.fetchval("SELECT last_error FROM outbox.dead_letters")
    assert dead is None, dead
    # Sent as UTF-8 (RFC 9110 leaves non-ASCII field values to the parties;
    # UTF-8 is what the receiver here, and most, decode).
    assert [r.headers["X-Name"] for r in rx.snapshot()] == ["Zo\u00eb"]


async def _none_left(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT count(*) FROM outbox.messages") == 0)
