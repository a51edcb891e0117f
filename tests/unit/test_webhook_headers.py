"""A webhook's header lines made the quick way (the endpoint's part once) are
the lines of the general mapping, byte for byte, whatever the endpoint, the
message, the trace context and the secrets."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outbox.deliver.channels import webhook_headers
from outbox.deliver.channels.webhook_headers import HeaderBlocks, headers_for
from outbox.deliver.channels.wire import InvalidRequestError, header_block
from outbox.deliver.endpoints import Endpoint
from outbox.deliver.model import Claimed
from outbox.deliver.policy import RetryPolicy

POLICY = RetryPolicy(25, timedelta(days=1), 1.0, 60.0)
TRACEPARENT = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
NAMES = st.sampled_from(
    ["x-api-key", "X-Tenant", "User-Agent", "user-agent", "Traceparent", "tracestate",
     "Outbox-Topic", "outbox-replay", "Content-Type", "webhook-id", "authorization"]
)  # fmt: skip
VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
SECRETS = st.sampled_from([(None, None), ("whsec_" + "a" * 32, None), ("s1", "s2")])


def endpoint(
    headers: dict[str, str], secret: str | None = None, previous: str | None = None
) -> Endpoint:
    settings = {"url": "http://127.0.0.1/hook", "headers": headers}
    return Endpoint("hook", "webhook", POLICY, settings, secret=secret, previous_secret=previous)


def message(
    headers: dict[str, str] | None = None, topic: str | None = None, replay: bool = False
) -> Claimed:
    return Claimed(
        uuid.uuid4(), "hook", '{"n": 1}', json.dumps(headers) if headers else None, None, 0,
        datetime.now(UTC), 1, uuid.uuid4(), topic=topic, replay=replay,
    )  # fmt: skip


def both(
    blocks: HeaderBlocks, m: Claimed, e: Endpoint, trace: tuple[str | None, str | None]
) -> tuple[str, str]:
    clock = SimpleNamespace(time=lambda: 1_800_000_000.5)
    with mock.patch.object(webhook_headers, "time", clock):
        return blocks.block(m, e, b'{"n": 1}', trace), header_block(
            headers_for(m, e, b'{"n": 1}', trace)
        )


@given(
    own=st.dictionaries(NAMES, VALUES, max_size=4),
    per_message=st.none()
    | st.dictionaries(st.sampled_from(["x-request", "User-Agent"]), VALUES, min_size=1),
    trace=st.sampled_from([(None, None), (TRACEPARENT, None), (TRACEPARENT, "a=1,b=2")]),
    topic=st.none() | st.sampled_from(["order.created", "a.b.c"]),
    replay=st.booleans(),
    secrets=SECRETS,
)
def test_the_quick_lines_are_the_general_ones(
    own: dict[str, str],
    per_message: dict[str, str] | None,
    trace: tuple[str | None, str | None],
    topic: str | None,
    replay: bool,
    secrets: tuple[str | None, str | None],
) -> None:
    blocks = HeaderBlocks()
    e, m = endpoint(own, *secrets), message(per_message, topic, replay)
    quick, general = both(blocks, m, e, trace)
    assert quick == general
    assert both(blocks, m, e, trace)[0] == general  # from the endpoint's lines made before


def test_an_endpoint_reloaded_with_other_headers_gets_its_new_lines() -> None:
    blocks = HeaderBlocks()
    first, general = both(blocks, message(), endpoint({"x-key": "one"}), (None, None))
    assert "x-key: one\r\n" in first
    again, general = both(blocks, message(), endpoint({"x-key": "two"}), (None, None))
    assert "x-key: two\r\n" in again
    assert "one" not in again
    assert again == general


@pytest.mark.parametrize(
    ("own", "topic"),
    [
        ({"x-key": "a\r\nx-injected: 1"}, None),
        ({"x-key": "a\nb"}, None),
        ({}, "order\r\nx-injected: 1"),
    ],
)
def test_a_line_break_in_a_name_or_value_is_refused(own: dict[str, str], topic: str | None) -> None:
    with pytest.raises(InvalidRequestError, match="line break"):
        HeaderBlocks().block(message(topic=topic), endpoint(own), b"{}")
