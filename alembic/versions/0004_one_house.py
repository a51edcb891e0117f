"""One house: endpoints' channels come from a catalog the channel declarations
fill (outbox.channels, referenced by outbox.endpoints.channel instead of a
CHECK naming them), the channel-specific CHECKs give way to a trigger that
reads the catalog, and outbox.schema_files records which schema files (the
current truth of every function, view and trigger, outbox/db/schema/) were
last applied. The functions, views and triggers themselves are not part of
any revision from here on: `outbox migrate` applies the schema files after
upgrading to the head (outbox/db/schema.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa

from alembic import op
from outbox.db import schema

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "outbox"
VERSIONS = Path(__file__).parent
# The functions, views and triggers as revision 0003 left them.
FROZEN_0003 = [VERSIONS / f"{n}_functions.sql" for n in ("0001", "0002", "0003")]
HTTP_URL = "^https?://[^/?#@\\s]+"


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("summary", sa.Text, nullable=False, server_default=sa.text("''")),
        sa.Column("default_key", sa.Text),
        sa.Column("payload_check", sa.Text),
        sa.Column("group_keys", sa.Text),
        sa.Column("riders", sa.Text),
        sa.Column("url_pattern", sa.Text),
        sa.Column("url_required", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.CheckConstraint("name ~ '^[a-z][a-z0-9_]{0,31}$'", name="channels_name_format"),
        schema=S,
        comment="The channels endpoints may use, and what the database does for each (written by `outbox migrate` from their declarations).",
    )
    # The built-in channels as this revision knows them (the schema files'
    # functions they name come after the head; `outbox migrate` rewrites these
    # rows from the channels' declarations then).
    op.execute(
        f"INSERT INTO {S}.channels (name, url_pattern, url_required) VALUES "
        f"('webhook', '{HTTP_URL}', true), ('telegram', '{HTTP_URL}', false), ('null', NULL, false)"
    )
    op.drop_constraint("endpoints_channel_known", "endpoints", schema=S)
    op.create_foreign_key(
        "endpoints_channel_fkey", "endpoints", "channels", ["channel"], ["name"],
        source_schema=S, referent_schema=S,
    )  # fmt: skip
    for name in ("endpoints_webhook_url", "endpoints_telegram_url", "endpoints_coalesce_telegram"):
        op.drop_constraint(name, "endpoints", schema=S)
    op.create_check_constraint(
        "endpoints_coalesce_range", "endpoints", "coalesce_ms BETWEEN 1 AND 3600000", schema=S
    )
    op.create_table(
        "schema_files",
        sa.Column("singleton", sa.Boolean, primary_key=True, server_default=sa.text("true")),
        sa.Column("digest", sa.Text),
        sa.Column("applied_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("singleton", name="schema_files_singleton"),
        schema=S,
        comment="The digest of the schema files (functions, views, triggers) last applied by `outbox migrate`.",
    )
    op.execute(f"INSERT INTO {S}.schema_files DEFAULT VALUES")


def downgrade() -> None:
    bind = op.get_bind()
    schema.restore(bind, FROZEN_0003)
    op.drop_table("schema_files", schema=S)
    op.drop_constraint("endpoints_coalesce_range", "endpoints", schema=S)
    op.drop_constraint("endpoints_channel_fkey", "endpoints", schema=S)
    op.drop_table("channels", schema=S)
    for name, check in (
        ("endpoints_channel_known", "channel IN ('webhook', 'telegram', 'null')"),
        ("endpoints_webhook_url", f"channel <> 'webhook' OR url ~ '{HTTP_URL}'"),
        ("endpoints_telegram_url", f"channel <> 'telegram' OR url IS NULL OR url ~ '{HTTP_URL}'"),
        (
            "endpoints_coalesce_telegram",
            "coalesce_ms IS NULL OR (coalesce_ms BETWEEN 1 AND 3600000 AND channel = 'telegram')",
        ),
    ):
        op.create_check_constraint(name, "endpoints", check, schema=S)
