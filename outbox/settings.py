"""Settings from the environment, all prefixed ``OUTBOX_`` (pydantic-settings)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from outbox.errors import ConfigurationError


class Settings(BaseSettings):
    """Runtime configuration. Every field reads ``OUTBOX_<FIELD NAME>``."""

    model_config = SettingsConfigDict(env_prefix="OUTBOX_", extra="ignore")

    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL URL, e.g. postgresql://user:pass@host:5432/db.",
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

    def require_database_url(self) -> str:
        """The database URL, or a clear error naming the variable to set."""
        if self.database_url is None:
            raise ConfigurationError(
                "no database configured: set OUTBOX_DATABASE_URL or pass --database-url"
            )
        return self.database_url.get_secret_value()


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, wrapping validation errors in ours."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"OUTBOX_{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors(include_input=False)
        )
        raise ConfigurationError(f"invalid settings: {problems}") from None
