"""The producer's fast path for plain arguments agrees with the pydantic model, always."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from outbox.errors import InvalidInputError
from outbox.producer import _one, _prepare

names = st.one_of(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", fullmatch=True),
    st.text(max_size=70),
    st.just("name\n"),
)
keys = st.one_of(
    st.none(), st.text(max_size=260), st.text(alphabet="ab", min_size=254, max_size=257)
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
payloads = st.one_of(
    st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    st.dictionaries(st.integers(), st.integers(), max_size=2),
    st.lists(st.integers(), max_size=2),
)


def outcome(fn: Any) -> Any:
    try:
        return ("ok", tuple(fn()))
    except InvalidInputError as exc:
        return ("error", type(exc), exc.field, exc.problem)


@settings(max_examples=500)
@given(names, payloads, keys, keys, st.integers(-40_000, 40_000))
def test_fast_path_and_model_agree(
    endpoint: str, payload: Any, key: str | None, idem: str | None, priority: int
) -> None:
    fast = outcome(lambda: _one(endpoint, payload, key, idem, priority, None, None))
    model = outcome(
        lambda: _prepare(
            {
                "endpoint": endpoint,
                "payload": payload,
                "key": key,
                "idempotency_key": idem,
                "priority": priority,
                "deliver_at": None,
                "headers": None,
            }
        )
    )
    assert fast == model
