"""What broker URLs the channels take, in Python and as the database checks them."""

from __future__ import annotations

import re

import pytest

from outbox.deliver.channels import registry
from outbox.deliver.channels.broker import credentials
from outbox.deliver.model import Endpoint
from outbox.deliver.policy import RetryPolicy
from outbox.settings.kinds import URL

GOOD = {
    "nats": ["nats://127.0.0.1:4222", "tls://u:p@h:4222", "nats://a:1,b:2"],
    "amqp": ["amqp://guest:guest@127.0.0.1:5672/", "amqps://h/vhost", "amqp://h"],
    "redis": ["redis://127.0.0.1:6379/0", "rediss://u:p@h:6380/1", "redis://:p@h"],
    "mqtt": ["mqtt://127.0.0.1:1883", "mqtts://u:p@h", "mqtt://u@h"],
}
BAD = {
    "nats": [("http://h", "must be a nats:// or tls:// URL"), ("nats://", "must name a host")],
    "amqp": [("amqp://h:0", "port 0"), ("amqp://h#x", "#fragment")],
    "redis": [("redis://h x", "whitespace"), ("redis://h:99999", "not a valid URL")],
    "mqtt": [("tcp://h", "must be a mqtt:// or mqtts:// URL")],
}  # fmt: skip


@pytest.mark.parametrize(("channel", "url"), [(c, u) for c, us in GOOD.items() for u in us])
def test_good_urls_pass_both_checks(channel: str, url: str) -> None:
    spec = registry.channel(channel)
    assert spec.check_url is not None
    assert spec.url_pattern is not None
    assert spec.check_url(url) == url
    assert re.match(spec.url_pattern, url)


@pytest.mark.parametrize(
    ("channel", "url", "problem"), [(c, u, p) for c, bs in BAD.items() for u, p in bs]
)
def test_bad_urls_are_explained(channel: str, url: str, problem: str) -> None:
    check = registry.channel(channel).check_url
    assert check is not None
    with pytest.raises(ValueError, match=re.escape(problem)):
        check(url)


def test_every_broker_channel_needs_a_target() -> None:
    for name in ("nats", "amqp", "redis", "mqtt"):
        spec = registry.channel(name)
        assert spec.needs == {"target"}
        assert spec.catalog_row()["settings"]["target"] == {"setting": "target", "required": True}


def test_a_listed_url_hides_its_password() -> None:
    listed = URL.listed("url", "amqp://guest:s3cr%40t@host:5672/v")
    assert listed == {"url": "amqp://guest:***@host:5672/v"}


def test_what_an_attempt_masks_includes_the_urls_password() -> None:
    endpoint = Endpoint(
        "e", "amqp", RetryPolicy(3, __import__("datetime").timedelta(hours=1), 0.1, 1.0),
        settings={"url": "amqp://u:p%40ss@h/"}, secret="tok",
    )  # fmt: skip
    assert set(credentials(endpoint)) == {"tok", "p%40ss", "p@ss"}


def test_a_nats_user_without_a_password_needs_the_secret() -> None:
    from pydantic import SecretStr

    from outbox.operate.endpoint_config import channel_problem

    spec = registry.channel("nats")
    lone = {"url": "nats://app@h:4222", "target": "t"}
    assert channel_problem(spec, lone, adding=True) == f"url: {spec.user_needs_password}"
    given = {**lone, "secret": SecretStr("pw")}
    assert channel_problem(spec, given, adding=True) is None
