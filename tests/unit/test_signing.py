"""Signatures verify with an independent implementation of Standard Webhooks."""

from __future__ import annotations

import base64
import hashlib
import hmac

from outbox.deliver.channels.signing import sign, signature_header


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Written from the specification, not from our code: the signed content is
    ``{webhook-id}.{webhook-timestamp}.{body}``; a ``whsec_`` secret is base64;
    the header holds space-separated ``v1,<base64 HMAC-SHA256>`` entries."""
    key = (
        base64.b64decode(secret.removeprefix("whsec_"))
        if secret.startswith("whsec_")
        else secret.encode()
    )
    content = b".".join(
        [headers["webhook-id"].encode(), headers["webhook-timestamp"].encode(), body]
    )
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    for entry in headers["webhook-signature"].split(" "):
        version, _, signature = entry.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return True
    return False


def test_signature_verifies_for_a_whsec_secret() -> None:
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    body = b'{"event":"paid","amount":10}'
    headers = {"webhook-id": "msg_1", "webhook-timestamp": "1700000000"}
    headers["webhook-signature"] = sign(secret, "msg_1", 1700000000, body)
    assert verify(secret, headers, body)
    assert not verify(secret, headers, body + b" ")


def test_signature_verifies_for_a_plain_secret() -> None:
    headers = {"webhook-id": "m", "webhook-timestamp": "1"}
    headers["webhook-signature"] = sign("plain secret", "m", 1, b"{}")
    assert verify("plain secret", headers, b"{}")
    assert not verify("other secret", headers, b"{}")


def test_rotation_sends_both_signatures() -> None:
    headers = {"webhook-id": "m", "webhook-timestamp": "5"}
    headers["webhook-signature"] = signature_header(["new", "old"], "m", 5, b"{}")
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verify("new", headers, b"{}")
    assert verify("old", headers, b"{}")


def test_known_vector_from_the_specification_examples() -> None:
    # The Standard Webhooks README's example secret, id, timestamp and payload.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    value = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert value == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_whsec_secret_without_its_base64_padding_is_the_same_key() -> None:
    # The reference libraries pad before decoding; a secret pasted without its
    # trailing "=" must not silently become a different (UTF-8) key.
    padded = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    assert padded.endswith("=")
    assert sign(padded.rstrip("="), "m", 1, b"{}") == sign(padded, "m", 1, b"{}")


def test_a_whsec_secret_with_no_key_is_refused() -> None:
    import pytest

    from outbox.deliver.channels.signing import check_secret

    with pytest.raises(ValueError, match="needs its base64 key"):
        check_secret("whsec_")
    check_secret("whsec_" + base64.b64encode(b"k").decode())
    check_secret("whsec_====")  # not base64: its text is the key, as before
    check_secret("plain")


def test_a_webhook_endpoint_with_an_empty_whsec_key_is_refused() -> None:
    import pytest
    from pydantic import ValidationError

    from outbox import EndpointConfig

    with pytest.raises(ValidationError, match="needs its base64 key"):
        EndpointConfig(name="x", channel="webhook", url="https://a.example/", secret="whsec_")


def test_a_refused_endpoint_never_prints_its_secret() -> None:
    import pytest
    from pydantic import ValidationError

    from outbox import EndpointConfig

    secret = "whsec_" + base64.b64encode(b"s3").decode()  # short: a repr would show it whole
    for url in (None, "not a url", "ftp://a.example/"):  # None: refused for the whole model
        with pytest.raises(ValidationError) as caught:
            EndpointConfig(name="x", channel="webhook", url=url, secret=secret)
        assert secret not in str(caught.value)
        assert secret[6:] not in repr(caught.value)
