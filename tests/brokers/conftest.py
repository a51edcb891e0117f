"""The message brokers the broker channels' tests publish to: the servers this
machine runs (NATS with JetStream, RabbitMQ, Redis, Mosquitto).

A broker that does not answer fails its tests when ``OUTBOX_REQUIRE_BROKERS``
is set (``.ci/run`` sets it, after starting any that is down); otherwise its
tests are skipped, saying which server is missing and how to start it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import asyncpg
import pytest

from outbox import operate
from outbox.operate.endpoint_config import EndpointConfig

REQUIRE = "OUTBOX_REQUIRE_BROKERS"


@dataclass(frozen=True)
class Broker:
    name: str
    url: str
    host: str
    port: int
    start: str  # the command that starts it on this kind of machine


BROKERS = {
    "nats": Broker(
        "NATS with JetStream", "nats://127.0.0.1:4222", "127.0.0.1", 4222,
        "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- "
        "-a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log",
    ),
    "amqp": Broker(
        "RabbitMQ", "amqp://guest:guest@127.0.0.1:5672/", "127.0.0.1", 5672,
        "rabbitmq-server -detached",
    ),
    "redis": Broker(
        "Redis", "redis://127.0.0.1:6379/0", "127.0.0.1", 6379,
        "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' "
        "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log",
    ),
    "mqtt": Broker(
        "Mosquitto (MQTT)", "mqtt://127.0.0.1:1883", "127.0.0.1", 1883,
        "mosquitto -d -c /etc/mosquitto/mosquitto.conf",
    ),
}  # fmt: skip


def answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_broker(channel: str) -> str:
    """The URL of the broker a channel's tests need; fails (in CI) or skips without it."""
    broker = BROKERS[channel]
    if answers(broker.host, broker.port):
        return broker.url
    where = f"{broker.host}:{broker.port}"
    message = f"{broker.name} does not answer on {where}; start it with: {broker.start}"
    if os.environ.get(REQUIRE):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def nats_url() -> str:
    return require_broker("nats")


@pytest.fixture(scope="session")
def amqp_url() -> str:
    return require_broker("amqp")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return require_broker("redis")


@pytest.fixture(scope="session")
def mqtt_url() -> str:
    return require_broker("mqtt")


async def add_broker_endpoint(
    conn: asyncpg.Connection, name: str, channel: str, url: str, **settings: object
) -> None:
    """An endpoint as ``outbox endpoint add`` makes it; quick retries for tests."""
    config = EndpointConfig.model_validate(
        {"name": name, "channel": channel, "url": url, **settings}
    )
    await operate.add_endpoint(conn, config)
