"""The producer's fast path for plain arguments agrees with the pydantic model, always."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from outbox.errors import InvalidInputError
from outbox.produce.enqueue import _one, _prepare, _rows

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
traceparents = st.one_of(
    st.none(),
    st.just("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    st.just("00-00000000000000000000000000000000-b7ad6b7169203331-01"),
    st.just("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-later"),
    st.from_regex(r"0[0f]-[0-9a-fA-F]{32}-[0-9a-f]{16}-[0-9a-f]{2}", fullmatch=True),
    st.text(max_size=60),
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
@given(names, payloads, keys, keys, st.integers(-40_000, 40_000), traceparents)
def test_fast_path_and_model_agree(
    endpoint: str,
    payload: Any,
    key: str | None,
    idem: str | None,
    priority: int,
    traceparent: str | None,
) -> None:
    fast = outcome(
        lambda: _one(endpoint, payload, key, idem, priority, None, None, traceparent, None)
    )
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
                "traceparent": traceparent,
            }
        )
    )
    assert fast == model


optional = st.one_of(st.just("absent"), st.none(), st.booleans(), st.integers(-40_000, 40_000))


@settings(max_examples=500)
@given(
    names,
    payloads,
    keys,
    keys,
    optional,
    st.sampled_from([{}, {"extra": 1}, {"endpoint": "absent"}, {"payload": "absent"}]),
)
def test_the_batch_fast_path_and_model_agree(
    endpoint: str,
    payload: Any,
    key: str | None,
    idem: str | None,
    priority: Any,
    change: dict[str, Any],
) -> None:
    """enqueue_many's rows: a plain dict through the fast path gives what the model
    gives, errors named ``messages[i].field`` alike, missing and extra fields too."""
    message: dict[str, Any] = {
        "endpoint": endpoint,
        "payload": payload,
        "key": key,
        "idempotency_key": idem,
        "priority": priority,
    } | change
    message = {k: v for k, v in message.items() if v != "absent"}
    batch = [{"endpoint": "ok", "payload": {}}, message]
    fast = outcome(lambda: [tuple(r) for r in _rows(batch)])
    model = outcome(lambda: [tuple(_prepare(m, f"messages[{i}].")) for i, m in enumerate(batch)])
    assert fast == model
