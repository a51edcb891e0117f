"""The settings of a process, from the environment, all prefixed ``OUTBOX_``;
``outbox worker``'s flags override them. The one source of these defaults:
`WorkerConfig` and the CLI's help take theirs from here.

A pydantic model that reads its fields' variables itself (``OUTBOX_`` and
the field's name, in any case, as pydantic-settings did): every field is a
scalar, so there is nothing to decode before pydantic validates, and
pydantic-settings cost a worker 55 ms of its start-up to import."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from outbox.errors import ConfigurationError
from outbox.settings.databases import (
    Database,
    check_name,
    default_name,
    parse_databases,
    split_urls,
)
from outbox.settings.values import parse_networks

PREFIX = "OUTBOX_"


class Settings(BaseModel):
    """Runtime configuration. Every field reads ``OUTBOX_<FIELD NAME>``; values
    given to the constructor win over the environment's."""

    model_config = ConfigDict(extra="ignore")

    def __init__(self, **values: Any) -> None:
        super().__init__(**{**_from_environment(type(self).model_fields), **values})

    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL URL, e.g. postgresql://user:pass@host:5432/db.",
    )
    database_urls: SecretStr | None = Field(
        default=None,
        description=(
            "The databases one `outbox worker` (or `outbox stats`, `outbox migrate`) serves, "
            "separated by commas or whitespace, each URL or NAME=URL; taken before "
            "OUTBOX_DATABASE_URL. Each database has its own worker processes."
        ),
    )
    database_name: str | None = Field(
        default=None,
        description=(
            "The database's name in logs and metrics (database=...); default: the name "
            "before '=' in OUTBOX_DATABASE_URLS, else the URL's database name."
        ),
    )
    max_payload_bytes: int | None = Field(
        default=None,
        ge=1,
        le=64 * 1024 * 1024,
        description=(
            "Payload size limit enforced by outbox.enqueue(); `outbox migrate` writes it "
            "to outbox.config when set (default there: 262144)."
        ),
    )
    dedupe_window_seconds: int | None = Field(
        default=None,
        ge=1,
        description=(
            "How long an idempotency key is remembered; `outbox migrate` writes it to "
            "outbox.config when set (default there: 604800, 7 days)."
        ),
    )

    # -- worker (each also a flag of `outbox worker`) --------------------------
    concurrency: int = Field(100, ge=1, le=10_000, description="Deliveries in flight per process.")
    processes: int = Field(
        1, ge=1, le=256, description="Worker processes per database, under one supervisor."
    )
    batch_size: int = Field(200, ge=1, le=5000, description="Messages claimed per query.")
    lease_seconds: float = Field(
        60.0, gt=0, description="How long a claim lasts; a dead worker's messages return after it."
    )
    poll_interval: float = Field(
        1.0, gt=0, description="Idle polling period; wake-ups usually come sooner."
    )
    shutdown_grace: float = Field(
        30.0, ge=0, description="How long a stopping worker lets deliveries in flight finish."
    )
    reap_interval: float = Field(5.0, gt=0, description="How often expired leases are reclaimed.")
    vacuum_alert_seconds: float = Field(
        300.0,
        gt=0,
        description=(
            "The vacuum watchdog: alert (and log) when a transaction, prepared transaction "
            "or replication slot has held back the vacuum of outbox.messages this long."
        ),
    )
    backoff_base: float = Field(2.0, gt=0, description="First retry delay, seconds (doubles).")
    backoff_cap: float = Field(7200.0, gt=0, description="Longest retry delay, seconds.")
    worker_id: str | None = Field(None, description="Name in the ledger; default host:pid.")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="Log lines as JSON or text; auto: text on a terminal, JSON otherwise."
    )
    allow_networks: str = Field(
        "",
        description=(
            "Comma-separated address ranges webhooks may reach although they are not public "
            "(the SSRF guard refuses loopback, private and link-local addresses), "
            "e.g. 10.0.0.0/8,127.0.0.1/32."
        ),
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description=(
            "Serve Prometheus /metrics, /healthz and /readyz on this port (with --processes, "
            "the supervisor serves all children's)."
        ),
    )
    listen: bool = Field(
        True,
        description=(
            "LISTEN for producers' wake-ups; off: poll only, every --poll-interval (for a "
            "connection pooler in transaction mode, which cannot hold a LISTEN)."
        ),
    )
    pooled: bool = Field(
        False,
        description=(
            "The worker's URL goes through a connection pooler in transaction mode "
            "(PgBouncer): its settings are set per transaction and prepared statements are "
            "not cached. LISTEN then needs OUTBOX_LISTEN_URL, or --no-listen."
        ),
    )
    listen_url: SecretStr | None = Field(
        default=None,
        description=(
            "Where to LISTEN when not on the worker's own URL: a direct connection to "
            "PostgreSQL when the worker's goes through a pooler."
        ),
    )
    trace_spans: Literal["child", "link", "off"] = Field(
        "child",
        description=(
            "Attempt spans, when an OpenTelemetry SDK is set up: children of the producer's "
            "span (child), in traces of their own linked to it (link), or none (off). The "
            "producer's trace context goes onward to the receiver either way."
        ),
    )
    first_attempt_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of each claim kept for first attempts, so retries cannot starve them.",
    )

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value.split(","))
        return value

    @field_validator("database_url")
    @classmethod
    def _looks_like_postgres(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        if not raw.startswith(("postgresql://", "postgres://", "postgresql+asyncpg://")):
            # The value itself may hold a password: never echo it.
            raise ValueError("must start with postgresql:// (the value is not shown)")
        return value

    @field_validator("database_name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value, "OUTBOX_DATABASE_NAME")

    @field_validator("database_urls")
    @classmethod
    def _urls(cls, value: SecretStr | None) -> SecretStr | None:
        # Blank is unset. The entries are checked where they are used (databases()),
        # so that a command on one database does not fail for the fleet's list.
        return None if value is None or not value.get_secret_value().strip() else value

    def databases(self, explicit: tuple[str, ...] = ()) -> list[Database]:
        """The databases to serve: those given (``--database-url``, repeated), else
        ``OUTBOX_DATABASE_URLS``, else ``OUTBOX_DATABASE_URL``; a clear error if none."""
        if explicit:
            return parse_databases(explicit)
        if self.database_urls is not None:
            return parse_databases(split_urls(self.database_urls.get_secret_value()))
        url = self.require_database_url()
        return [Database(self.database_name or default_name(url), url)]

    def allowed_networks(self) -> tuple[str, ...]:
        """``allow_networks`` as a tuple of ranges."""
        return tuple(n.strip() for n in self.allow_networks.split(",") if n.strip())

    def require_database_url(self) -> str:
        """The database URL, or a clear error naming the variable to set."""
        if self.database_url is None:
            if self.database_urls is not None:
                only = parse_databases(split_urls(self.database_urls.get_secret_value()))
                if len(only) == 1:
                    return only[0].url
                raise ConfigurationError(
                    f"OUTBOX_DATABASE_URLS names {len(only)} databases "
                    f"({', '.join(d.name for d in only)}): pass --database-url to say which"
                )
            raise ConfigurationError(
                "no database configured: set OUTBOX_DATABASE_URL or pass --database-url"
            )
        return self.database_url.get_secret_value()


def _from_environment(fields: dict[str, Any]) -> dict[str, str]:
    """The ``OUTBOX_*`` variables that name a field (matched in any case)."""
    found = {}
    for variable, value in os.environ.items():
        name = variable.upper()
        if name.startswith(PREFIX) and (field := name[len(PREFIX) :].lower()) in fields:
            found[field] = value
    return found


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, wrapping validation errors in ours."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"OUTBOX_{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors(include_input=False)
        )
        raise ConfigurationError(f"invalid settings: {problems}") from None
