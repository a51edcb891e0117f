"""Operability: outbox.stats gains success rate and p50/p99 latency, a
per-minute throughput view for the last hour, dead letters keep their
message number (for requeueing), and retention settings.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from alembic import op
from outbox.db import schema

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTIONS_SQL = Path(__file__).with_name("0003_functions.sql")
# The functions, views and triggers as revision 0002 left them.
FUNCTIONS_SQL_0002 = [Path(__file__).with_name(f"{n}_functions.sql") for n in ("0001", "0002")]


def upgrade() -> None:
    # A dead letter keeps its number, so a requeued one that blocked its
    # ordered key comes back at the head of that key.
    op.add_column("dead_letters", sa.Column("seq", sa.BigInteger), schema="outbox")
    # Retention: how long the ledger and dead letters are kept (pruned in
    # small batches by the workers, one at a time, or by `outbox prune`).
    op.add_column(
        "config",
        sa.Column(
            "attempts_retention",
            sa.Interval,
            nullable=False,
            server_default=sa.text("'30 days'::interval"),
        ),
        schema="outbox",
    )
    op.add_column(
        "config",
        sa.Column(
            "dead_letters_retention",
            sa.Interval,
            nullable=False,
            server_default=sa.text("'90 days'::interval"),
        ),
        schema="outbox",
    )
    # Per-minute rollups of the ledger (see 0003_functions.sql).
    op.create_table(
        "attempt_minutes",
        sa.Column("endpoint", sa.Text, primary_key=True),
        sa.Column("minute", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("delivered", sa.BigInteger, nullable=False),
        sa.Column("failed", sa.BigInteger, nullable=False),
        schema="outbox",
        comment="Attempts per endpoint and minute (maintained from outbox.attempts).",
    )
    op.create_index("attempt_minutes_minute_idx", "attempt_minutes", ["minute"], schema="outbox")
    op.create_table(
        "latency_minutes",
        sa.Column("endpoint", sa.Text, primary_key=True),
        sa.Column("minute", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("slot", sa.SmallInteger, primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
        schema="outbox",
        comment="Delivery latency histogram per endpoint and minute: slot = width_bucket over outbox._latency_bounds().",
    )
    # Alerts through the outbox itself (see outbox._alert() in 0003_functions.sql).
    op.add_column("config", sa.Column("alert_endpoint", sa.Text), schema="outbox")
    op.add_column(
        "config",
        sa.Column("alert_payload", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        schema="outbox",
    )
    op.add_column(
        "config",
        sa.Column(
            "alert_interval",
            sa.Interval,
            nullable=False,
            server_default=sa.text("'5 minutes'::interval"),
        ),
        schema="outbox",
    )
    op.create_table(
        "alert_state",
        sa.Column("kind", sa.Text, primary_key=True),
        sa.Column("endpoint", sa.Text, primary_key=True),
        sa.Column("last_sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("suppressed", sa.Integer, nullable=False, server_default="0"),
        schema="outbox",
        comment="When each kind of alert about each endpoint was last sent, and how many were held back since.",
    )
    op.create_check_constraint(
        "config_retention_positive",
        "config",
        "attempts_retention > interval '0' AND dead_letters_retention > interval '0'",
        schema="outbox",
    )
    bind = op.get_bind()
    for statement in FUNCTIONS_SQL.read_text(encoding="utf-8").split("\n-- split --\n"):
        bind.exec_driver_sql(statement)


def downgrade() -> None:
    # The functions, views and triggers as revision 0002 left them, first: this
    # revision's depend on the tables below.
    schema.restore(op.get_bind(), FUNCTIONS_SQL_0002)
    op.drop_column("dead_letters", "seq", schema="outbox")
    op.drop_constraint("config_retention_positive", "config", schema="outbox")
    op.drop_column("config", "attempts_retention", schema="outbox")
    op.drop_column("config", "dead_letters_retention", schema="outbox")
    op.drop_table("alert_state", schema="outbox")
    for column in ("alert_endpoint", "alert_payload", "alert_interval"):
        op.drop_column("config", column, schema="outbox")
    op.drop_table("latency_minutes", schema="outbox")
    op.drop_table("attempt_minutes", schema="outbox")
