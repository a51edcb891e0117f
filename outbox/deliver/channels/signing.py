"""Standard Webhooks signatures: ``v1,`` + base64(HMAC-SHA256(secret, id.timestamp.body)).

A secret may be given as ``whsec_<base64>`` (the Standard Webhooks form: the
key is the decoded bytes, padding optional as in the reference libraries) or
as any other string (its UTF-8 bytes are the key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac


def secret_key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        encoded = secret[len("whsec_") :]
        try:
            return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode()


def check_secret(secret: str) -> None:
    """Refuse a signing secret that gives an empty key (``whsec_`` with nothing
    after it): anyone could sign with it. Never shows the secret."""
    if not secret_key(secret):
        raise ValueError("a whsec_ signing secret needs its base64 key after the prefix")


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one secret."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets: list[str], message_id: str, timestamp: int, body: bytes) -> str:
    """Signatures for every active secret, space-separated (secret rotation)."""
    return " ".join(sign(s, message_id, timestamp, body) for s in secrets)
