"""Trace context: a message's W3C ``traceparent`` and ``tracestate``, as the
producer gave them (``outbox.enqueue(..., traceparent => ...)``, or captured
from the current span by the Python producer calls), on outbox.messages and
on outbox.dead_letters (a requeued message keeps its trace). Workers carry
them onward in webhook and broker headers.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa

from alembic import op
from outbox.db import schema

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "outbox"
# The functions, views and triggers as revision 0005 left them (the schema
# files as they were then, in the order they are applied).
FROZEN_0005 = [
    Path(__file__).parent / "0005_schema" / f"{name}.sql"
    for name in (
        "enqueue",
        "telegram",
        "endpoints",
        "claim",
        "health",
        "rollups",
        "views",
        "alerts",
    )
]


def upgrade() -> None:
    for table in ("messages", "dead_letters"):
        op.add_column(table, sa.Column("traceparent", sa.Text), schema=S)
        op.add_column(table, sa.Column("tracestate", sa.Text), schema=S)


def downgrade() -> None:
    bind = op.get_bind()
    schema.restore(bind, FROZEN_0005)
    for table in ("messages", "dead_letters"):
        op.drop_column(table, "tracestate", schema=S)
        op.drop_column(table, "traceparent", schema=S)
