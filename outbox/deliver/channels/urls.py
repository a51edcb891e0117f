"""What URLs the HTTP channels send to: checked when an endpoint is added (pure)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from urllib.parse import urlsplit

# What the database checks too (outbox.channels.url_pattern): a scheme and a host.
HTTP_URL_PATTERN = "^https?://[^/?#@\\s]+"


def check_http_url(value: str) -> str:
    """An absolute http(s) URL with a host, no credentials, no fragment."""
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials; send them with --header 'Authorization: ...'")
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    if any(ch.isspace() for ch in value):
        raise ValueError("must not contain whitespace")
    if port == 0:
        raise ValueError("port 0 is not a valid port")
    host = parts.hostname
    if not re.match(r"^[A-Za-z0-9.-]+$", host):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"host {host!r} is not a valid hostname") from None
    return value


def broker_url_pattern(*schemes: str) -> str:
    """What the database checks of a broker's URL: one of ``schemes`` and a host
    (user and password may come before it; several hosts, comma-separated)."""
    return f"^({'|'.join(schemes)})://([^/?#@\\s]*@)?[^/?#@\\s]+"


def broker_url_check(*schemes: str) -> Callable[[str], str]:
    """The Python check of a broker URL, explaining what is wrong."""

    def check(value: str) -> str:
        try:
            parts = urlsplit(value)
            port = None if "," in parts.netloc else parts.port  # several hosts: no single port
        except ValueError as exc:
            raise ValueError(f"is not a valid URL: {exc}") from None
        if parts.scheme not in schemes:
            raise ValueError(f"must be a {' or '.join(s + '://' for s in schemes)} URL")
        if not parts.hostname:
            raise ValueError("must name a host")
        if any(ch.isspace() for ch in value):
            raise ValueError("must not contain whitespace")
        if parts.fragment:
            raise ValueError("must not have a #fragment")
        if port == 0:
            raise ValueError("port 0 is not a valid port")
        return value

    return check
