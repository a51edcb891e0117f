"""Message brokers: the settings only broker channels take (a target template,
an AMQP exchange, a Redis stream's MAXLEN, MQTT's retain flag) as columns of
outbox.endpoints, and outbox.channels.settings, which says for each channel
which of the channel-specific settings it takes and which it needs (the
check of an endpoint reads it).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from alembic import op
from outbox.db import schema

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "outbox"
# The functions, views and triggers as revision 0004 left them (the schema
# files as they were then, in the order they are applied).
FROZEN_0004 = [
    Path(__file__).parent / "0004_schema" / f"{name}.sql"
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
    op.add_column(
        "channels",
        sa.Column("settings", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        schema=S,
    )
    op.add_column("endpoints", sa.Column("target", sa.Text), schema=S)
    op.add_column("endpoints", sa.Column("exchange", sa.Text), schema=S)
    op.add_column("endpoints", sa.Column("max_len", sa.Integer), schema=S)
    op.add_column("endpoints", sa.Column("retain", sa.Boolean), schema=S)
    op.create_check_constraint(
        "endpoints_max_len_range", "endpoints", "max_len BETWEEN 1 AND 2000000000", schema=S
    )


def downgrade() -> None:
    bind = op.get_bind()
    schema.restore(bind, FROZEN_0004)
    for column in ("retain", "max_len", "exchange", "target"):
        op.drop_column("endpoints", column, schema=S)
    op.drop_column("channels", "settings", schema=S)
