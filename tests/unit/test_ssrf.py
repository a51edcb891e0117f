"""The SSRF guard's address checks (pure) and its resolver (getaddrinfo, no network)."""

from __future__ import annotations

import pytest

from outbox.deliver.channels.ssrf import (
    LOOPBACK,
    BlockedAddressError,
    GuardedResolver,
    address_problem,
    blocked_reason,
    literal_host_problem,
    parse_networks,
)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.7", "private"),
        ("172.16.3.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fd00::1", "private"),
        ("0.0.0.0", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped IPv6
        ("::ffff:10.1.1.1", "private"),
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("::127.0.0.1", "loopback"),  # IPv4-compatible
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private"),  # Teredo of 10.0.0.1
        ("100.64.0.1", "not a public address"),  # carrier-grade NAT
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "address"),  # reserved (Python counts it as private)
    ],
)
def test_non_public_addresses_are_refused(address: str, kind: str) -> None:
    problem = address_problem(address)
    assert problem is not None
    assert kind in problem


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808"]
)
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(address) is None


def test_allowed_ranges_pass_and_only_those() -> None:
    allowed = parse_networks(["10.0.0.0/8", "::1"])
    assert address_problem("10.20.30.40", allowed) is None
    assert address_problem("::1", allowed) is None
    assert address_problem("127.0.0.1", allowed) is not None
    assert address_problem("192.168.0.1", allowed) is not None
    assert address_problem("::ffff:10.1.2.3", allowed) is None  # mapped form of an allowed one


def test_literal_hosts_are_checked_and_names_left_to_the_resolver() -> None:
    assert literal_host_problem("127.0.0.1") is not None
    assert literal_host_problem("[::1]") is not None
    assert literal_host_problem("::1") is not None
    assert literal_host_problem("example.org") is None
    assert literal_host_problem("localhost") is None  # a name: the resolver decides


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "127.1", "0177.0.0.1"])
async def test_numeric_host_spellings_are_caught_where_they_resolve(host: str) -> None:
    # Not IP literals to the URL parser, so they reach the resolver, where
    # getaddrinfo turns them into 127.0.0.1 -- and the guard refuses that.
    assert literal_host_problem(host) is None
    with pytest.raises(BlockedAddressError, match=r"127\.0\.0\.1 is a loopback address"):
        await GuardedResolver().resolve(host, 80)


async def test_a_guarded_client_never_connects_inside() -> None:
    from datetime import timedelta

    from outbox.deliver.channels.http import TRANSPORT_ERRORS, GuardedClients
    from outbox.deliver.endpoints import Endpoint
    from outbox.deliver.policy import RetryPolicy

    policy = RetryPolicy(max_attempts=1, retry_window=timedelta(hours=1), base=1, cap=1)
    endpoint = Endpoint("e", "webhook", policy, {"timeout": 5.0, "connect_timeout": 2.0})
    clients = GuardedClients(2, allow=())
    try:
        for url in ("http://2130706433:9/", "http://localhost:9/"):
            with pytest.raises(TRANSPORT_ERRORS) as caught:
                await clients.post(endpoint, url, b"{}", {})
            # Refused by the guard; a connection attempt would have ended as a
            # plain "connection refused".
            assert blocked_reason(caught.value), (url, caught.value)
    finally:
        await clients.aclose()


def test_bad_ranges_name_themselves() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300' is not an address range"):
        parse_networks(["10.0.0.0/8", "10.0.0.300"])


async def test_the_resolver_drops_refused_addresses() -> None:
    with pytest.raises(BlockedAddressError, match="localhost resolves only to refused addresses"):
        await GuardedResolver().resolve("localhost", 80)
    kept = await GuardedResolver(LOOPBACK).resolve("localhost", 80)
    assert kept
    assert all(host in ("127.0.0.1", "::1") and port == 80 for host, port in kept)


def test_blocked_reason_finds_the_guard_through_wrapping() -> None:
    inner = BlockedAddressError("db.internal", ["10.0.0.5 is a private address"])
    outer = ConnectionError("cannot connect")
    outer.__cause__ = OSError("wrapped")
    outer.__cause__.__context__ = inner
    assert blocked_reason(outer) == str(inner)
    assert blocked_reason(ConnectionRefusedError("refused")) is None
