"""`outbox.receive.verify`: every failure named, rotation, tolerance, and agreement
with the official ``standardwebhooks`` package in both directions."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from outbox.deliver import model
from outbox.deliver.channels.signing import sign, signature_header
from outbox.receive import SignatureError, Verified, verify
from outbox.receive.signature import REPLAY_HEADER, TOPIC_HEADER

SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()
OTHER = "whsec_" + base64.b64encode(b"o" * 32).decode()
NOW = 1_800_000_000
BODY = b'{"order_id": 7, "total": "12.50"}'


def signed(
    body: bytes = BODY, *, secrets: list[str] | None = None, at: int = NOW, wid: str = "m-1"
) -> dict[str, str]:
    return {
        "webhook-id": wid,
        "webhook-timestamp": str(at),
        "webhook-signature": signature_header(secrets or [SECRET], wid, at, body),
    }


def failure(headers: object, body: bytes = BODY, secret: object = SECRET) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        verify(headers, body, secret, now=NOW)  # type: ignore[arg-type]
    return caught.value


def test_a_good_signature_gives_the_id_time_and_body() -> None:
    result = verify(signed(), BODY, SECRET, now=NOW)
    assert result == Verified("m-1", datetime.fromtimestamp(NOW, UTC), BODY)
    assert result.json() == {"order_id": 7, "total": "12.50"}


def test_the_topic_and_replay_mark_are_read_from_the_headers_the_worker_sets() -> None:
    plain = verify(signed(), BODY, SECRET, now=NOW)
    assert (plain.topic, plain.replay) == (None, False)
    headers = signed() | {"Outbox-Topic": " order.created ", "OUTBOX-REPLAY": "1"}
    replayed = verify(headers, BODY, SECRET, now=NOW)
    assert (replayed.topic, replayed.replay) == ("order.created", True)
    # Only "1" says replay; an empty topic is no topic.
    odd = verify(signed() | {"outbox-topic": "", "outbox-replay": "yes"}, BODY, SECRET, now=NOW)
    assert (odd.topic, odd.replay) == (None, False)
    # The names the worker writes (the receiver imports nothing of the worker).
    assert (TOPIC_HEADER, REPLAY_HEADER) == (model.TOPIC_HEADER, model.REPLAY_HEADER)


def test_header_names_are_case_insensitive_and_pairs_work() -> None:
    headers = {k.upper(): v for k, v in signed().items()}
    assert verify(headers, BODY, SECRET, now=NOW).webhook_id == "m-1"
    assert verify(list(signed().items()), BODY.decode(), SECRET, now=NOW).body == BODY


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_each_missing_header_is_named(missing: str) -> None:
    headers = signed()
    del headers[missing]
    error = failure(headers)
    assert error.reason == "missing_header"
    assert error.malformed
    assert str(error) == f"the request has no {missing} header"


@pytest.mark.parametrize("stamp", ["soon", "1.5", "-3", "١٢٣", "9" * 13])
def test_a_timestamp_that_is_not_whole_unix_seconds_is_malformed(stamp: str) -> None:
    headers = signed()
    headers["webhook-timestamp"] = stamp
    error = failure(headers)
    assert error.reason == "malformed_header"
    assert "webhook-timestamp" in str(error)


def test_an_overlong_or_unprintable_id_is_malformed() -> None:
    for wid in ["x" * 256, "a\nb"]:
        headers = signed(wid=wid)
        assert failure(headers).reason == "malformed_header"


def test_old_and_future_timestamps_are_refused_outside_the_tolerance() -> None:
    old = failure(signed(at=NOW - 301))
    assert old.reason == "timestamp_too_old"
    assert not old.malformed
    assert "301 s old" in str(old)
    assert "300 s tolerance" in str(old)
    future = failure(signed(at=NOW + 400))
    assert future.reason == "timestamp_in_future"
    assert "400 s in the future" in str(future)
    assert verify(signed(at=NOW - 300), BODY, SECRET, now=NOW)
    assert verify(signed(at=NOW - 900), BODY, SECRET, now=NOW, tolerance=1000)


def test_a_changed_body_or_wrong_secret_is_a_mismatch_that_shows_no_secret() -> None:
    for error in [failure(signed(), BODY + b" "), failure(signed(), secret=OTHER)]:
        assert error.reason == "mismatch"
        text = str(error)
        assert "m-1" in text
        for secret in (SECRET, OTHER, SECRET[6:], OTHER[6:]):
            assert secret not in text
        assert signed()["webhook-signature"][3:] not in text


def test_a_header_with_no_readable_v1_signature() -> None:
    for value in ["", "v2,abc", "v1,not*base64", "v1"]:
        headers = signed()
        headers["webhook-signature"] = value
        error = failure(headers)
        assert error.reason in ("no_signature", "missing_header")


def test_other_versions_and_garbage_beside_a_good_v1_are_skipped() -> None:
    headers = signed()
    headers["webhook-signature"] = "v1a,xyz v1,@@@ " + headers["webhook-signature"]
    assert verify(headers, BODY, SECRET, now=NOW)


def test_rotation_either_side() -> None:
    # The sender signs with old and new; a receiver knowing either accepts it.
    both = signed(secrets=[OTHER, SECRET])
    assert verify(both, BODY, SECRET, now=NOW)
    assert verify(both, BODY, OTHER, now=NOW)
    # The sender moved on first; a receiver accepting both still verifies.
    assert verify(signed(secrets=[OTHER]), BODY, [SECRET, OTHER], now=NOW)
    error = failure(signed(secrets=[OTHER]), secret=[SECRET, "plain"])
    assert "any of the 2 secrets" in str(error)


def test_no_secret_is_a_programming_error() -> None:
    for secret in ([], "", [""], "whsec_", [SECRET, "whsec_"]):
        with pytest.raises(ValueError, match="non-empty secret"):
            verify(signed(), BODY, secret, now=NOW)


def test_a_plain_string_secret_works_like_the_sender() -> None:
    headers = signed(secrets=["plain text secret"])
    assert verify(headers, BODY, "plain text secret", now=NOW)


# -- agreement with the official package ----------------------------------------------


def test_what_standardwebhooks_signs_verifies_with_ours() -> None:
    official = Webhook(SECRET)
    at = int(time.time())
    for body in [BODY, b"{}", '{"name": "Zoë ✓"}'.encode()]:
        headers = {
            "webhook-id": "msg_2Lx",
            "webhook-timestamp": str(at),
            "webhook-signature": official.sign(
                "msg_2Lx", datetime.fromtimestamp(at, UTC), body.decode()
            ),
        }
        assert verify(headers, body, SECRET).body == body


def test_what_we_sign_verifies_with_standardwebhooks() -> None:
    official = Webhook(SECRET)
    at = int(time.time())
    headers = signed(at=at, secrets=[OTHER, SECRET])
    assert official.verify(BODY, headers) == {"order_id": 7, "total": "12.50"}
    with pytest.raises(WebhookVerificationError):
        official.verify(BODY + b"x", headers)


@settings(max_examples=200, deadline=None)
@given(
    key=st.binary(min_size=1, max_size=64),
    wid=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40),
    body=st.text(max_size=200),
    unpadded=st.booleans(),
)
def test_both_agree_on_any_secret_id_and_body(
    key: bytes, wid: str, body: str, unpadded: bool
) -> None:
    secret = "whsec_" + base64.b64encode(key).decode()
    if unpadded:
        secret = secret.rstrip("=")
    at = int(time.time())
    ours = sign(secret, wid, at, body.encode())
    theirs = Webhook(secret).sign(wid, datetime.fromtimestamp(at, UTC), body)
    assert ours == theirs
    headers = {"webhook-id": wid, "webhook-timestamp": str(at), "webhook-signature": ours}
    assert verify(headers, body.encode(), secret).webhook_id == wid
    Webhook(secret).verify(body, headers, json_parse=False)
    tampered = {**headers, "webhook-id": wid + "x"}
    with pytest.raises(SignatureError):
        verify(tampered, body.encode(), secret)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, tampered, json_parse=False)
