"""SQLAlchemy Core description of the ``outbox`` schema.

The Alembic migrations create these tables; ``tests/integration/test_migrations.py``
proves the two agree. The endpoint settings' columns come from their
declaration (`outbox.settings.endpoint`), defaults included. Applications may
use these ``Table`` objects for read-only queries (the views, functions and
triggers are ``outbox/db/schema/``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Interval,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, CIDR, JSONB, UUID

from outbox.db.metadata import SCHEMA as SCHEMA
from outbox.db.metadata import metadata as metadata

# The tables of topics and replay, described on the same metadata.
from outbox.db.topic_tables import delivered as delivered
from outbox.db.topic_tables import publications as publications
from outbox.db.topic_tables import subscriptions as subscriptions
from outbox.settings.endpoint import ENDPOINT_NAME_PATTERN, SETTINGS, Setting
from outbox.settings.kinds import Headers, Millis, Networks
from outbox.settings.kinds import Interval as Interval_

config = Table(
    "config",
    metadata,
    Column("singleton", Boolean, primary_key=True, server_default=text("true")),
    Column("max_payload_bytes", Integer, nullable=False, server_default=text("262144")),
    Column("dedupe_window", Interval, nullable=False, server_default=text("'7 days'::interval")),
    Column(
        "wakeup_until",
        DateTime(timezone=True),
        nullable=False,
        server_default=text("'-infinity'"),
    ),
    CheckConstraint("singleton", name="config_singleton"),
    CheckConstraint("max_payload_bytes > 0", name="config_max_payload_bytes_positive"),
    CheckConstraint("dedupe_window > interval '0'", name="config_dedupe_window_positive"),
    Column(
        "attempts_retention",
        Interval,
        nullable=False,
        server_default=text("'30 days'::interval"),
    ),
    Column(
        "dead_letters_retention",
        Interval,
        nullable=False,
        server_default=text("'90 days'::interval"),
    ),
    CheckConstraint(
        "attempts_retention > interval '0' AND dead_letters_retention > interval '0'",
        name="config_retention_positive",
    ),
    Column("alert_endpoint", Text),
    Column("alert_payload", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column(
        "alert_interval", Interval, nullable=False, server_default=text("'5 minutes'::interval")
    ),
    Column(
        "delivered_retention",
        Interval,
        nullable=False,
        server_default=text("'7 days'::interval"),
    ),
    CheckConstraint(
        "delivered_retention >= interval '0'", name="config_delivered_retention_not_negative"
    ),
    comment="One row of settings that outbox.enqueue() enforces for every producer.",
)


def _setting_column(setting: Setting) -> Column[Any]:
    """An endpoint setting's column, as its declaration says (type, default)."""
    kind = setting.kind
    sa_type: Any
    if isinstance(kind, Millis):
        sa_type = Integer
    elif isinstance(kind, Interval_):
        sa_type = Interval
    elif isinstance(kind, Headers):
        sa_type = JSONB
    elif isinstance(kind, Networks):
        sa_type = ARRAY(CIDR)
    else:
        sa_type = {"int": Integer, "float": Double, "switch": Boolean}.get(kind.flag, Text)
    default = setting.column_default
    return Column(
        setting.column,
        sa_type,
        nullable=default is None,
        server_default=None if default is None else text(kind.literal(default)),
    )


