"""A message's W3C trace context: checked, or captured from the current span.

A message may carry a ``traceparent`` and a ``tracestate`` (W3C Trace
Context); the worker sends them onward in the receiver's headers, from its
own attempt span when it traces, unchanged when it does not. The Python
producer calls capture the current OpenTelemetry span's context when the
caller gives none, so an instrumented service's trace follows its messages
without a line of code.

Capturing imports nothing. The OpenTelemetry API is looked up in
``sys.modules``: an application that traces has imported it already, and
one that has not imported it has no current span to capture. Without the
``otel`` extra nothing changes and nothing is imported.

The checks are ``outbox._trace_problem()``'s (``outbox/db/schema/enqueue.sql``),
in Python so that a mistake is named before a round trip.
"""

from __future__ import annotations

import re
import sys

from outbox.errors import InvalidInputError

__all__ = ["TRACE_MAX_CHARS", "check_trace", "current_trace", "trace_problem"]

TRACE_MAX_CHARS = 512
TRACESTATE_MAX_MEMBERS = 32
# The usual case, version 00, non-zero ids: what enqueue()'s fast path passes too.
_VERSION_00 = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
_ANY_VERSION = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(?:-.*)?", re.DOTALL)
_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_MEMBER = re.compile(
    r"(?:[a-z0-9][-_*/a-z0-9]{0,255}|[a-z0-9][-_*/a-z0-9]{0,240}@[a-z][-_*/a-z0-9]{0,13})=" + _VALUE
)


def trace_problem(traceparent: str | None, tracestate: str | None) -> tuple[str, str] | None:
    """(field, problem) for a trace context W3C Trace Context refuses, or None."""
    if traceparent is None:
        return None if tracestate is None else ("tracestate", "is given without a traceparent")
    if type(traceparent) is not str:
        return "traceparent", f"must be a string, not {type(traceparent).__name__}"
    if _VERSION_00.fullmatch(traceparent) is None:
        problem = _traceparent_problem(traceparent)
        if problem:
            return "traceparent", problem
    if tracestate is None:
        return None
    if type(tracestate) is not str:
        return "tracestate", f"must be a string, not {type(tracestate).__name__}"
    if len(tracestate) > TRACE_MAX_CHARS:
        return "tracestate", f"is over the limit of {TRACE_MAX_CHARS} characters"
    members = [m.strip(" \t") for m in tracestate.split(",")]
    members = [m for m in members if m]
    if len(members) > TRACESTATE_MAX_MEMBERS:
        return "tracestate", (
            f"has {len(members)} list members, more than the "
            f"{TRACESTATE_MAX_MEMBERS} W3C Trace Context allows"
        )
    for member in members:
        if _MEMBER.fullmatch(member) is None:
            return "tracestate", f"{member[:64]!r} is not a W3C tracestate list member (key=value)"
    return None


def _traceparent_problem(traceparent: str) -> str | None:
    if _ANY_VERSION.fullmatch(traceparent) is None:
        return (
            "is not a W3C traceparent: expected 00-<32 hex trace id>-<16 hex parent id>-"
            "<2 hex flags>, lower case"
        )
    if traceparent.startswith("ff"):
        return "has version ff, which W3C Trace Context forbids"
    if traceparent.startswith("00") and len(traceparent) != 55:
        return "is not a W3C traceparent: version 00 has exactly 55 characters"
    if len(traceparent) > TRACE_MAX_CHARS:
        return f"is over the limit of {TRACE_MAX_CHARS} characters"
    if traceparent[3:35] == "0" * 32:
        return "has an all-zero trace id, which W3C Trace Context calls invalid"
    if traceparent[36:52] == "0" * 16:
        return "has an all-zero parent id, which W3C Trace Context calls invalid"
    return None


def check_trace(
    traceparent: str | None, tracestate: str | None, prefix: str = ""
) -> tuple[str | None, str | None]:
    """The trace context, unchanged, or `InvalidInputError` naming what is wrong."""
    problem = trace_problem(traceparent, tracestate)
    if problem is not None:
        raise InvalidInputError(prefix + problem[0], problem[1])
    return traceparent, tracestate


def current_trace() -> tuple[str | None, str | None]:
    """The current OpenTelemetry span's (traceparent, tracestate), or (None, None)
    when there is none (or OpenTelemetry was never imported)."""
    api = sys.modules.get("opentelemetry.trace")
    if api is None:
        return None, None
    context = api.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    parent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    state = context.trace_state
    return parent, (state.to_header() or None) if state else None
