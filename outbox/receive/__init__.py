"""Receiving outbox webhooks: check the signature, act once per ``webhook-id``.

* `verify` -- Standard Webhooks signatures (``outbox.receive.signature``);
* `first_delivery` and the inbox table -- exactly-once effects from
  at-least-once delivery (``outbox.receive.inbox``);
* ``outbox.receive.fastapi`` -- both as FastAPI dependencies (the
  ``fastapi`` extra; imported only when asked for).

A receiver imports nothing of the worker: only the signing rule it shares.
"""

from outbox.receive.inbox import (
    INBOX_TABLE,
    create_inbox,
    create_inbox_sync,
    first_delivery,
    first_delivery_sync,
    inbox_ddl,
    prune_inbox,
)
from outbox.receive.signature import SignatureError, Verified, verify

__all__ = [
    "INBOX_TABLE",
    "SignatureError",
    "Verified",
    "create_inbox",
    "create_inbox_sync",
    "first_delivery",
    "first_delivery_sync",
    "inbox_ddl",
    "prune_inbox",
    "verify",
]
