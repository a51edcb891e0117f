"""Destination controls: endpoint policy (rate limits, per-key intervals and
order, circuit breaker, pause/disable, secret rotation, SSRF allowances), the
runtime state workers share through the database, and the claim function that
applies them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, CIDR, UUID

from alembic import op
from outbox.db import schema

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "outbox"
FUNCTIONS_SQL = Path(__file__).with_name("0002_functions.sql")
PREVIOUS_FUNCTIONS_SQL = Path(__file__).with_name("0001_functions.sql")


def _ts(name: str, *, nullable: bool = True, default: str | None = None) -> sa.Column[object]:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=sa.text(default) if default else None,
    )


def upgrade() -> None:
    # -- endpoint policy (set by `outbox endpoint add/update`) -----------------
    add = op.add_column
    add("endpoints", sa.Column("rate_limit", sa.Double), schema=S)
    add(
        "endpoints",
        sa.Column("rate_burst", sa.Integer, nullable=False, server_default="1"),
        schema=S,
    )
    add("endpoints", sa.Column("key_interval_ms", sa.Integer), schema=S)
    add("endpoints", sa.Column("group_key_interval_ms", sa.Integer), schema=S)
    add("endpoints", sa.Column("coalesce_ms", sa.Integer), schema=S)
    add(
        "endpoints",
        sa.Column("ordered", sa.Boolean, nullable=False, server_default=sa.text("false")),
        schema=S,
    )
    add(
        "endpoints",
        sa.Column("on_dead", sa.Text, nullable=False, server_default="release"),
        schema=S,
    )
    add(
        "endpoints",
        sa.Column("breaker_failures", sa.Integer, nullable=False, server_default="5"),
        schema=S,
    )
    add(
        "endpoints",
        sa.Column(
            "breaker_cooldown",
            sa.Interval,
            nullable=False,
            server_default=sa.text("'30 seconds'::interval"),
        ),
        schema=S,
    )
    add(
        "endpoints",
        sa.Column(
            "breaker_max_cooldown",
            sa.Interval,
            nullable=False,
            server_default=sa.text("'1 hour'::interval"),
        ),
        schema=S,
    )
    add(
        "endpoints",
        sa.Column(
            "disable_after",
            sa.Interval,
            nullable=False,
            server_default=sa.text("'5 days'::interval"),
        ),
        schema=S,
    )
    add("endpoints", sa.Column("previous_secret", sa.Text), schema=S)
    add("endpoints", _ts("previous_secret_until"), schema=S)
    add("endpoints", sa.Column("allow_networks", ARRAY(CIDR)), schema=S)
    add("endpoints", _ts("paused_at"), schema=S)
    add("endpoints", sa.Column("paused_reason", sa.Text), schema=S)
    add("endpoints", _ts("disabled_at"), schema=S)
    add("endpoints", sa.Column("disabled_reason", sa.Text), schema=S)
    for name, check in (
        ("endpoints_rate_limit_positive", "rate_limit > 0 AND rate_limit <= 1000000"),
        ("endpoints_rate_burst_range", "rate_burst BETWEEN 1 AND 1000000"),
        ("endpoints_key_interval_range", "key_interval_ms BETWEEN 1 AND 86400000"),
        ("endpoints_group_key_interval_range", "group_key_interval_ms BETWEEN 1 AND 86400000"),
        ("endpoints_on_dead_known", "on_dead IN ('release', 'block')"),
        (
            "endpoints_coalesce_telegram",
            "coalesce_ms IS NULL OR (coalesce_ms BETWEEN 1 AND 3600000 AND channel = 'telegram')",
        ),
        ("endpoints_breaker_failures_range", "breaker_failures BETWEEN 1 AND 1000000"),
        (
            "endpoints_breaker_cooldown_positive",
            "breaker_cooldown > interval '0' AND breaker_max_cooldown >= breaker_cooldown",
        ),
        ("endpoints_disable_after_positive", "disable_after > interval '0'"),
        (
            "endpoints_telegram_url",
            "channel <> 'telegram' OR url IS NULL OR url ~ '^https?://[^/?#@\\s]+'",
        ),
    ):
        op.create_check_constraint(name, "endpoints", check, schema=S)

    # -- runtime state shared by the fleet ------------------------------------
    # Kept apart from endpoints: workers write it often, while producers read
    # endpoints on every enqueue and operators edit it.
    op.create_table(
        "endpoint_state",
        sa.Column(
            "endpoint",
            sa.Text,
            sa.ForeignKey(f"{S}.endpoints.name", ondelete="CASCADE", onupdate="CASCADE"),
            primary_key=True,
        ),
        # Rate limit (GCRA): the theoretical arrival time of the next message.
        _ts("tat", nullable=False, default="'-infinity'"),
        sa.Column("circuit", sa.Text, nullable=False, server_default="closed"),
        sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
        _ts("failing_since"),
        _ts("open_until"),
        sa.Column("cooldown_seconds", sa.Double),
        _ts("probe_until"),
        _ts("throttled_until"),
        sa.Column("last_failure", sa.Text),
        _ts("updated_at", nullable=False, default="now()"),
        sa.CheckConstraint(
            "circuit IN ('closed', 'open', 'half_open')", name="endpoint_state_circuit_known"
        ),
        schema=S,
        comment="What workers share about each endpoint: rate-limit position, circuit breaker, throttling.",
    )
    op.execute(f"INSERT INTO {S}.endpoint_state (endpoint) SELECT name FROM {S}.endpoints")

    op.create_table(
        "key_limits",
        sa.Column("endpoint", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        _ts("next_at", nullable=False),
        sa.Column("holder", UUID(as_uuid=True)),
        sa.Column("spacing_seconds", sa.Double, nullable=False),
        schema=S,
        comment="Per-key minimum interval: when each key may next be sent to, and which message holds it.",
    )
    op.create_index("key_limits_next_at_idx", "key_limits", ["next_at"], schema=S)
    op.create_index(
        "key_limits_holder_idx",
        "key_limits",
        ["holder"],
        schema=S,
        postgresql_where=sa.text("holder IS NOT NULL"),
    )

    op.create_table(
        "key_blocks",
        sa.Column("endpoint", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("message_id", UUID(as_uuid=True), nullable=False),
        _ts("blocked_at", nullable=False, default="now()"),
        sa.Column("reason", sa.Text),
        schema=S,
        comment="Keys of ordered endpoints (on_dead = block) held back after a dead letter, until released.",
    )

    # -- the hot table ---------------------------------------------------------
    # Why a message is parked past its due time ('order', 'key', 'block'), so
    # finishing the message ahead of it can bring it back at once.
    add("messages", sa.Column("held", sa.Text), schema=S)
    # Claims go endpoint by endpoint (fairness, pausing, rate limits), and keep
    # a share of each batch for first attempts: one index per kind of row, so
    # neither scan walks over the other's rows. A row is in exactly one.
    op.drop_index("messages_claim_idx", "messages", schema=S)
    for name, predicate in (
        ("messages_first_idx", "lease_token IS NULL AND attempts = 0"),
        ("messages_retry_idx", "lease_token IS NULL AND attempts > 0"),
    ):
        op.create_index(
            name,
            "messages",
            ["endpoint", sa.text("priority DESC"), "available_at", "seq"],
            schema=S,
            postgresql_where=sa.text(predicate),
        )
    # Per-key order: "is there an earlier unfinished message with my key?"
    op.create_index(
        "messages_key_idx",
        "messages",
        ["endpoint", "key", "seq"],
        schema=S,
        postgresql_where=sa.text("key IS NOT NULL"),
    )

    bind = op.get_bind()
    for statement in FUNCTIONS_SQL.read_text(encoding="utf-8").split("\n-- split --\n"):
        bind.exec_driver_sql(statement)


def downgrade() -> None:
    # The functions, views and triggers as revision 0001 left them, first: this
    # revision's depend on the tables below.
    schema.restore(op.get_bind(), [PREVIOUS_FUNCTIONS_SQL])
    op.drop_index("messages_key_idx", "messages", schema=S)
    op.drop_index("messages_retry_idx", "messages", schema=S)
    op.drop_index("messages_first_idx", "messages", schema=S)
    op.create_index(
        "messages_claim_idx",
        "messages",
        [sa.text("priority DESC"), "available_at", "seq"],
        schema=S,
        postgresql_where=sa.text("lease_token IS NULL"),
    )
    op.drop_column("messages", "held", schema=S)
    op.drop_table("key_blocks", schema=S)
    op.drop_table("key_limits", schema=S)
    op.drop_table("endpoint_state", schema=S)
    for constraint in (
        "endpoints_rate_limit_positive",
        "endpoints_rate_burst_range",
        "endpoints_key_interval_range",
        "endpoints_group_key_interval_range",
        "endpoints_on_dead_known",
        "endpoints_coalesce_telegram",
        "endpoints_breaker_failures_range",
        "endpoints_breaker_cooldown_positive",
        "endpoints_disable_after_positive",
        "endpoints_telegram_url",
    ):
        op.drop_constraint(constraint, "endpoints", schema=S)
    for column in (
        "rate_limit",
        "rate_burst",
        "key_interval_ms",
        "group_key_interval_ms",
        "coalesce_ms",
        "ordered",
        "on_dead",
        "breaker_failures",
        "breaker_cooldown",
        "breaker_max_cooldown",
        "disable_after",
        "previous_secret",
        "previous_secret_until",
        "allow_networks",
        "paused_at",
        "paused_reason",
        "disabled_at",
        "disabled_reason",
    ):
        op.drop_column("endpoints", column, schema=S)
