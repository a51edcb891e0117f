"""The settings of an endpoint as `outbox endpoint add` and `update` take them."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from outbox.errors import InvalidInputError
from outbox.produce.message import EndpointName
from outbox.produce.rules import check_headers

Channel = Literal["webhook", "telegram", "null"]
TELEGRAM_API_BASE = "https://api.telegram.org"
_BOT_TOKEN = re.compile(r"^\d{3,}:[A-Za-z0-9_-]{20,}$")

RatePerSecond = Annotated[float, Field(gt=0, le=1_000_000)]
Seconds = Annotated[float, Field(gt=0, le=86_400)]
TELEGRAM_DEFAULTS: dict[str, Any] = {
    "rate_limit": 30.0,  # per bot
    "key_interval": 1.0,  # per chat (the key defaults to the chat id)
    "group_key_interval": 3.0,  # group chats (negative ids): 20 per minute
}
Clearable = Literal[
    "rate_limit", "key_interval", "group_key_interval", "coalesce", "allow_networks"
]


class EndpointConfig(BaseModel):
    """An endpoint as `outbox endpoint add` and `outbox.add_endpoint()` take it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: EndpointName
    channel: Channel
    url: str | None = None
    secret: SecretStr | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Annotated[float, Field(gt=0, le=600)] = 10.0
    connect_timeout: Annotated[float, Field(gt=0, le=600)] = 5.0
    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 25
    retry_window: Annotated[timedelta, Field(gt=timedelta(0))] = timedelta(days=1)
    # Destination controls. A telegram endpoint gets the Bot API's limits by
    # default: 30 messages/s per bot, 1/s per chat, 20/min per group chat.
    rate_limit: RatePerSecond | None = None
    rate_burst: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    key_interval: Seconds | None = None
    group_key_interval: Seconds | None = None
    coalesce: Seconds | None = None
    ordered: bool = False
    on_dead: Literal["release", "block"] = "release"
    breaker_failures: Annotated[int, Field(ge=1, le=1_000_000)] = 5
    breaker_cooldown: Annotated[timedelta, Field(gt=timedelta(0))] = timedelta(seconds=30)
    breaker_max_cooldown: Annotated[timedelta, Field(gt=timedelta(0))] = timedelta(hours=1)
    disable_after: Annotated[timedelta, Field(gt=timedelta(0))] = timedelta(days=5)
    allow_networks: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _telegram_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("channel") == "telegram":
            data = dict(data)
            for field, value in TELEGRAM_DEFAULTS.items():
                if data.get(field) is None:
                    data[field] = value
        return data

    @field_validator("headers")
    @classmethod
    def _headers_ok(cls, value: dict[str, str]) -> dict[str, str]:
        return check_headers(value)

    @field_validator("allow_networks")
    @classmethod
    def _networks_ok(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_networks(value)

    @field_validator("url")
    @classmethod
    def _url_ok(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return check_http_url(value)

    @model_validator(mode="after")
    def _channel_needs(self) -> EndpointConfig:
        if self.channel == "webhook" and self.url is None:
            raise ValueError("a webhook endpoint needs --url (an http:// or https:// URL)")
        if self.channel == "telegram":
            token = self.secret.get_secret_value() if self.secret else ""
            if not token:
                raise ValueError(
                    "a telegram endpoint needs --secret: the bot token, or env:VARIABLE "
                    "naming an environment variable that holds it"
                )
            if not token.startswith("env:") and not _BOT_TOKEN.match(token):
                raise ValueError(
                    "secret does not look like a Telegram bot token (digits:letters); "
                    "the value is not shown"
                )
        if self.channel == "null" and self.url is not None:
            raise ValueError("a null endpoint takes no --url")
        if self.coalesce is not None and self.channel != "telegram":
            raise ValueError("coalescing (--coalesce) is for telegram endpoints")
        if self.breaker_max_cooldown < self.breaker_cooldown:
            raise ValueError("breaker_max_cooldown must not be shorter than breaker_cooldown")
        return self


def check_networks(values: Iterable[str]) -> tuple[str, ...]:
    """Address ranges in canonical CIDR form; a bad one names itself."""
    from outbox.deliver.channels.ssrf import parse_networks

    return tuple(str(n) for n in parse_networks(values))


class EndpointUpdate(BaseModel):
    """Changes to an endpoint (`outbox endpoint update`): only the fields set change.

    ``clear`` names optional settings to remove (rate_limit, key_interval,
    group_key_interval, allow_networks)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str | None = None
    secret: SecretStr | None = None
    secret_grace: Annotated[timedelta, Field(ge=timedelta(0))] = timedelta(days=1)
    headers: dict[str, str] | None = None
    timeout: Annotated[float, Field(gt=0, le=600)] | None = None
    connect_timeout: Annotated[float, Field(gt=0, le=600)] | None = None
    max_attempts: Annotated[int, Field(ge=1, le=1000)] | None = None
    retry_window: Annotated[timedelta, Field(gt=timedelta(0))] | None = None
    rate_limit: RatePerSecond | None = None
    rate_burst: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    key_interval: Seconds | None = None
    group_key_interval: Seconds | None = None
    coalesce: Seconds | None = None
    ordered: bool | None = None
    on_dead: Literal["release", "block"] | None = None
    breaker_failures: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    breaker_cooldown: Annotated[timedelta, Field(gt=timedelta(0))] | None = None
    breaker_max_cooldown: Annotated[timedelta, Field(gt=timedelta(0))] | None = None
    disable_after: Annotated[timedelta, Field(gt=timedelta(0))] | None = None
    allow_networks: tuple[str, ...] | None = None
    clear: frozenset[
        Literal["rate_limit", "key_interval", "group_key_interval", "allow_networks"]
    ] = frozenset()

    @field_validator("headers")
    @classmethod
    def _headers_ok(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else check_headers(value)

    @field_validator("url")
    @classmethod
    def _url_ok(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value)

    @field_validator("allow_networks")
    @classmethod
    def _networks_ok(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if value is None else check_networks(value)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: str, field: str) -> timedelta:
    """``90``, ``90s``, ``15m``, ``2h``, ``5d`` or ``250ms`` as a timedelta."""
    match = _DURATION.match(value)
    if not match:
        raise InvalidInputError(
            field, f"{value!r} is not a duration (e.g. 30s, 15m, 2h, 5d; a bare number is seconds)"
        )
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def check_http_url(value: str) -> str:
    """An absolute http(s) URL with a host, no credentials, no fragment."""
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials; send them with --header 'Authorization: ...'")
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    if any(ch.isspace() for ch in value):
        raise ValueError("must not contain whitespace")
    if port == 0:
        raise ValueError("port 0 is not a valid port")
    host = parts.hostname
    if not re.match(r"^[A-Za-z0-9.-]+$", host):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"host {host!r} is not a valid hostname") from None
    return value
