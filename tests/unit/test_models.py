"""Python-side checks of messages and endpoints: precise messages before a round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from outbox.deliver.channels.urls import check_http_url
from outbox.errors import InvalidInputError, to_input_error
from outbox.operate.endpoint_config import EndpointConfig
from outbox.produce.message import Message
from outbox.produce.rules import payload_json


def error_of(**kwargs: object) -> InvalidInputError:
    with pytest.raises(ValidationError) as info:
        Message(**kwargs)  # type: ignore[arg-type]
    return to_input_error(info.value)


def test_a_valid_message_keeps_its_fields() -> None:
    at = datetime.now(UTC) + timedelta(minutes=1)
    m = Message(
        endpoint="a.b-c_1",
        payload={"x": [1, {"y": None}]},
        key="k",
        priority=-3,
        deliver_at=at,
        headers={"X-Trace": "t"},
    )
    assert (m.endpoint, m.key, m.priority, m.deliver_at) == ("a.b-c_1", "k", -3, at)


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"endpoint": "", "payload": {}}, "endpoint", "match"),
        ({"endpoint": "e", "payload": []}, "payload", "JSON object"),
        ({"endpoint": "e", "payload": {}, "priority": 32768}, "priority", "32767"),
        ({"endpoint": "e", "payload": {}, "key": ""}, "key", "at least 1"),
        (
            {"endpoint": "e", "payload": {}, "deliver_at": datetime(2030, 1, 1)},
            "deliver_at",
            "timezone",
        ),
        ({"endpoint": "e", "payload": {}, "headers": {"a b": "v"}}, "headers", "valid header name"),
        (
            {"endpoint": "e", "payload": {}, "headers": {"Webhook-Signature": "v"}},
            "headers",
            "overridden",
        ),
        ({"endpoint": "e", "payload": {}, "surprise": 1}, "surprise", "not permitted"),
    ],
)
def test_bad_messages_name_their_field(kwargs: dict[str, object], field: str, words: str) -> None:
    err = error_of(**kwargs)
    assert err.field == field
    assert words in err.problem


def test_payload_json_is_compact_and_keeps_unicode() -> None:
    assert payload_json({"a": "é", "b": [1, 2.5]}) == '{"a":"é","b":[1,2.5]}'


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ({"x": float("inf")}, "NaN or Infinity"),
        ({"x": "\x00"}, "NUL"),
        ({"x": {1, 2}}, "serialisable"),
    ],
)
def test_payload_json_rejects_what_jsonb_cannot_hold(
    payload: dict[str, object], words: str
) -> None:
    with pytest.raises(InvalidInputError, match=words):
        payload_json(payload)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/x", "https://example.com/hook?a=1", "http://[::1]/x"]
)
def test_http_urls_accepted(url: str) -> None:
    assert check_http_url(url) == url


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.com/x", "http://"),
        ("example.com/x", "http://"),
        ("https://u:p@example.com/", "credentials"),
        ("https://example.com/#frag", "fragment"),
        ("https://exa mple.com/", "whitespace"),
        ("https://example.com:99999/", "valid URL"),
        ("https://bad_host!/", "hostname"),
    ],
)
def test_bad_urls_rejected(url: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        check_http_url(url)


def test_endpoint_config_requires_what_its_channel_needs() -> None:
    with pytest.raises(ValidationError, match="needs --url"):
        EndpointConfig(name="w", channel="webhook")
    with pytest.raises(ValidationError, match="bot token"):
        EndpointConfig(name="t", channel="telegram")
    ok = EndpointConfig(name="t", channel="telegram", secret="env:BOT_TOKEN")
    assert ok.secret is not None
    assert "BOT_TOKEN" not in repr(ok)


def test_the_six_characters_backslash_u0000_are_not_a_nul() -> None:
    from outbox.produce.rules import payload_json

    # A string holding a backslash then "u0000" is fine for jsonb; a NUL is not.
    assert payload_json({"path": "C:\\u0000"}) == '{"path":"C:\\\\u0000"}'
    assert payload_json({"p": "\\\\\\u0000"}) == '{"p":"\\\\\\\\\\\\u0000"}'
    with pytest.raises(InvalidInputError, match="NUL"):
        payload_json({"p": "\\\x00"})


def test_a_published_message_tells_its_receiver_its_topic_and_a_resend_says_so() -> None:
    import uuid
    from datetime import UTC, datetime

    from outbox.deliver.model import Claimed, put_topic

    def claimed(**kw: object) -> Claimed:
        return Claimed(uuid.uuid4(), "e", "{}", None, None, 0, datetime.now(UTC), 1, uuid.uuid4(),
                       **kw)  # type: ignore[arg-type]  # fmt: skip

    headers = {"outbox-topic": "forged", "x": "y"}
    put_topic(headers, claimed(topic="order.created", replay=True))
    assert headers == {"outbox-topic": "order.created", "outbox-replay": "1", "x": "y"}
    plain: dict[str, str] = {}
    put_topic(plain, claimed())
    assert plain == {}
    # One given before (a message stored before the names were reserved, or an
    # endpoint's header) never says topic or replay for a message that has none.
    given = {"outbox-topic": "forged", "outbox-replay": "1", "x": "y"}
    put_topic(given, claimed())
    assert given == {"x": "y"}
