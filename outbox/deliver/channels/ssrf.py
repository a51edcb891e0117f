"""The SSRF guard: webhooks reach public addresses only, unless a range is allowed.

Whoever can register an endpoint could otherwise make workers POST into the
private network they run in (databases, admin panels, the cloud metadata
service at 169.254.169.254). The check runs on the address actually connected
to: `GuardedResolver` is the HTTP client's resolver, so the addresses it
returns are the only ones the connection uses, with no second lookup in
between for a DNS rebinding to slip through. Literal IP hosts never reach a
resolver and are checked before the request (`literal_host_problem`).
Redirects are never followed, so a public host cannot bounce a request inward.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDR ranges (or single addresses); a bad one raises ValueError naming it."""
    networks: list[Network] = []
    for value in values:
        text = value.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an address range (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def address_problem(address: str, allowed: Sequence[Network] = ()) -> str | None:
    """Why a webhook must not connect to ``address``, or None if it may."""
    ip: Address = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address):
        ip = _embedded_ipv4(ip) or ip
    if any(ip.version == net.version and ip in net for net in allowed):
        return None
    if ip.is_global and not ip.is_multicast:
        return None
    return f"{ip} is {_kind(ip)}"


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for, where a translator or tunnel
    would take it there: IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64 or (1 < int(ip) < 2**32):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def _kind(ip: Address) -> str:
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (cloud metadata services live here)"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    return "not a public address"


def literal_host_problem(host: str, allowed: Sequence[Network] = ()) -> str | None:
    """For a URL host that is an IP literal, the guard's verdict; None for names."""
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    return address_problem(host.strip("[]"), allowed)


class BlockedAddressError(OSError):
    """Every address a host resolved to is refused by the guard."""

    def __init__(self, host: str, problems: Sequence[str]) -> None:
        self.host = host
        self.problems = tuple(problems)
        super().__init__(f"{host} resolves only to refused addresses: {'; '.join(problems)}")


class GuardedResolver(AbstractResolver):
    """Resolves with aiohttp's default resolver and keeps only allowed addresses."""

    def __init__(self, allowed: Sequence[Network] = ()) -> None:
        self._inner = DefaultResolver()
        self._allowed = tuple(allowed)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        kept: list[ResolveResult] = []
        problems: list[str] = []
        for result in results:
            problem = address_problem(result["host"], self._allowed)
            if problem is None:
                kept.append(result)
            else:
                problems.append(problem)
        if not kept:
            raise BlockedAddressError(host, problems)
        return kept

    async def close(self) -> None:
        await self._inner.close()


def blocked_reason(exc: BaseException) -> str | None:
    """The guard's message if ``exc`` was caused by it (through the HTTP stack's wrapping)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BlockedAddressError):
            return str(current)
        todo.extend([current.__cause__, current.__context__, getattr(current, "os_error", None)])
    return None
