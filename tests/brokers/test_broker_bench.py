"""`outbox bench nats|amqp|redis|mqtt`, small: each scenario runs once against
its real broker and the test database, and reports what it says it reports.

Tiny sizes, so the figures mean nothing here (the real ones are in
benchmarks/): what is checked is that a worker and the bare client both
published every message (the scenario checks the ledger and asks the broker
what it holds, and fails otherwise), that the report has its shape, and that
a broker is left as it was found.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.single_pass]

BARE = {"nats": "nats_py", "amqp": "aiormq", "redis": "redis_py", "mqtt": "aiomqtt"}


def bench(database_url: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "outbox", "bench", "--database-url", database_url, *args, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def check(result: dict[str, Any], name: str, url: str) -> None:
    worker, bare = f"{name}_worker", f"{name}_bare_{BARE[name]}"
    assert result["scenario"] == name
    assert (result["worker"], result["bare"]) == (worker, bare)
    assert (result["messages"], result["concurrency"]) == (300, 20)
    assert "guest:guest" not in json.dumps(result)  # the URL's password is masked
    assert result["broker_url"].split("://")[0] == url.split("://")[0]
    for figure in (worker, bare):
        assert result[figure]["name"] == figure
        (value,) = result[figure]["rounds"]
        assert value > 0
        assert result[figure]["median"] == value
    assert result["ratio_to_ceiling"] == pytest.approx(
        result[worker]["median"] / result[bare]["median"]
    )
    (ratio,) = result["ratio_by_round"]
    assert ratio == pytest.approx(result["ratio_to_ceiling"])


def run_one(database_url: str, name: str, url: str) -> dict[str, Any]:
    args = ("--messages", "300", "--rounds", "1", "--concurrency", "20", "--broker-url", url)
    report = bench(database_url, name, *args)
    (result,) = report["results"]
    check(result, name, url)
    return dict(result)


async def streams(url: str) -> set[str]:
    import nats

    nc = await nats.connect(url)
    try:
        return {s.config.name or "" for s in await nc.jetstream().streams_info()}
    finally:
        await nc.close()


async def stream_keys(url: str) -> set[bytes]:
    import redis.asyncio as redis

    client = redis.Redis.from_url(url)
    try:
        return {k async for k in client.scan_iter("outbox-bench:*")}
    finally:
        await client.aclose()


@pytest.mark.timeout(300)
async def test_nats(database_url: str, nats_url: str) -> None:
    before = await streams(nats_url)
    result = run_one(database_url, "nats", nats_url)
    assert result["broker_version"].startswith("nats-server ")
    assert await streams(nats_url) <= before  # the streams it made are gone


@pytest.mark.timeout(300)
def test_amqp(database_url: str, amqp_url: str) -> None:
    result = run_one(database_url, "amqp", amqp_url)
    assert result["broker_version"].startswith("RabbitMQ ")
    assert result["broker_url"] == "amqp://guest:***@127.0.0.1:5672/"


@pytest.mark.timeout(300)
async def test_redis(database_url: str, redis_url: str) -> None:
    before = await stream_keys(redis_url)
    result = run_one(database_url, "redis", redis_url)
    assert result["broker_version"].startswith("Redis ")
    assert await stream_keys(redis_url) <= before  # the stream keys it made are gone


@pytest.mark.timeout(300)
def test_mqtt(database_url: str, mqtt_url: str) -> None:
    result = run_one(database_url, "mqtt", mqtt_url)
    assert result["broker_version"] is None  # MQTT does not say


def test_no_broker_scenario_is_in_the_default_set() -> None:
    from outbox.cli import tools
    from outbox.devtools.bench import suite

    assert suite.DEFAULT == tools.DEFAULT
    assert suite.SCENARIOS == tools.SCENARIOS
    assert not set(suite.BROKERS) & set(suite.DEFAULT)
    assert set(suite.BROKERS) <= set(suite.SCENARIOS)
