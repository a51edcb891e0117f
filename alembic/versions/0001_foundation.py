"""Foundation: endpoints, messages, attempts, dead letters, idempotency keys,
outbox.enqueue() / outbox.enqueue_many() and the first outbox.stats view.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

from alembic import op
from outbox.db import schema

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "outbox"
# The functions and views of this revision, frozen beside it.
FUNCTIONS_SQL = Path(__file__).with_name("0001_functions.sql")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


def _ts(name: str, *, nullable: bool = False, default: str | None = None) -> sa.Column[object]:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=sa.text(default) if default else None,
    )


def upgrade() -> None:
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {S}")

    op.create_table(
        "config",
        sa.Column("singleton", sa.Boolean, primary_key=True, server_default=sa.text("true")),
        sa.Column("max_payload_bytes", sa.Integer, nullable=False, server_default="262144"),
        sa.Column(
            "dedupe_window",
            sa.Interval,
            nullable=False,
            server_default=sa.text("'7 days'::interval"),
        ),
        # Idle workers push this a few seconds ahead: producers wake them
        # (NOTIFY) only while it is in the future.
        _ts("wakeup_until", default="'-infinity'"),
        sa.CheckConstraint("singleton", name="config_singleton"),
        sa.CheckConstraint("max_payload_bytes > 0", name="config_max_payload_bytes_positive"),
        sa.CheckConstraint("dedupe_window > interval '0'", name="config_dedupe_window_positive"),
        schema=S,
        comment="One row of settings that outbox.enqueue() enforces for every producer.",
    )
    op.execute(f"INSERT INTO {S}.config DEFAULT VALUES")

    op.create_table(
        "endpoints",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("url", sa.Text),
        sa.Column("secret", sa.Text),
        sa.Column("headers", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("timeout_ms", sa.Integer, nullable=False, server_default="10000"),
        sa.Column("connect_timeout_ms", sa.Integer, nullable=False, server_default="5000"),
        sa.Column("max_attempts", sa.Integer, nullable=False, server_default="25"),
        sa.Column(
            "retry_window",
            sa.Interval,
            nullable=False,
            server_default=sa.text("'1 day'::interval"),
        ),
        _ts("created_at", default="now()"),
        _ts("updated_at", default="now()"),
        sa.CheckConstraint(f"name ~ '{NAME_PATTERN}'", name="endpoints_name_format"),
        sa.CheckConstraint(
            "channel IN ('webhook', 'telegram', 'null')", name="endpoints_channel_known"
        ),
        sa.CheckConstraint(
            "channel <> 'webhook' OR url ~ '^https?://[^/?#@\\s]+'", name="endpoints_webhook_url"
        ),
        sa.CheckConstraint("jsonb_typeof(headers) = 'object'", name="endpoints_headers_object"),
        sa.CheckConstraint("timeout_ms BETWEEN 1 AND 600000", name="endpoints_timeout_range"),
        sa.CheckConstraint(
            "connect_timeout_ms BETWEEN 1 AND 600000", name="endpoints_connect_timeout_range"
        ),
        sa.CheckConstraint("max_attempts BETWEEN 1 AND 1000", name="endpoints_max_attempts_range"),
        sa.CheckConstraint("retry_window > interval '0'", name="endpoints_retry_window_positive"),
        schema=S,
        comment="One row per destination.",
    )

    # The hot table. No foreign key to endpoints: outbox.enqueue() checks the
    # endpoint, and an FK check would take a FOR KEY SHARE row lock on the
    # endpoint row for every insert (multixacts under concurrent producers).
    op.create_table(
        "messages",
        sa.Column(
            "id", UUID(as_uuid=True), primary_key=True, server_default=sa.text("gen_random_uuid()")
        ),
        sa.Column("seq", sa.BigInteger, sa.Identity(always=True), nullable=False),
        sa.Column("endpoint", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("headers", JSONB),
        sa.Column("key", sa.Text),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("priority", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        _ts("available_at", default="now()"),
        _ts("created_at", default="now()"),
        sa.Column("lease_token", UUID(as_uuid=True)),
        _ts("lease_expires_at", nullable=True),
        sa.Column("leased_by", sa.Text),
        _ts("first_attempt_at", nullable=True),
        sa.Column("last_error", sa.Text),
        schema=S,
        comment="Unfinished messages: pending, scheduled and in flight. Finished rows leave.",
    )
    # Claiming walks this index in order (highest priority, then earliest due,
    # then enqueue order) over unleased rows only; leased rows drop out of it.
    op.create_index(
        "messages_claim_idx",
        "messages",
        [sa.text("priority DESC"), "available_at", "seq"],
        schema=S,
        postgresql_where=sa.text("lease_token IS NULL"),
    )
    # The reaper looks only at leased rows, by expiry.
    op.create_index(
        "messages_lease_idx",
        "messages",
        ["lease_expires_at"],
        schema=S,
        postgresql_where=sa.text("lease_token IS NOT NULL"),
    )
    # Rows churn constantly (insert, lease, delete): vacuum early and without
    # throttling so dead tuples never pile up in front of the claim index.
    op.execute(
        f"""ALTER TABLE {S}.messages SET (
            autovacuum_vacuum_scale_factor = 0.01,
            autovacuum_vacuum_threshold = 1000,
            autovacuum_vacuum_insert_scale_factor = 0.01,
            autovacuum_vacuum_insert_threshold = 1000,
            autovacuum_analyze_scale_factor = 0.02,
            autovacuum_analyze_threshold = 1000,
            autovacuum_vacuum_cost_delay = 0
        )"""
    )

    op.create_table(
        "attempts",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("message_id", UUID(as_uuid=True), nullable=False),
        sa.Column("endpoint", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        _ts("started_at"),
        sa.Column("duration_ms", sa.Double, nullable=False),
        sa.Column("status_code", sa.SmallInteger),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("response_excerpt", sa.Text),
        sa.Column("worker_id", sa.Text),
        sa.Column("reason", sa.Text),
        _ts("retry_at", nullable=True),
        schema=S,
        comment="Append-only ledger: one row per delivery attempt. No foreign keys, by design.",
    )
    op.create_index(
        "attempts_endpoint_started_idx", "attempts", ["endpoint", "started_at"], schema=S
    )
    op.create_index("attempts_message_idx", "attempts", ["message_id"], schema=S)

    op.create_table(
        "dead_letters",
        sa.Column("message_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("endpoint", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("headers", JSONB),
        sa.Column("key", sa.Text),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("priority", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("reason", sa.Text),
        _ts("created_at"),
        _ts("dead_at", default="now()"),
        schema=S,
        comment="Messages that will not be retried, with their payload and last error.",
    )
    op.create_index("dead_letters_dead_at_idx", "dead_letters", ["dead_at"], schema=S)
    op.create_index("dead_letters_endpoint_idx", "dead_letters", ["endpoint", "dead_at"], schema=S)

    op.create_table(
        "idempotency_keys",
        sa.Column("endpoint", sa.Text),
        sa.Column("idempotency_key", sa.Text),
        sa.PrimaryKeyConstraint("endpoint", "idempotency_key", name="idempotency_keys_pkey"),
        sa.Column("message_id", UUID(as_uuid=True), nullable=False),
        _ts("created_at", default="now()"),
        schema=S,
        comment="Idempotency keys outlive their messages for outbox.config.dedupe_window.",
    )
    op.create_index("idempotency_keys_created_idx", "idempotency_keys", ["created_at"], schema=S)

    # exec_driver_sql: the bodies hold colons and percent signs that text()
    # would otherwise try to read as bind parameters.
    bind = op.get_bind()
    for statement in FUNCTIONS_SQL.read_text(encoding="utf-8").split("\n-- split --\n"):
        bind.exec_driver_sql(statement)


def downgrade() -> None:
    schema.drop(op.get_bind())
    for table in (
        "idempotency_keys",
        "dead_letters",
        "attempts",
        "messages",
        "endpoints",
        "config",
    ):
        op.drop_table(table, schema=S)
