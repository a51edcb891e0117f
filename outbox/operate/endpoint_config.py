"""An endpoint as `outbox endpoint add` and `update` take it: `EndpointConfig`
and `EndpointUpdate`, pydantic models made from the settings' declaration
(`outbox.settings.endpoint`) and the channels' (`outbox.deliver.channels`):
each setting's type and bounds, its default, and what each channel needs,
takes and sets by default (its limits).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from outbox.deliver.channels import registry
from outbox.deliver.channels.spec import ChannelSpec
from outbox.produce.message import EndpointName
from outbox.settings import endpoint as declared

__all__ = ["EndpointConfig", "EndpointUpdate", "channel_problem"]


class _Config(BaseModel):
    """What every endpoint has; its settings come from the declaration."""

    # hide_input_in_errors: a refused endpoint's error must not print its secret.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    name: EndpointName
    channel: str

    @field_validator("channel")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in registry.channels():
            raise ValueError(f"unknown channel {value!r}; known: {', '.join(registry.channels())}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _channel_defaults(cls, data: Any) -> Any:
        """The channel's own defaults (its limits) for the settings not given."""
        spec = registry.channels().get(str(data.get("channel"))) if isinstance(data, dict) else None
        if spec is not None and spec.defaults:
            data = dict(data)
            for name, value in spec.defaults.items():
                if data.get(name) is None:
                    data[name] = value
        return data

    @model_validator(mode="after")
    def _fits_its_channel(self) -> _Config:
        values = self.settings()
        problem = channel_problem(registry.channel(self.channel), values, adding=True)
        if problem:
            raise ValueError(problem)
        if values["breaker_max_cooldown"] < values["breaker_cooldown"]:
            raise ValueError("breaker_max_cooldown must not be shorter than breaker_cooldown")
        return self

    def settings(self) -> dict[str, Any]:
        """Every declared setting's value, by name."""
        return {s.name: getattr(self, s.name) for s in declared.SETTINGS}


def channel_problem(spec: ChannelSpec, values: dict[str, Any], *, adding: bool) -> str | None:
    """What in ``values`` (settings by name) does not fit a channel, or None.
    ``adding``: these are all of a new endpoint's settings (so what it needs must
    be there); else only those an update changes."""
    url, secret = values.get("url"), values.get("secret")
    if spec.url == "required" and url is None and adding:
        return f"a {spec.name} endpoint needs --url"
    if spec.url == "none" and url is not None:
        return f"a {spec.name} endpoint takes no --url"
    if url is not None and spec.check_url is not None:
        try:
            spec.check_url(url)
        except ValueError as exc:
            return f"url: {exc}"
    token = secret.get_secret_value() if secret is not None else ""
    if spec.user_needs_password and url is not None and not token and _user_only(url):
        return f"url: {spec.user_needs_password}"
    if spec.secret == "required" and not token and adding:
        return f"a {spec.name} endpoint needs --secret: {spec.secret_help}"
    if spec.secret == "none" and token:
        return f"a {spec.name} endpoint takes no --secret"
    if token and spec.check_secret is not None:
        spec.check_secret(token)  # raises ValueError, never showing the secret
    for setting in declared.SETTINGS:
        if (
            setting.channel_specific
            and values.get(setting.name) is not None
            and setting.name not in spec.settings
        ):
            takers = [s.name for s in registry.channels().values() if setting.name in s.settings]
            return f"{setting.flag} is for {', '.join(takers) or 'no'} endpoints, not {spec.name}"
    return None


def _user_only(url: str) -> bool:
    try:
        parts = urlsplit(url.split(",")[0])
        return bool(parts.username) and parts.password is None
    except ValueError:
        return False


def _field(setting: declared.Setting, *, update: bool) -> tuple[Any, Any]:
    annotation = setting.kind.annotation
    if update or setting.default is None:
        return annotation | None, None
    if isinstance(setting.default, dict):
        return annotation, Field(default_factory=dict)
    return annotation, setting.default


def _config_model() -> type[_Config]:
    fields = {s.name: _field(s, update=False) for s in declared.SETTINGS}
    return create_model("EndpointConfig", __base__=_Config, __module__=__name__, **fields)  # type: ignore[call-overload, no-any-return]


class _Update(BaseModel):
    """Changes to an endpoint: only the settings given change."""

    # hide_input_in_errors: a refused endpoint's error must not print its secret.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    def changes(self) -> dict[str, Any]:
        """The settings given, by name (``clear``, ``secret_grace`` apart)."""
        return {
            s.name: getattr(self, s.name)
            for s in declared.SETTINGS
            if getattr(self, s.name) is not None
        }


def _update_model() -> type[_Update]:
    fields: dict[str, Any] = {s.name: _field(s, update=True) for s in declared.SETTINGS}
    fields["secret_grace"] = (
        Annotated[timedelta, Field(ge=timedelta(0))],
        declared.SECRET_GRACE,
    )
    fields["clear"] = (frozenset[Literal[declared.clearable()]], frozenset())  # type: ignore[misc]
    return create_model("EndpointUpdate", __base__=_Update, __module__=__name__, **fields)


class EndpointConfig(_config_model()):  # type: ignore[misc]
    """An endpoint as `outbox endpoint add` and `outbox.operate.add_endpoint()`
    take it: ``name``, ``channel`` and any declared setting by its name
    (``url``, ``secret``, ``timeout``, ``rate_limit``, ...)."""


class EndpointUpdate(_update_model()):  # type: ignore[misc]
    """Changes to an endpoint (`outbox endpoint update`): the declared settings
    given change; ``clear`` names settings to set back to none; a new
    ``secret`` keeps the old one signing for ``secret_grace``."""
