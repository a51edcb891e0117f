"""The dashboard's sign-in, sessions and CSRF tokens (pure logic)."""

from __future__ import annotations

from outbox.web import auth
from outbox.web.auth import Sessions, csrf_ok, new_token


def test_only_the_token_opens_a_session() -> None:
    sessions = Sessions("the-token")
    assert sessions.sign_in("") is None
    assert sessions.sign_in("the-toke") is None
    assert sessions.sign_in("the-token!") is None
    opened = sessions.sign_in("the-token")
    assert opened is not None
    assert sessions.get(opened) is not None
    assert sessions.get("made-up") is None
    assert sessions.get(None) is None


def test_sessions_expire_and_sign_out() -> None:
    sessions = Sessions("t", lifetime=10)
    first = sessions.sign_in("t", now=100.0)
    assert first is not None
    assert sessions.get(first, now=109.9) is not None
    assert sessions.get(first, now=110.0) is None  # expired, and forgotten
    second = sessions.sign_in("t", now=200.0)
    sessions.sign_out(second)
    assert sessions.get(second, now=200.0) is None


def test_each_session_has_its_own_csrf_token() -> None:
    sessions = Sessions("t")
    a, b = sessions.sign_in("t"), sessions.sign_in("t")
    assert a is not None
    assert b is not None
    assert a != b
    one, other = sessions.get(a), sessions.get(b)
    assert one is not None
    assert other is not None
    assert csrf_ok(one, one.csrf)
    assert not csrf_ok(one, other.csrf)
    assert not csrf_ok(one, None)
    assert not csrf_ok(one, "")


def test_the_oldest_session_goes_when_there_are_too_many(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(auth, "MAX_SESSIONS", 3)
    sessions = Sessions("t")
    opened = [sessions.sign_in("t", now=float(i)) for i in range(4)]
    assert sessions.get(opened[0], now=4.0) is None
    assert all(sessions.get(s, now=4.0) is not None for s in opened[1:])


def test_neither_repr_shows_the_token() -> None:
    token = new_token()
    assert len(token) >= 32
    assert token not in repr(Sessions(token))
    assert new_token() != token
