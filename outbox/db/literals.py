"""Array parameters as PostgreSQL array literals: one text value per array.

asyncpg encodes a list parameter element by element, and checks each element
against the abstract base classes of collections to tell a nested array from
a scalar: about 0.6 µs per uuid and 1 µs per timestamp here, which made
encoding the worker's batch of results (13 arrays of 500) its costliest
Python step. A literal is built by one ``join`` over the elements' text, and
the statement casts it back (``$1::text::uuid[]``): PostgreSQL parses it
faster than the client encodes the list.

Only for elements whose text needs no quoting in an array literal: uuids,
numbers, timestamps as epoch seconds (`epochs`), and words from a fixed set
(an outcome). Free text (errors, reasons) stays a real array parameter.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TypeVar

T = TypeVar("T")


def literal(values: Iterable[object]) -> str:
    """``{a,b,c}`` of values (none of them None) whose ``str`` needs no quoting."""
    return "{" + ",".join(map(str, values)) + "}"


def literal_or_null(values: Sequence[object | None]) -> str | None:
    """`literal` where None is NULL; None when every element is None (a NULL
    array, which ``unnest`` pads with NULLs: nothing to encode)."""
    nulls = values.count(None)
    if nulls == len(values):
        return None
    if not nulls:
        return literal(values)
    return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"


def epochs(values: Iterable[datetime]) -> str:
    """Timezone-aware times as an array literal of epoch seconds (float8; the
    statement turns them back with ``to_timestamp``, to the microsecond)."""
    return "{" + ",".join([repr(v.timestamp()) for v in values]) + "}"


def epochs_or_null(values: Sequence[datetime | None]) -> str | None:
    """`epochs` where None is NULL, and None when every element is None."""
    return literal_or_null([None if v is None else repr(v.timestamp()) for v in values])


def nullable(values: Sequence[T | None]) -> Sequence[T | None] | None:
    """A real array parameter as it is, or None when every element is None."""
    return None if values.count(None) == len(values) else values
