"""Who may see the dashboard: one sign-in token, sessions, CSRF tokens.

The token comes from ``OUTBOX_WEB_TOKEN`` or is generated at start. Signing
in with it gives a session: a random id in an HttpOnly, SameSite=Strict
cookie, known only to this process (a restart signs everyone out). Each
session has its own CSRF token, which every state-changing form carries.
Comparisons are constant-time; nothing here logs or returns the token.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

COOKIE = "outbox_session"
SESSION_SECONDS = 12 * 3600.0
MAX_SESSIONS = 1000


@dataclass(slots=True)
class Session:
    csrf: str
    expires: float
    flash: str | None = None  # what the last action did, shown once


@dataclass(slots=True)
class Sessions:
    """The sign-in token and the sessions it opened."""

    token: str
    lifetime: float = SESSION_SECONDS
    _open: dict[str, Session] = field(default_factory=dict)

    def __repr__(self) -> str:  # never the token
        return f"Sessions({len(self._open)} open)"

    def sign_in(self, offered: str, now: float | None = None) -> str | None:
        """A new session id if ``offered`` is the token, else None."""
        if not offered or not hmac.compare_digest(offered.encode(), self.token.encode()):
            return None
        clock = time.monotonic() if now is None else now
        self._forget_expired(clock)
        if len(self._open) >= MAX_SESSIONS:  # the oldest goes
            del self._open[min(self._open, key=lambda s: self._open[s].expires)]
        session_id = secrets.token_urlsafe(32)
        self._open[session_id] = Session(secrets.token_urlsafe(32), clock + self.lifetime)
        return session_id

    def get(self, session_id: str | None, now: float | None = None) -> Session | None:
        """The live session of this cookie value, if any."""
        if not session_id:
            return None
        session = self._open.get(session_id)
        clock = time.monotonic() if now is None else now
        if session is None or session.expires <= clock:
            self._open.pop(session_id, None)
            return None
        return session

    def sign_out(self, session_id: str | None) -> None:
        if session_id:
            self._open.pop(session_id, None)

    def _forget_expired(self, now: float) -> None:
        for session_id in [s for s, v in self._open.items() if v.expires <= now]:
            del self._open[session_id]


def csrf_ok(session: Session, offered: str | None) -> bool:
    """Does a form's CSRF token match its session's?"""
    return bool(offered) and hmac.compare_digest(str(offered).encode(), session.csrf.encode())


def new_token() -> str:
    """A sign-in token for when ``OUTBOX_WEB_TOKEN`` is not set."""
    return secrets.token_urlsafe(24)
