"""Templates of a message's fields: where on a broker a message goes.

A broker endpoint's ``--target`` (a NATS subject, an AMQP routing key, a Redis
stream, an MQTT topic) is text in which ``{key}``, ``{id}`` and
``{payload.FIELD}`` (``{payload.a.b}`` for a nested field) are filled in per
message; ``{{`` and ``}}`` stand for literal braces. A payload field must be a
string, a number or a boolean. ``outbox.enqueue()`` refuses a message that
lacks what its endpoint's target needs (``outbox._target_problem()``, in
``outbox/db/schema/enqueue.sql``, reads templates the same way), so a worker
only meets one written by hand.

Pure: no I/O.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

MAX_CHARS = 1024
_PART = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]|[^{}]+")
_FIELD = re.compile(r"^payload((?:\.[^.{}\s]+)+)$")


class TemplateError(ValueError):
    """A message lacks what a template needs; says which field and why."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal text and the fields filled in between."""

    text: str
    # Literal text (str) and fields (a tuple: ("key",), ("id",) or ("payload", *path)).
    parts: tuple[str | tuple[str, ...], ...]

    @property
    def constant(self) -> bool:
        return all(isinstance(p, str) for p in self.parts)

    @property
    def needs_payload(self) -> bool:
        return any(isinstance(p, tuple) and p[0] == "payload" for p in self.parts)

    def render(self, message_id: uuid.UUID, key: str | None, payload: Any = None) -> str:
        """The text for one message; ``payload`` is its decoded JSON (needed only
        when the template names payload fields). Raises `TemplateError`."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            elif part[0] == "id":
                out.append(str(message_id))
            elif part[0] == "key":
                if key is None:
                    raise TemplateError(
                        "key", f"is required: the target {self.text!r} uses {{key}}"
                    )
                out.append(key)
            else:
                out.append(_field_text(payload, part[1:], self.text))
        return "".join(out)


def _field_text(payload: Any, path: tuple[str, ...], template: str) -> str:
    name = "payload." + ".".join(path)
    value = payload
    for step in path:
        value = value.get(step) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return json.dumps(value)
    kind = "object" if isinstance(value, dict) else "array"
    what = "missing" if value is None else f"a JSON {kind}"
    raise TemplateError(
        name, f"is {what}, but the target {template!r} needs a string, number or boolean there"
    )


def parse(text: str) -> Template:
    """A template, or ValueError saying what is wrong with it."""
    if not text:
        raise ValueError("must not be empty")
    if len(text) > MAX_CHARS:
        raise ValueError(f"is {len(text)} characters, over the limit of {MAX_CHARS}")
    parts: list[str | tuple[str, ...]] = []
    for match in _PART.finditer(text):
        token = match.group(0)
        if token in ("{{", "}}"):
            _append(parts, token[0])
        elif token in ("{", "}"):
            raise ValueError(
                f"has an unmatched {token!r} at character {match.start() + 1} "
                "(write {{ or }} for a literal brace)"
            )
        elif match.group(1) is not None:
            parts.append(_placeholder(match.group(1)))
        else:
            _append(parts, token)
    return Template(text, tuple(parts))


def _placeholder(name: str) -> tuple[str, ...]:
    if name in ("key", "id"):
        return (name,)
    field = _FIELD.match(name)
    if field:
        return ("payload", *field.group(1)[1:].split("."))
    raise ValueError(f"{{{name}}} is not a field: use {{key}}, {{id}} or {{payload.FIELD}}")


def _append(parts: list[str | tuple[str, ...]], text: str) -> None:
    if parts and isinstance(parts[-1], str):
        parts[-1] += text
    else:
        parts.append(text)


def check_template(text: str) -> str:
    """``text`` if it is a template (pydantic validator); ValueError otherwise."""
    parse(text)
    return text
