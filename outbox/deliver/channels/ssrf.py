"""The SSRF guard: webhooks reach public addresses only, unless a range is allowed.

Whoever can register an endpoint could otherwise make workers POST into the
private network they run in (databases, admin panels, the cloud metadata
service at 169.254.169.254). The check runs on the address actually connected
to: `GuardedResolver` is the HTTP client's resolver (``getaddrinfo`` on the
event loop), so the addresses it returns are the only ones the connection
uses, with no second lookup in between for a DNS rebinding to slip through.
Literal IP hosts never reach a resolver and are checked before the request
(`literal_host_problem`).
Redirects are never followed, so a public host cannot bounce a request inward.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence

from outbox.settings.values import Network, parse_networks

__all__ = [
    "LOOPBACK",
    "BlockedAddressError",
    "GuardedResolver",
    "Network",
    "Resolver",
    "address_problem",
    "blocked_reason",
    "literal_host_problem",
    "parse_networks",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


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


class Resolver:
    """Looks a host up with the event loop's ``getaddrinfo`` (in a thread, as the
    loop does it); returns each address once, in the order the system gave them."""

    async def resolve(self, host: str, port: int) -> list[tuple[str, int]]:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG
        )
        seen: dict[tuple[str, int], None] = {}
        for _family, _type, _proto, _name, sockaddr in infos:
            seen.setdefault((str(sockaddr[0]), int(sockaddr[1])), None)
        return list(seen)


class GuardedResolver(Resolver):
    """Resolves like `Resolver` and keeps only the addresses the guard allows."""

    def __init__(self, allowed: Sequence[Network] = ()) -> None:
        self._allowed = tuple(allowed)

    async def resolve(self, host: str, port: int) -> list[tuple[str, int]]:
        kept: list[tuple[str, int]] = []
        problems: list[str] = []
        for address in await super().resolve(host, port):
            problem = address_problem(address[0], self._allowed)
            if problem is None:
                kept.append(address)
            else:
                problems.append(problem)
        if not kept:
            raise BlockedAddressError(host, problems)
        return kept


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
