"""Array parameters sent as array literals (`outbox.db.literals`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from outbox.db.literals import epochs, epochs_or_null, literal, literal_or_null, nullable
from outbox.deliver.policy import Outcome


def test_literal_joins_the_text_of_each_value() -> None:
    a, b = uuid.UUID(int=1), uuid.UUID(int=2)
    assert literal([a, b]) == f"{{{a},{b}}}"
    assert literal([0.5, 2.0, 1e-05]) == "{0.5,2.0,1e-05}"
    assert literal([]) == "{}"
    # An outcome is a StrEnum: its text is its value, not "Outcome.DELIVERED".
    assert literal([Outcome.DELIVERED, Outcome.DEAD]) == "{delivered,dead}"


def test_nulls_are_null_and_all_nulls_are_no_array_at_all() -> None:
    assert literal_or_null([200, None, 503]) == "{200,NULL,503}"
    assert literal_or_null([200, 201]) == "{200,201}"
    assert literal_or_null([None, None]) is None
    assert nullable([None, None]) is None
    values = ["a", None]
    assert nullable(values) is values


def test_times_go_as_epoch_seconds() -> None:
    t = datetime(2026, 12, 4, 23, 13, 1, 123456, tzinfo=UTC)
    assert epochs([t]) == f"{{{t.timestamp()!r}}}"
    assert epochs_or_null([None, t]) == f"{{NULL,{t.timestamp()!r}}}"
    assert epochs_or_null([None]) is None
