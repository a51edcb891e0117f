"""Keep secrets out of text that may reach a log line or an error message."""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

_MASK = "***"

# user:password@ in any URL-looking string.
_USERINFO_PASSWORD = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@"
)
# password=... in a libpq key/value string or a URL query.
_PASSWORD_PARAM = re.compile(r"(?i)\b(password|passwd|pwd)=([^&\s]+)")
# A Telegram bot token anywhere (also inside https://api.telegram.org/bot<token>/...).
_BOT_TOKEN = re.compile(r"(?<![0-9])\d{5,}:[A-Za-z0-9_-]{30,}")


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (multi-host URLs too:
    ``postgresql://u:pw@h1:5432,h2:5432/db``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return redact_text(url)
    user = userinfo.split(":", 1)[0]
    return redact_text(urlunsplit(parts._replace(netloc=f"{user}:{_MASK}@{hosts}")))


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Mask passwords in URLs, bot tokens and each of ``secrets`` inside ``text``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, _MASK)
    text = _USERINFO_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{_MASK}@", text)
    text = _PASSWORD_PARAM.sub(lambda m: f"{m[1]}={_MASK}", text)
    return _BOT_TOKEN.sub(_MASK, text)


class RedactingFilter(logging.Filter):
    """Redacts secrets from every record of the logger it is attached to,
    including the text of an attached exception and its traceback.

    Attached to the HTTP libraries' loggers (httpx logs each request's URL at
    INFO, and a Telegram bot token travels in the URL path) and to ours (an
    unexpected exception's message may quote that URL), so a log line never
    carries a token or a password."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(self._formatter.formatException(record.exc_info))
        return True


GUARDED_LOGGERS = (
    "httpx",
    "httpcore",
    "aiohttp.client",
    "aiohttp.internal",
    "outbox.worker",
    "outbox.supervisor",
)


def guard_loggers() -> None:
    """Attach `RedactingFilter` to the HTTP libraries' loggers and ours (once)."""
    for name in GUARDED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
