"""Topics and replay: subscriptions of endpoints to topic patterns
(outbox.subscriptions), what a publish with an idempotency key made
(outbox.publications), the topic of each message (messages, dead_letters,
and the ledger's attempts),
the payloads of delivered messages kept for replay (outbox.delivered, kept
for outbox.config.delivered_retention), and the replay mark of a resent
message and of its attempts.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from alembic import op
from outbox.db import schema

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "outbox"
# The functions, views and triggers as revision 0006 left them (the schema
# files as they were then, in the order they are applied).
FROZEN_0006 = [
    Path(__file__).parent / "0006_schema" / f"{name}.sql"
    for name in (
        "enqueue",
        "telegram",
        "endpoints",
        "claim",
        "health",
        "rollups",
        "views",
        "alerts",
        "operator",
    )
]
NOW = sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column(
            "endpoint",
            sa.Text,
            sa.ForeignKey(f"{S}.endpoints.name", ondelete="CASCADE", onupdate="CASCADE"),
            nullable=False,
        ),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("topic_regex", sa.Text, nullable=False),
        sa.Column("filter", JSONB),
        sa.Column("paused_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.UniqueConstraint("endpoint", "topic", name="subscriptions_endpoint_topic_key"),
        sa.CheckConstraint(
            "filter IS NULL OR jsonb_typeof(filter) = 'object'", name="subscriptions_filter_object"
        ),
        schema=S,
        comment=(
            "Endpoints subscribed to topic patterns: outbox.publish() makes a message for "
            "each endpoint with a matching, unpaused subscription whose filter the payload "
            "contains."
        ),
    )
    op.create_table(
        "publications",
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("idempotency_key", sa.Text, nullable=False),
        sa.Column("message_ids", ARRAY(UUID(as_uuid=True)), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint("topic", "idempotency_key", name="publications_pkey"),
        schema=S,
        comment=(
            "What a publish with an idempotency key made, for outbox.config.dedupe_window: a "
            "repeated publish returns these ids and inserts nothing."
        ),
    )
    op.create_index("publications_created_idx", "publications", ["created_at"], schema=S)
    for table in ("messages", "dead_letters", "attempts"):
        op.add_column(table, sa.Column("topic", sa.Text), schema=S)
    for table in ("messages", "dead_letters"):
        op.add_column(
            table,
            sa.Column("replay", sa.Boolean, nullable=False, server_default=sa.text("false")),
            schema=S,
        )
    op.add_column("attempts", sa.Column("replay", sa.Boolean), schema=S)
    op.create_table(
        "delivered",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("message_id", UUID(as_uuid=True), nullable=False),
        sa.Column("endpoint", sa.Text, nullable=False),
        sa.Column("topic", sa.Text),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("headers", JSONB),
        sa.Column("key", sa.Text),
        sa.Column("priority", sa.SmallInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("traceparent", sa.Text),
        sa.Column("tracestate", sa.Text),
        schema=S,
        comment=(
            "Delivered messages' payloads, kept for outbox.config.delivered_retention so that "
            "they can be sent again (`outbox message resend`, `outbox replay`). Append-only, "
            "pruned oldest first in short batches."
        ),
    )
    op.create_index("delivered_endpoint_idx", "delivered", ["endpoint", "delivered_at"], schema=S)
    # Hash, not B-tree: random ids spread B-tree inserts over the whole index,
    # which cost a draining worker ~10% more (measured); lookups are by equality.
    op.create_index(
        "delivered_message_idx", "delivered", ["message_id"], schema=S, postgresql_using="hash"
    )
    op.add_column(
        "config",
        sa.Column(
            "delivered_retention",
            sa.Interval,
            nullable=False,
            server_default=sa.text("'7 days'::interval"),
        ),
        schema=S,
    )
    op.create_check_constraint(
        "config_delivered_retention_not_negative",
        "config",
        "delivered_retention >= interval '0'",
        schema=S,
    )


def downgrade() -> None:
    bind = op.get_bind()
    schema.restore(bind, FROZEN_0006)
    op.drop_constraint("config_delivered_retention_not_negative", "config", schema=S)
    op.drop_column("config", "delivered_retention", schema=S)
    op.drop_table("delivered", schema=S)
    op.drop_column("attempts", "replay", schema=S)
    for table in ("messages", "dead_letters"):
        op.drop_column(table, "replay", schema=S)
    for table in ("messages", "dead_letters", "attempts"):
        op.drop_column(table, "topic", schema=S)
    op.drop_table("publications", schema=S)
    op.drop_table("subscriptions", schema=S)
