"""outbox: a durable transactional outbox on PostgreSQL.

Write a message in the same transaction as your business data; worker
processes deliver it over HTTP with retries, record every attempt and
dead-letter what cannot be delivered.
"""

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
from outbox.operate.endpoint_config import EndpointConfig
from outbox.produce.enqueue import enqueue, enqueue_many, enqueue_many_sync, enqueue_sync
from outbox.produce.message import Message
from outbox.settings import Settings

__all__ = [
    "ConfigurationError",
    "DatabaseError",
    "EndpointConfig",
    "EndpointExistsError",
    "EndpointInUseError",
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
]
