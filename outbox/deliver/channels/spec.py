"""The channel interface: what outbox knows about one kind of destination.

A channel declares everything in one `ChannelSpec`: its name; what an
endpoint of it takes (a URL, a secret, settings only it has) and its
defaults (its limits); what the database does for it (a payload check at
enqueue, a default key, group keys, coalescing: functions and patterns in
its row of ``outbox.channels``); and how to open the `Channel` that sends
and classifies in a worker. The registry (`outbox.deliver.channels.registry`)
collects the built-in ones and those of installed packages (entry points in
the group ``outbox.channels``), and drives the worker, ``outbox endpoint add
--channel``, the ``outbox.channels`` rows every endpoint's channel must have,
and the docs.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from outbox.deliver.channels.ssrf import Network
from outbox.deliver.model import AttemptResult, Delivery, Endpoint
from outbox.settings import endpoint as declared

Need = Literal["required", "optional", "none"]
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# Settings that only some channels take, and what in the database they need.
_NEEDS_SQL = {"coalesce": "riders", "group_key_interval": "group_keys"}


class Channel(Protocol):
    """Sends one delivery (a message, or several coalesced into one request) and
    says what the answer means; it never decides about retries (that is
    `outbox.deliver.policy`) and never touches the database."""

    async def send(self, delivery: Delivery, endpoint: Endpoint) -> AttemptResult: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ChannelContext:
    """What a worker process gives every channel it opens."""

    concurrency: int  # deliveries in flight at most: a bound for connection pools
    allow: tuple[Network, ...] = ()  # non-public ranges every endpoint may reach (SSRF guard)


@dataclass(frozen=True, slots=True)
class Sql:
    """What the database does for a channel (its row of ``outbox.channels``).

    ``payload_check``: a function ``(payload jsonb) RETURNS text`` that
    ``outbox.enqueue()`` runs on each payload, returning a problem
    (``'OB002¦payload.field¦what is wrong'``) or NULL. ``default_key``: the
    payload field whose text is a message's key when none is given.
    ``group_keys``: a LIKE pattern of keys spaced by the endpoint's
    ``group_key_interval`` instead of its ``key_interval``. ``riders``: a
    function ``(endpoint, key, seq, payload, until, now) RETURNS uuid[]`` that
    picks, and locks, the messages that ride with one being sent
    (coalescing). The functions live in the schema files
    (``outbox/db/schema/``)."""

    payload_check: str | None = None
    default_key: str | None = None
    group_keys: str | None = None
    riders: str | None = None


@dataclass(frozen=True, slots=True)
class Telemetry:
    """How an attempt on a channel shows as an OpenTelemetry span
    (`outbox.deliver.otel`): ``http`` (a CLIENT span with the HTTP client
    conventions), ``messaging`` (a PRODUCER span; ``system`` is its
    ``messaging.system``) or ``internal``."""

    kind: Literal["http", "messaging", "internal"] = "internal"
    system: str | None = None


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """One kind of destination, declared once."""

    name: str  # `--channel NAME`; outbox.endpoints.channel
    summary: str  # one line, for `outbox endpoint add --help`, the README and outbox.channels
    open: Callable[[ChannelContext], Channel]  # the sender a worker process uses
    url: Need = "none"
    # A regular expression every URL of this channel matches (checked by the
    # database too), and the Python check that explains what is wrong.
    url_pattern: str | None = None
    check_url: Callable[[str], str] | None = None
    secret: Need = "optional"
    # What to say of a URL with a user and no password when no --secret gives the
    # password (NATS would send the user name as a token, which could not be masked).
    user_needs_password: str | None = None
    secret_help: str = "a secret"  # what --secret takes, for the error when it is missing
    check_secret: Callable[[str], None] | None = None  # raises ValueError, never showing it
    defaults: Mapping[str, Any] = field(default_factory=dict)  # endpoint settings (its limits)
    settings: frozenset[str] = frozenset()  # settings only some channels take, that this one does
    needs: frozenset[str] = frozenset()  # of those, the ones every endpoint of it must have
    sql: Sql = Sql()
    telemetry: Telemetry = Telemetry()

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"channel name {self.name!r} must match {_NAME.pattern}")
        if (self.url == "none") != (self.url_pattern is None):
            raise ValueError(f"channel {self.name!r}: a URL pattern exactly when it takes a URL")
        if not self.needs <= self.settings:
            raise ValueError(f"channel {self.name!r}: it needs only settings it takes")
        for setting, hook in _NEEDS_SQL.items():
            if (setting in self.settings) != (getattr(self.sql, hook) is not None):
                raise ValueError(
                    f"channel {self.name!r}: the {setting} setting goes with Sql.{hook}"
                )

    def catalog_row(self) -> dict[str, Any]:
        """Its row of ``outbox.channels``; ``settings``: the columns of the settings
        only some channels take that this one does, each with its setting's name and
        whether an endpoint must have it (the database's check of an endpoint reads
        them)."""
        columns = {
            s.column: {"setting": s.name, "required": s.name in self.needs}
            for s in declared.SETTINGS
            if s.name in self.settings
        }
        return {
            "settings": columns,
            "name": self.name,
            "summary": self.summary,
            "default_key": self.sql.default_key,
            "payload_check": self.sql.payload_check,
            "group_keys": self.sql.group_keys,
            "riders": self.sql.riders,
            "url_pattern": self.url_pattern,
            "url_required": self.url == "required",
        }


def opened_from(module: str, name: str) -> Callable[[ChannelContext], Channel]:
    """A channel's ``open`` that imports ``outbox.deliver.channels.<module>`` (and
    what it sends with) on first use, and opens its class ``name``: a process that
    never sends on the channel (a worker with no endpoint on it, every CLI
    command) does not load that code."""

    def open_channel(context: ChannelContext) -> Channel:
        sender = getattr(importlib.import_module(f"outbox.deliver.channels.{module}"), name)
        channel: Channel = sender.open(context)
        return channel

    return open_channel
