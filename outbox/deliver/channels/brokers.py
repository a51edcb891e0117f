"""The broker channels' declarations: ``nats``, ``amqp``, ``redis`` and ``mqtt``.

Each `ChannelSpec` is declared here, apart from the code that sends
(`outbox.deliver.channels.jetstream`, ``rabbitmq``, ``redis_streams``,
``mqtt``, on `outbox.deliver.channels.broker`): that code is imported when a
worker opens the channel (`outbox.deliver.channels.spec.opened_from`), so a
process that never sends to a broker (most workers, every CLI command) does
not load it. It cost a worker 13 ms of its start-up.
"""

from __future__ import annotations

from outbox.deliver.channels.spec import ChannelSpec, Telemetry, opened_from
from outbox.deliver.channels.urls import broker_url_check, broker_url_pattern

NATS_SCHEMES = ("nats", "tls")
AMQP_SCHEMES = ("amqp", "amqps")
REDIS_SCHEMES = ("redis", "rediss")
MQTT_SCHEMES = ("mqtt", "mqtts")


NATS = ChannelSpec(
    name="nats",
    summary="publish to NATS JetStream, waiting for the stream's PubAck (Nats-Msg-Id: the id)",
    open=opened_from("jetstream", "NatsChannel"),
    url="required",
    url_pattern=broker_url_pattern(*NATS_SCHEMES),
    check_url=broker_url_check(*NATS_SCHEMES),
    user_needs_password=(
        "a user with no password: give the password with --secret, or a token in --secret "
        "and no user (NATS would take a lone user name as a token)"
    ),
    secret_help="the password of the URL's user, or a token",
    settings=frozenset({"target"}),
    needs=frozenset({"target"}),
    telemetry=Telemetry("messaging", "nats"),
)
AMQP = ChannelSpec(
    name="amqp",
    summary="publish to RabbitMQ (AMQP 0-9-1): persistent, mandatory, with publisher confirms",
    open=opened_from("rabbitmq", "RabbitChannel"),
    url="required",
    url_pattern=broker_url_pattern(*AMQP_SCHEMES),
    check_url=broker_url_check(*AMQP_SCHEMES),
    secret_help="the password of the URL's user",
    settings=frozenset({"target", "exchange"}),
    needs=frozenset({"target"}),
    telemetry=Telemetry("messaging", "rabbitmq"),
)
REDIS = ChannelSpec(
    name="redis",
    summary="XADD to a Redis stream (fields id, payload, key, headers); the reply is the ack",
    open=opened_from("redis_streams", "RedisChannel"),
    url="required",
    url_pattern=broker_url_pattern(*REDIS_SCHEMES),
    check_url=broker_url_check(*REDIS_SCHEMES),
    secret_help="the password of the URL's user (or of the default user)",
    settings=frozenset({"target", "max_len"}),
    needs=frozenset({"target"}),
    telemetry=Telemetry("messaging", "redis"),
)
MQTT = ChannelSpec(
    name="mqtt",
    summary="publish to an MQTT broker at QoS 1, waiting for its PUBACK (MQTT 5)",
    open=opened_from("mqtt", "MqttChannel"),
    url="required",
    url_pattern=broker_url_pattern(*MQTT_SCHEMES),
    check_url=broker_url_check(*MQTT_SCHEMES),
    secret_help="the password of the URL's user",
    settings=frozenset({"target", "retain"}),
    needs=frozenset({"target"}),
    telemetry=Telemetry("messaging", "mqtt"),
)
