"""Every setting an endpoint has, declared once.

One `Setting` says everything about one setting: its name (in Python, in
JSON and in ``--clear``), its column of ``outbox.endpoints``, its kind (how
the value is checked, stored and listed), its command-line flag and help,
its default, whether it can be cleared, whether only some channels take it,
whether workers load it, and how it shows in ``outbox endpoint list``. From
this list come ``outbox endpoint add`` and ``update`` (their options), the
statements that add, change, clear and list endpoints, the models
`EndpointConfig` and `EndpointUpdate`, the columns of ``outbox.db.tables``,
and what a worker's `Endpoint` holds. A channel adds defaults of its own
(its limits) in its declaration (`outbox.deliver.channels.spec`).

Adding a setting: a `Setting` here, and the revision that adds its column.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from outbox.settings.kinds import (
    EXCHANGE,
    HEADERS,
    NETWORKS,
    SECRET,
    SWITCH,
    TEMPLATE,
    URL,
    Kind,
    choice,
    interval,
    millis,
    number,
)

ENDPOINT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


@dataclass(frozen=True, slots=True)
class Setting:
    """One endpoint setting."""

    name: str  # in Python and JSON, and for --clear
    kind: Kind
    flag: str  # the option of `outbox endpoint add` and `update`
    help: str
    column: str = ""  # its column of outbox.endpoints (default: the name)
    default: Any = None  # None: not set
    clearable: bool = False  # `outbox endpoint update --clear NAME` sets it back to none
    channel_specific: bool = False  # only channels that declare it take it
    worker: bool = False  # workers load it (their `Endpoint` holds it)
    summary: Callable[[Any], str] | None = None  # its part of `endpoint list`'s limits column

    def __post_init__(self) -> None:
        if not self.column:
            object.__setattr__(self, "column", self.name)

    def listed(self, value: Any) -> dict[str, Any]:
        """The setting in ``outbox endpoint list --json``."""
        return self.kind.listed(self.column, value)

    @property
    def column_default(self) -> Any:
        """The column's value for the default (None: the column is nullable and has none)."""
        return None if self.default is None else self.kind.to_db(self.default)


SETTINGS: tuple[Setting, ...] = (
    Setting("url", URL, "--url",
            "Where to send: the webhook URL, or the channel's server (a broker's URL may "
            "hold a user and password; it is listed with the password masked).", worker=True),
    Setting("secret", SECRET, "--secret",
            "Webhook signing secret, Telegram bot token, or a broker's password (NATS: its "
            "token); env:NAME reads it from $NAME at delivery.", worker=True),
    Setting("headers", HEADERS, "--header", "Extra header 'Name: value' (repeatable).",
            default={}, worker=True),
    Setting("timeout", millis(le=600, flag="float"), "--timeout",
            "Total timeout per attempt, seconds.", column="timeout_ms", default=10.0,
            worker=True),
    Setting("connect_timeout", millis(le=600, flag="float"), "--connect-timeout",
            "Connect timeout, seconds.", column="connect_timeout_ms", default=5.0, worker=True),
    Setting("max_attempts", number(int, ge=1, le=1000), "--max-attempts",
            "Attempts before dead-lettering.", default=25, worker=True),
    Setting("retry_window", interval(), "--retry-window",
            "Stop retrying this long after the first attempt (e.g. 90s, 2h, 1d).",
            default=timedelta(days=1), worker=True),
    Setting("rate_limit", number(float, gt=0, le=1_000_000), "--rate",
            "Messages per second across all workers.", clearable=True,
            summary=lambda v: f"{v:g}/s"),
    Setting("rate_burst", number(int, ge=1, le=1_000_000), "--burst",
            "Messages the rate lets through at once.", default=1),
    Setting("key_interval", millis(le=86_400), "--key-interval",
            "Minimum time between two messages with the same key.", column="key_interval_ms",
            clearable=True, summary=lambda v: f"key {v:g}s"),
    Setting("group_key_interval", millis(le=86_400), "--group-key-interval",
            "The same for the channel's group keys (Telegram: group chats, whose ids start "
            "with '-').", column="group_key_interval_ms", clearable=True,
            channel_specific=True),
    Setting("coalesce", millis(le=3_600), "--coalesce",
            "Merge a key's waiting messages created within this window into one request "
            "(Telegram: texts joined, up to 4096 characters).", column="coalesce_ms",
            clearable=True, channel_specific=True),
    Setting("ordered", SWITCH, "--ordered/--unordered",
            "Deliver messages with the same key one at a time, in order.", default=False,
            summary=lambda v: "ordered" if v else ""),
    Setting("on_dead", choice("release", "block"), "--on-dead",
            "Ordered: when a key's message is dead-lettered, release the key or block it.",
            default="release"),
    Setting("breaker_failures", number(int, ge=1, le=1_000_000), "--breaker-failures",
            "Consecutive failures that open the circuit.", default=5),
    Setting("breaker_cooldown", interval(), "--breaker-cooldown",
            "First circuit cool-down; doubles after each failed probe.",
            default=timedelta(seconds=30)),
    Setting("breaker_max_cooldown", interval(), "--breaker-max-cooldown",
            "Longest cool-down.", default=timedelta(hours=1)),
    Setting("disable_after", interval(), "--disable-after",
            "Disable the endpoint after failing this long without a success.",
            default=timedelta(days=5)),
    Setting("allow_networks", NETWORKS, "--allow-network",
            "A non-public address range this endpoint may reach (SSRF guard; repeatable).",
            default=(), clearable=True, worker=True),
    Setting("target", TEMPLATE, "--target",
            "Where on the broker: the NATS subject, the AMQP routing key, the Redis stream or "
            "the MQTT topic; {key}, {id} and {payload.FIELD} are filled in per message.",
            channel_specific=True, worker=True),
    Setting("exchange", EXCHANGE, "--exchange",
            "The AMQP exchange to publish to ('' or none: the default exchange, which routes "
            "to the queue the target names).", clearable=True, channel_specific=True,
            worker=True),
    Setting("max_len", number(int, ge=1, le=2_000_000_000), "--max-len",
            "Trim the Redis stream to about this many entries (XADD MAXLEN ~).",
            clearable=True, channel_specific=True, worker=True,
            summary=lambda v: f"max-len {v}"),
    Setting("retain", SWITCH, "--retain/--no-retain",
            "Publish MQTT messages retained (the broker keeps each topic's last one for new "
            "subscribers); off unless given.", channel_specific=True, worker=True),
)  # fmt: skip

# `outbox endpoint update --secret NEW` keeps the old secret signing for this long.
SECRET_GRACE = timedelta(days=1)


# Read from SETTINGS when called, so that whatever uses them sees the list as it is.
def named(name: str) -> Setting | None:
    """The setting called ``name``, if there is one."""
    return next((s for s in SETTINGS if s.name == name), None)


def clearable() -> tuple[str, ...]:
    """The settings ``--clear`` takes."""
    return tuple(s.name for s in SETTINGS if s.clearable)


def for_workers() -> tuple[Setting, ...]:
    """The settings a worker loads for every endpoint."""
    return tuple(s for s in SETTINGS if s.worker)