channels = Table(
    "channels",
    metadata,
    Column("name", Text, primary_key=True),
    Column("summary", Text, nullable=False, server_default=text("''")),
    Column("default_key", Text),
    Column("payload_check", Text),
    Column("group_keys", Text),
    Column("riders", Text),
    Column("url_pattern", Text),
    Column("url_required", Boolean, nullable=False, server_default=text("false")),
    # {column: {"setting": name, "required": bool}}: the channel-specific settings it takes.
    Column("settings", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    CheckConstraint("name ~ '^[a-z][a-z0-9_]{0,31}$'", name="channels_name_format"),
    comment=(
        "The channels endpoints may use, and what the database does for each (written by "
        "`outbox migrate` from their declarations)."
    ),
)

endpoints = Table(
    "endpoints",
    metadata,
    Column("name", Text, primary_key=True),
    Column("channel", Text, ForeignKey("outbox.channels.name"), nullable=False),
    *(_setting_column(s) for s in SETTINGS),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("previous_secret", Text),
    Column("previous_secret_until", DateTime(timezone=True)),
    Column("paused_at", DateTime(timezone=True)),
    Column("paused_reason", Text),
    Column("disabled_at", DateTime(timezone=True)),
    Column("disabled_reason", Text),
    # The settings' bounds, which their declarations check in Python too; that an
    # endpoint fits its channel is checked by a trigger (outbox._check_endpoint()).
    CheckConstraint(f"name ~ '{ENDPOINT_NAME_PATTERN}'", name="endpoints_name_format"),
    CheckConstraint("jsonb_typeof(headers) = 'object'", name="endpoints_headers_object"),
    CheckConstraint("timeout_ms BETWEEN 1 AND 600000", name="endpoints_timeout_range"),
    CheckConstraint(
        "connect_timeout_ms BETWEEN 1 AND 600000", name="endpoints_connect_timeout_range"
    ),
    CheckConstraint("max_attempts BETWEEN 1 AND 1000", name="endpoints_max_attempts_range"),
    CheckConstraint("retry_window > interval '0'", name="endpoints_retry_window_positive"),
    CheckConstraint(
        "rate_limit > 0 AND rate_limit <= 1000000", name="endpoints_rate_limit_positive"
    ),
    CheckConstraint("rate_burst BETWEEN 1 AND 1000000", name="endpoints_rate_burst_range"),
    CheckConstraint("key_interval_ms BETWEEN 1 AND 86400000", name="endpoints_key_interval_range"),
    CheckConstraint(
        "group_key_interval_ms BETWEEN 1 AND 86400000", name="endpoints_group_key_interval_range"
    ),
    CheckConstraint("coalesce_ms BETWEEN 1 AND 3600000", name="endpoints_coalesce_range"),
    CheckConstraint("on_dead IN ('release', 'block')", name="endpoints_on_dead_known"),
    CheckConstraint(
        "breaker_failures BETWEEN 1 AND 1000000", name="endpoints_breaker_failures_range"
    ),
    CheckConstraint(
        "breaker_cooldown > interval '0' AND breaker_max_cooldown >= breaker_cooldown",
        name="endpoints_breaker_cooldown_positive",
    ),
    CheckConstraint("disable_after > interval '0'", name="endpoints_disable_after_positive"),
    CheckConstraint("max_len BETWEEN 1 AND 2000000000", name="endpoints_max_len_range"),
    comment="One row per destination.",
)

endpoint_state = Table(
    "endpoint_state",
    metadata,
    Column(
        "endpoint",
        Text,
        ForeignKey("outbox.endpoints.name", ondelete="CASCADE", onupdate="CASCADE"),
        primary_key=True,
    ),
    Column("tat", DateTime(timezone=True), nullable=False, server_default=text("'-infinity'")),
    Column("circuit", Text, nullable=False, server_default=text("'closed'")),
    Column("consecutive_failures", Integer, nullable=False, server_default=text("0")),
    Column("failing_since", DateTime(timezone=True)),
    Column("open_until", DateTime(timezone=True)),
    Column("cooldown_seconds", Double),
    Column("probe_until", DateTime(timezone=True)),
    Column("throttled_until", DateTime(timezone=True)),
    Column("last_failure", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    CheckConstraint(
        "circuit IN ('closed', 'open', 'half_open')", name="endpoint_state_circuit_known"
    ),
    comment=(
        "What workers share about each endpoint: rate-limit position, circuit breaker, throttling."
    ),
)

key_limits = Table(
    "key_limits",
    metadata,
    Column("endpoint", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("next_at", DateTime(timezone=True), nullable=False),
    Column("holder", UUID(as_uuid=True)),
    Column("spacing_seconds", Double, nullable=False),
    Index("key_limits_next_at_idx", "next_at"),
    Index("key_limits_holder_idx", "holder", postgresql_where=text("holder IS NOT NULL")),
    comment=(
        "Per-key minimum interval: when each key may next be sent to, and which message holds it."
    ),
)

key_blocks = Table(
    "key_blocks",
    metadata,
    Column("endpoint", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("message_id", UUID(as_uuid=True), nullable=False),
    Column("blocked_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("reason", Text),
    comment=(
        "Keys of ordered endpoints (on_dead = block) held back after a dead letter, until released."
    ),
)

messages = Table(
    "messages",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")),
    Column("seq", BigInteger, Identity(always=True), nullable=False),
    Column("endpoint", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("headers", JSONB),
    Column("key", Text),
    Column("idempotency_key", Text),
    Column("priority", SmallInteger, nullable=False, server_default=text("0")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("available_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("lease_token", UUID(as_uuid=True)),
    Column("lease_expires_at", DateTime(timezone=True)),
    Column("leased_by", Text),
    Column("first_attempt_at", DateTime(timezone=True)),
    Column("last_error", Text),
    Column("held", Text),
    # The producer's W3C trace context, carried onward to the receiver.
    Column("traceparent", Text),
    Column("tracestate", Text),
    Column("topic", Text),  # what it was published as (outbox.publish), else NULL
    Column("replay", Boolean, nullable=False, server_default=text("false")),  # a resend
    Index(
        "messages_first_idx",
        "endpoint",
        text("priority DESC"),
        "available_at",
        "seq",
        postgresql_where=text("lease_token IS NULL AND attempts = 0"),
    ),
    Index(
        "messages_retry_idx",
        "endpoint",
        text("priority DESC"),
        "available_at",
        "seq",
        postgresql_where=text("lease_token IS NULL AND attempts > 0"),
    ),
    Index("messages_key_idx", "endpoint", "key", "seq", postgresql_where=text("key IS NOT NULL")),
    Index(
        "messages_lease_idx", "lease_expires_at", postgresql_where=text("lease_token IS NOT NULL")
    ),
    comment="Unfinished messages: pending, scheduled and in flight. Finished rows leave.",
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("message_id", UUID(as_uuid=True), nullable=False),
    Column("endpoint", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("duration_ms", Double, nullable=False),
    Column("status_code", SmallInteger),
    Column("outcome", Text, nullable=False),
    Column("error", Text),
    Column("response_excerpt", Text),
    Column("worker_id", Text),
    Column("reason", Text),
    Column("retry_at", DateTime(timezone=True)),
    Column("replay", Boolean),  # true: an attempt of a message sent again (NULL otherwise)
    Column("topic", Text),  # its message's topic (outbox.publish), else NULL
    Index("attempts_endpoint_started_idx", "endpoint", "started_at"),
    Index("attempts_message_idx", "message_id"),
    comment="Append-only ledger: one row per delivery attempt. No foreign keys, by design.",
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("message_id", UUID(as_uuid=True), primary_key=True),
    Column("endpoint", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("headers", JSONB),
    Column("key", Text),
    Column("idempotency_key", Text),
    Column("priority", SmallInteger, nullable=False, server_default=text("0")),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text),
    Column("reason", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("dead_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("seq", BigInteger),
    Column("traceparent", Text),
    Column("tracestate", Text),
    Column("topic", Text),
    Column("replay", Boolean, nullable=False, server_default=text("false")),  # a resend's
    Index("dead_letters_dead_at_idx", "dead_at"),
    Index("dead_letters_endpoint_idx", "endpoint", "dead_at"),
    comment="Messages that will not be retried, with their payload and last error.",
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("endpoint", Text),
    Column("idempotency_key", Text),
    PrimaryKeyConstraint("endpoint", "idempotency_key", name="idempotency_keys_pkey"),
    Column("message_id", UUID(as_uuid=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Index("idempotency_keys_created_idx", "created_at"),
    comment="Idempotency keys outlive their messages for outbox.config.dedupe_window.",
)

alert_state = Table(
    "alert_state",
    metadata,
    Column("kind", Text, primary_key=True),
    Column("endpoint", Text, primary_key=True),
    Column("last_sent_at", DateTime(timezone=True), nullable=False),
    Column("suppressed", Integer, nullable=False, server_default=text("0")),
    comment=(
        "When each kind of alert about each endpoint was last sent, and how many were held "
        "back since."
    ),
)

attempt_minutes = Table(
    "attempt_minutes",
    metadata,
    Column("endpoint", Text, primary_key=True),
    Column("minute", DateTime(timezone=True), primary_key=True),
    Column("delivered", BigInteger, nullable=False),
    Column("failed", BigInteger, nullable=False),
    Index("attempt_minutes_minute_idx", "minute"),
    comment="Attempts per endpoint and minute (maintained from outbox.attempts).",
)

latency_minutes = Table(
    "latency_minutes",
    metadata,
    Column("endpoint", Text, primary_key=True),
    Column("minute", DateTime(timezone=True), primary_key=True),
    Column("slot", SmallInteger, primary_key=True),
    Column("n", BigInteger, nullable=False),
    comment=(
        "Delivery latency histogram per endpoint and minute: slot = width_bucket over "
        "outbox._latency_bounds()."
    ),
)

schema_files = Table(
    "schema_files",
    metadata,
    Column("singleton", Boolean, primary_key=True, server_default=text("true")),
    Column("digest", Text),
    Column("applied_at", DateTime(timezone=True)),
    CheckConstraint("singleton", name="schema_files_singleton"),
    comment=(
        "The digest of the schema files (functions, views, triggers) last applied by "
        "`outbox migrate`."
    ),
)
