"""Checking a Standard Webhooks signature on the receiving end.

A request carries ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and
``webhook-signature``: one or more space-separated ``v1,<base64>`` values, each
an HMAC-SHA256 of ``id.timestamp.body`` under one of the sender's secrets (two
during a rotation). `verify` accepts the request when any ``v1`` signature
matches any of the receiver's secrets and the timestamp is within the
tolerance; otherwise it raises `SignatureError`, which says which check failed
and never holds a secret, a signature or the body.

`Verified` also says what the message was published as (``outbox-topic``)
and whether it is a replay (``outbox-replay: 1``: sent again after it was
delivered, by ``outbox message resend`` or ``outbox replay``, with the same
``webhook-id``). Those two headers are not part of what Standard Webhooks
signs (the id, the timestamp and the body): whoever has seen one signed
request can send it again within the tolerance with the replay mark added.
Only the worker writes them (an endpoint's or a message's own headers may
not), but trust them only as far as the way in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from outbox.deliver.channels.signing import secret_key
from outbox.errors import OutboxError

DEFAULT_TOLERANCE = 300.0
"""Seconds a timestamp may be away from the receiver's clock (Standard Webhooks: 5 min)."""

ID_MAX_CHARS = 255
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
# What the worker adds (outbox.deliver.model.TOPIC_HEADER and REPLAY_HEADER).
TOPIC_HEADER = "outbox-topic"
REPLAY_HEADER = "outbox-replay"


class SignatureError(OutboxError):
    """A webhook failed verification; nothing about it can be trusted.

    ``reason`` is one of ``missing_header``, ``malformed_header``,
    ``timestamp_too_old``, ``timestamp_in_future``, ``no_signature``,
    ``mismatch``; the message says more. ``malformed`` (a missing or unreadable
    header) is a bad request rather than a bad signature: a framework answers
    400 for it and 401 for the rest.
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)

    @property
    def malformed(self) -> bool:
        return self.reason in ("missing_header", "malformed_header")


@dataclass(frozen=True, slots=True)
class Verified:
    """A webhook whose signature and timestamp checked out. ``topic`` and
    ``replay`` come from headers the signature does not cover (see above):
    what it was published as (None: enqueued to the endpoint directly), and
    whether it is a delivered message sent again. A receiver whose inbox has
    the id already tells a replay it wants to act on from a duplicate by it."""

    webhook_id: str
    timestamp: datetime
    body: bytes
    topic: str | None = None
    replay: bool = False

    def json(self) -> Any:
        """The body, parsed as JSON (the payload an outbox webhook carries)."""
        return json.loads(self.body)


def verify(
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes | str,
    secret: str | Sequence[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> Verified:
    """Check one request's Standard Webhooks signature and return what it vouches for.

    ``headers`` in any case (a dict, Starlette's ``request.headers``, or pairs);
    ``body`` exactly as received, before any parsing; ``secret`` one secret or
    several (accept either while you rotate): ``whsec_<base64>`` or any other
    string, as given to ``outbox endpoint add --secret``. ``now`` (Unix
    seconds) is for tests.
    """
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets or not all(isinstance(s, str) and secret_key(s) for s in secrets):
        raise ValueError("verify() needs at least one non-empty secret (and no empty whsec_ key)")
    raw = body.encode() if isinstance(body, str) else bytes(body)
    webhook_id, timestamp, signatures, topic, replay = _read_headers(headers)
    clock = time.time() if now is None else now
    if timestamp < clock - tolerance:
        raise SignatureError(
            "timestamp_too_old",
            f"webhook-timestamp is {clock - timestamp:.0f} s old, "
            f"beyond the {tolerance:g} s tolerance (a replay, or a clock that is off)",
        )
    if timestamp > clock + tolerance:
        raise SignatureError(
            "timestamp_in_future",
            f"webhook-timestamp is {timestamp - clock:.0f} s in the future, "
            f"beyond the {tolerance:g} s tolerance (a clock that is off)",
        )
    signed = f"{webhook_id}.{timestamp}.".encode() + raw
    expected = [hmac.new(secret_key(s), signed, hashlib.sha256).digest() for s in secrets]
    matched = False
    for given in signatures:  # every pair is compared, in constant time each
        for digest in expected:
            matched |= hmac.compare_digest(given, digest)
    if not matched:
        raise SignatureError(
            "mismatch",
            f"no signature of webhook {webhook_id!r} matches "
            f"{'the secret' if len(secrets) == 1 else f'any of the {len(secrets)} secrets'} "
            "(a wrong secret, or a body changed on the way: verify the raw bytes)",
        )
    return Verified(webhook_id, datetime.fromtimestamp(timestamp, UTC), raw, topic, replay)


def _read_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
) -> tuple[str, int, list[bytes], str | None, bool]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found: dict[str, str] = {}
    for name, value in pairs:
        lowered = name.lower()
        if lowered in HEADERS or lowered in (TOPIC_HEADER, REPLAY_HEADER):
            found[lowered] = value
    for name in HEADERS:
        if not found.get(name, "").strip():
            raise SignatureError("missing_header", f"the request has no {name} header")
    webhook_id = found["webhook-id"].strip()
    if len(webhook_id) > ID_MAX_CHARS or not webhook_id.isprintable():
        raise SignatureError(
            "malformed_header",
            f"webhook-id is not an id: it must be at most {ID_MAX_CHARS} printable characters",
        )
    stamp = found["webhook-timestamp"].strip()
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise SignatureError(
            "malformed_header", "webhook-timestamp is not a Unix time in whole seconds"
        )
    topic = found.get(TOPIC_HEADER, "").strip() or None
    replay = found.get(REPLAY_HEADER, "").strip() == "1"
    return webhook_id, int(stamp), _signatures(found["webhook-signature"]), topic, replay


def _signatures(header: str) -> list[bytes]:
    """The decoded ``v1`` signatures; other versions are skipped, as the standard says."""
    decoded: list[bytes] = []
    for part in header.split():
        version, _, value = part.partition(",")
        if version != "v1" or not value:
            continue
        try:
            decoded.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue  # unreadable: it can match nothing
    if not decoded:
        raise SignatureError("no_signature", "webhook-signature holds no readable v1 signature")
    return decoded
