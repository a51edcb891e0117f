"""PostgreSQL reads the array literals of `outbox.db.literals` back as the values
they were made from: uuids, numbers, NULLs, and times to the microsecond."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from outbox.db.literals import epochs, epochs_or_null, literal, literal_or_null


async def test_literals_come_back_as_the_values(conn: asyncpg.Connection) -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    base = datetime(2026, 12, 4, 23, 13, 1, 999999, tzinfo=UTC)
    # Microseconds over a range of magnitudes: the float's round trip is exact.
    times = [base + timedelta(microseconds=k * 7919) for k in range(0, 200_000, 997)]
    row = await conn.fetchrow(
        "SELECT $1::text::uuid[] AS ids, $2::text::smallint[] AS codes,"
        " $3::text::float8[] AS durations,"
        " ARRAY(SELECT to_timestamp(x) FROM unnest($4::text::float8[]) AS x) AS times,"
        " ARRAY(SELECT to_timestamp(x) FROM unnest($5::text::float8[]) AS x) AS maybe",
        literal(ids),
        literal_or_null([200, None, 503]),
        literal([0.125, 1234.5678, 1e-05]),
        epochs(times),
        epochs_or_null([None, base]),
    )
    assert row["ids"] == ids
    assert row["codes"] == [200, None, 503]
    assert row["durations"] == [0.125, 1234.5678, 1e-05]
    assert row["times"] == times
    assert row["maybe"] == [None, base]
