"""outbox: a durable transactional outbox on PostgreSQL.

Write a message in the same transaction as your business data; worker
processes deliver it, record every attempt and dead-letter what cannot be
delivered. This module holds the public API; the subpackages, each answering
one question:

* `outbox.produce` -- how do I enqueue or publish? (`enqueue`, `publish` and
  their rules)
* `outbox.deliver` -- what does a worker do? (claim, deliver, record, upkeep;
  `outbox.deliver.channels`: every kind of destination)
* `outbox.operate` -- how do I run it? (endpoints, config and alerts, dead
  letters, one message's story, stats, roles)
* `outbox.settings` -- what can be configured, and what are the defaults?
* `outbox.db` -- what is in the database? (connections, migrations, tables,
  named queries, ``schema/``: every function, view and trigger)
* `outbox.cli` -- the ``outbox`` command, one module per command group
* `outbox.devtools` -- the demo, a fault-injecting receiver, a fake Bot API, an
  embedded PostgreSQL, the benchmarks (the ``demo`` and ``bench`` extras)

Nothing in produce, deliver or operate imports the CLI or the devtools
(``tests/unit/test_layers.py``).
"""

from typing import TYPE_CHECKING, Any

from outbox.errors import (
    ConfigurationError,
    DatabaseError,
    EndpointExistsError,
    EndpointInUseError,
    InvalidInputError,
    NotInTransactionError,
    OutboxError,
    PayloadTooLargeError,
    UnknownEndpointError,
)

if TYPE_CHECKING:
    from outbox.operate.endpoint_config import EndpointConfig
    from outbox.produce.enqueue import enqueue, enqueue_many, enqueue_many_sync, enqueue_sync
    from outbox.produce.message import Event, Message
    from outbox.produce.publish import publish, publish_many, publish_many_sync, publish_sync
    from outbox.settings import Settings

# Where each public name lives, imported when first asked for: a worker process
# (which needs none of the producer calls) starts without building their models.
_LAZY = {
    "enqueue": "outbox.produce.enqueue",
    "enqueue_many": "outbox.produce.enqueue",
    "enqueue_many_sync": "outbox.produce.enqueue",
    "enqueue_sync": "outbox.produce.enqueue",
    "publish": "outbox.produce.publish",
    "publish_many": "outbox.produce.publish",
    "publish_many_sync": "outbox.produce.publish",
    "publish_sync": "outbox.produce.publish",
    "Event": "outbox.produce.message",
    "Message": "outbox.produce.message",
    "Settings": "outbox.settings",
    # Made from the endpoint settings' declaration and the channels'
    # (outbox.settings.endpoint, outbox.deliver.channels).
    "EndpointConfig": "outbox.operate.endpoint_config",
}

__all__ = [
    "ConfigurationError",
    "DatabaseError",
    "EndpointConfig",
    "EndpointExistsError",
    "EndpointInUseError",
    "Event",
    "InvalidInputError",
    "Message",
    "NotInTransactionError",
    "OutboxError",
    "PayloadTooLargeError",
    "Settings",
    "UnknownEndpointError",
    "enqueue",
    "enqueue_many",
    "enqueue_many_sync",
    "enqueue_sync",
    "publish",
    "publish_many",
    "publish_many_sync",
    "publish_sync",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'outbox' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once found, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
