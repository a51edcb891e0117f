"""The HTTP channels' declarations: ``webhook`` and ``telegram``.

As with the brokers (`outbox.deliver.channels.brokers`), each `ChannelSpec`
is declared here, apart from the code that sends
(`outbox.deliver.channels.webhook` and ``telegram``, on the shared HTTP
client `outbox.deliver.channels.http`), which is imported when a worker opens
the channel: a worker with no endpoint on it, and every CLI command, does
not load the HTTP client (8 ms of a start-up).
"""

from __future__ import annotations

import re

from outbox.deliver.channels.signing import check_secret
from outbox.deliver.channels.spec import ChannelSpec, Sql, Telemetry, opened_from
from outbox.deliver.channels.urls import HTTP_URL_PATTERN, check_http_url

_BOT_TOKEN = re.compile(r"^\d{3,}:[A-Za-z0-9_-]{20,}$")

WEBHOOK = ChannelSpec(
    name="webhook",
    summary="POST the payload as JSON to a URL, with Standard Webhooks headers and signature",
    open=opened_from("webhook", "WebhookChannel"),
    url="required",
    url_pattern=HTTP_URL_PATTERN,
    check_url=check_http_url,
    check_secret=check_secret,
    telemetry=Telemetry("http"),
)


def _check_token(token: str) -> None:
    if not token.startswith("env:") and not _BOT_TOKEN.match(token):
        raise ValueError(
            "secret does not look like a Telegram bot token (digits:letters); "
            "the value is not shown"
        )


TELEGRAM = ChannelSpec(
    name="telegram",
    summary="call the Telegram Bot API (sendMessage and the other methods), one call a message",
    open=opened_from("telegram", "TelegramChannel"),
    url="optional",  # the Bot API's base URL: api.telegram.org unless given
    url_pattern=HTTP_URL_PATTERN,
    check_url=check_http_url,
    secret="required",
    secret_help="the bot token, or env:VARIABLE naming an environment variable that holds it",
    check_secret=_check_token,
    # The Bot API's limits: 30 messages/s per bot, 1/s per chat, 20/min per group chat.
    defaults={"rate_limit": 30.0, "key_interval": 1.0, "group_key_interval": 3.0},
    settings=frozenset({"coalesce", "group_key_interval"}),
    sql=Sql(
        payload_check="outbox._telegram_problem",
        default_key="chat_id",  # the chat: per-chat limits and order
        group_keys="-%",  # group chats have negative ids
        riders="outbox._telegram_riders",
    ),
    telemetry=Telemetry("http"),
)
