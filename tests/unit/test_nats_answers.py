"""What JetStream's answer to a publish means (`answer_failure`), read from
the reply's status header and body as the NATS channel's own PubAck
subscription receives them (the real server's answers are in
tests/brokers/test_nats.py)."""

from __future__ import annotations

import pytest

from outbox.deliver.channels.jetstream import answer_failure
from outbox.deliver.policy import Verdict


@pytest.mark.parametrize(
    "data",
    [
        b'{"stream":"ORDERS","seq":7}',
        b'{"stream":"ORDERS","seq":7,"duplicate":true}',
        b'{"stream":"error","seq":1}',  # a stream named "error" is still a PubAck
        b'{"seq":3,"stream":"S","domain":"hub"}',  # another field order: parsed
    ],
)
def test_a_puback_is_delivered(data: bytes) -> None:
    assert answer_failure(None, data) is None
    assert answer_failure({"Nats-Msg-Id": "x"}, data) is None


def test_no_responders_is_permanent_no_stream() -> None:
    failure = answer_failure({"Status": "503"}, b"")
    assert failure is not None
    assert failure.classification.verdict is Verdict.PERMANENT
    assert "no JetStream stream captures the subject" in failure.error


def test_another_status_is_retried_naming_it() -> None:
    failure = answer_failure({"Status": "408", "Description": "Request Timeout"}, b"")
    assert failure is not None
    assert failure.classification.verdict is Verdict.RETRYABLE
    assert "status 408" in failure.error


def test_a_jetstream_error_is_permanent_with_its_words_and_code() -> None:
    data = (
        b'{"error":{"code":400,"err_code":10054,'
        b'"description":"message size exceeds maximum allowed"}}'
    )
    failure = answer_failure(None, data)
    assert failure is not None
    assert failure.classification.verdict is Verdict.PERMANENT
    assert failure.error == (
        "JetStream refused the message: message size exceeds maximum allowed (code 400)"
    )


def test_jetstream_unavailable_is_retried() -> None:
    data = b'{"error":{"code":503,"description":"JetStream system temporarily unavailable"}}'
    failure = answer_failure(None, data)
    assert failure is not None
    assert failure.classification.verdict is Verdict.RETRYABLE
    assert "(code 503)" in failure.error


@pytest.mark.parametrize("data", [b"", b"not json", b"[1, 2]", b'{"seq": 1}', b"{}"])
def test_anything_else_is_not_taken_for_an_acknowledgement(data: bytes) -> None:
    failure = answer_failure(None, data)
    assert failure is not None
    assert failure.classification.verdict is Verdict.RETRYABLE
    assert "not a PubAck" in failure.error
