"""A local stand-in for the Telegram Bot API, for tests and the demo.

It answers ``POST /bot<token>/<method>`` the way api.telegram.org does: a JSON
object with ``ok``, and on failure ``error_code``, ``description`` and
``parameters`` (``retry_after`` on 429, ``migrate_to_chat_id`` when a group
became a supergroup). A `Behaviour` decides per call; every call is recorded
with its arrival time on this server's clock, like `outbox.devtools.receiver.Receiver`
(which it extends), so tests can measure per-chat intervals and the bot's
rate from the receiving side.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from outbox.devtools.receiver import Action, Received, Receiver

_PATH = re.compile(r"^/bot(?P<token>[^/]+)/(?P<method>[A-Za-z]+)$")


@dataclass(frozen=True, slots=True)
class Call:
    """One Bot API call as the fake server saw it."""

    token: str
    method: str
    params: dict[str, Any]
    nth: int  # how many times a call with this text (or chat) had arrived, this one included

    @property
    def chat_id(self) -> Any:
        return self.params.get("chat_id")


Behaviour = Callable[[Call], Action]


def reply(result: Any = None) -> Action:
    """``{"ok": true, "result": ...}``."""
    return Action(200, _JSON, json.dumps({"ok": True, "result": result or {"message_id": 1}}))


def error(
    code: int, description: str, parameters: dict[str, Any] | None = None, *, delay: float = 0.0
) -> Action:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return Action(code, _JSON, json.dumps(body), delay=delay)


def too_many_requests(retry_after: int) -> Action:
    return error(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})


def bot_blocked() -> Action:
    return error(403, "Forbidden: bot was blocked by the user")


def chat_not_found() -> Action:
    return error(400, "Bad Request: chat not found")


def migrated(new_chat_id: int) -> Action:
    return error(
        400,
        "Bad Request: group chat was upgraded to a supergroup chat",
        {"migrate_to_chat_id": new_chat_id},
    )


def unauthorized() -> Action:
    return error(401, "Unauthorized")


_JSON = {"content-type": "application/json"}


class FakeTelegram(Receiver):
    """``with FakeTelegram(behaviour) as tg:``; point an endpoint's URL at ``tg.api_url``."""

    def __init__(self, behaviour: Behaviour | None = None, *, port: int = 0) -> None:
        super().__init__(port=port)
        self.behaviour: Behaviour = behaviour or (lambda _call: reply())

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def identify(self, headers: Any, body: bytes) -> str | None:
        """Calls are told apart by their text (tests make it unique), else by chat."""
        params = _params(body)
        ident = params.get("text", params.get("chat_id"))
        return None if ident is None else str(ident)

    def respond(self, record: Received) -> Action:
        match = _PATH.match(record.path)
        if match is None:
            return error(404, "Not Found")
        call = Call(match["token"], match["method"], _params(record.body), record.nth)
        return self.behaviour(call)

    def calls(self) -> list[tuple[Received, Call]]:
        """Every call so far, with what it asked for."""
        out = []
        for record in self.snapshot():
            match = _PATH.match(record.path)
            if match is not None:
                call = Call(match["token"], match["method"], _params(record.body), record.nth)
                out.append((record, call))
        return out


def _params(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
