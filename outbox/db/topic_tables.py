"""SQLAlchemy Core description of the tables of topics and replay: endpoints'
subscriptions to topic patterns, idempotent publications, and the payloads of
delivered messages kept for replay (revision 0007)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from outbox.db.metadata import metadata

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column(
        "endpoint",
        Text,
        ForeignKey("outbox.endpoints.name", ondelete="CASCADE", onupdate="CASCADE"),
        nullable=False,
    ),
    Column("topic", Text, nullable=False),  # the pattern: order.*, order.#, order.created
    Column("topic_regex", Text, nullable=False),  # written by outbox._check_subscription()
    Column("filter", JSONB),
    Column("paused_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    UniqueConstraint("endpoint", "topic", name="subscriptions_endpoint_topic_key"),
    CheckConstraint(
        "filter IS NULL OR jsonb_typeof(filter) = 'object'", name="subscriptions_filter_object"
    ),
    comment=(
        "Endpoints subscribed to topic patterns: outbox.publish() makes a message for each "
        "endpoint with a matching, unpaused subscription whose filter the payload contains."
    ),
)

publications = Table(
    "publications",
    metadata,
    Column("topic", Text),
    Column("idempotency_key", Text),
    PrimaryKeyConstraint("topic", "idempotency_key", name="publications_pkey"),
    Column("message_ids", ARRAY(UUID(as_uuid=True)), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Index("publications_created_idx", "created_at"),
    comment=(
        "What a publish with an idempotency key made, for outbox.config.dedupe_window: a "
        "repeated publish returns these ids and inserts nothing."
    ),
)

delivered = Table(
    "delivered",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("message_id", UUID(as_uuid=True), nullable=False),
    Column("endpoint", Text, nullable=False),
    Column("topic", Text),
    Column("payload", JSONB, nullable=False),
    Column("headers", JSONB),
    Column("key", Text),
    Column("priority", SmallInteger, nullable=False, server_default=text("0")),
    Column("attempts", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("traceparent", Text),
    Column("tracestate", Text),
    Index("delivered_endpoint_idx", "endpoint", "delivered_at"),
    Index("delivered_message_idx", "message_id", postgresql_using="hash"),
    comment=(
        "Delivered messages' payloads, kept for outbox.config.delivered_retention so that they "
        "can be sent again (`outbox message resend`, `outbox replay`). Append-only, pruned "
        "oldest first in short batches."
    ),
)
