"""Attempt spans on the OpenTelemetry API (the ``otel`` extra).

Imported only when a worker traces (`outbox.deliver.tracing.open_tracer`).
One span per attempt: CLIENT for HTTP channels, PRODUCER for brokers,
INTERNAL otherwise. By default it is a child of the producer's span context
(the message's ``traceparent``), so retries are siblings under the business
request; with ``links`` it starts a trace of its own, linked to that
context. The span's own context is what the receiver gets
(``delivery.trace``), so its work joins the trace.

Attributes follow the OpenTelemetry semantic conventions for HTTP clients
and messaging, plus the outbox's own (``outbox.*``). Nothing secret
becomes an attribute: no URL path, query or user info (webhook URLs often
carry a token), no header value, no payload; reasons are the ledger's,
already free of secrets.

What is the same for every attempt on an endpoint is computed once per
endpoint version; per attempt only the message's fields are added.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from outbox.deliver.channels.spec import Telemetry
from outbox.deliver.model import AttemptResult, Delivery, Endpoint, Finished
from outbox.deliver.policy import Verdict
from outbox.errors import ConfigurationError

__all__ = ["OtelTracer", "parent_context", "provider_from_env"]

log = logging.getLogger("outbox.worker")

SCOPE = "outbox"
_KINDS = {"http": SpanKind.CLIENT, "messaging": SpanKind.PRODUCER, "internal": SpanKind.INTERNAL}
_EMPTY = Context()
_DEFAULT_PORTS = {
    "http": 80, "https": 443, "nats": 4222, "tls": 4222, "amqp": 5672, "amqps": 5671,
    "redis": 6379, "rediss": 6379, "mqtt": 1883, "mqtts": 8883,
}  # fmt: skip


def parent_context(traceparent: str | None, tracestate: str | None) -> SpanContext | None:
    """A message's W3C trace context as a remote `SpanContext` (checked at enqueue)."""
    if traceparent is None or len(traceparent) < 55:
        return None
    try:
        context = SpanContext(
            int(traceparent[3:35], 16),
            int(traceparent[36:52], 16),
            is_remote=True,
            trace_flags=TraceFlags(int(traceparent[53:55], 16)),
            trace_state=TraceState.from_header([tracestate]) if tracestate else None,
        )
    except ValueError:
        return None
    return context if context.is_valid else None


def onward(context: SpanContext) -> tuple[str, str | None]:
    """A span context as (traceparent, tracestate) for the receiver's headers."""
    parent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    return parent, context.trace_state.to_header() or None


def endpoint_attributes(endpoint: Endpoint, telemetry: Telemetry) -> dict[str, Any]:
    """What every attempt on this endpoint carries (no secret: see the module's doc)."""
    # Few attributes: the SDK checks each one (about a microsecond apiece).
    attributes: dict[str, Any] = {"outbox.endpoint": endpoint.name}
    url = endpoint.url
    if url:
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme)
        except ValueError:
            host, port = None, None
        if host:
            attributes["server.address"] = host
        if port:
            attributes["server.port"] = port
    if telemetry.kind == "http":
        attributes["http.request.method"] = "POST"
    elif telemetry.kind == "messaging":
        attributes["messaging.system"] = telemetry.system or endpoint.channel
        attributes["messaging.operation.type"] = "send"
        attributes["messaging.operation.name"] = "publish"
        target = endpoint.settings.get("target")
        if target and "{" in target:
            attributes["messaging.destination.template"] = target
        elif target:
            attributes["messaging.destination.name"] = target
        exchange = endpoint.settings.get("exchange")
        if exchange is not None:
            attributes["messaging.rabbitmq.exchange"] = exchange
    return attributes


class OtelTracer:
    """`outbox.deliver.tracing.Tracer` on an OpenTelemetry tracer provider."""

    def __init__(
        self,
        provider: Any,
        telemetry: Mapping[str, Telemetry],
        *,
        links: bool = False,
        owned: bool = False,
    ) -> None:
        self._tracer = trace.get_tracer(SCOPE, _version(), tracer_provider=provider)
        self._provider = provider
        self._telemetry = telemetry
        self._links = links
        self._owned = owned  # built from the environment here: flushed on shutdown
        # Per endpoint: (its version, span name, kind, attributes).
        self._shapes: dict[str, tuple[Any, str, SpanKind, dict[str, Any]]] = {}

    def _shape(self, endpoint: Endpoint) -> tuple[Any, str, SpanKind, dict[str, Any]]:
        shape = self._shapes.get(endpoint.name)
        if shape is None or shape[0] != endpoint.version:
            telemetry = self._telemetry.get(endpoint.channel) or Telemetry()
            name = f"{'POST' if telemetry.kind == 'http' else 'publish'} {endpoint.name}"
            if telemetry.kind == "internal":
                name = f"deliver {endpoint.name}"
            attributes = endpoint_attributes(endpoint, telemetry)
            shape = (endpoint.version, name, _KINDS[telemetry.kind], attributes)
            self._shapes[endpoint.name] = shape
        return shape

    def begin(self, delivery: Delivery, endpoint: Endpoint) -> Span | None:
        try:
            _, name, kind, common = self._shape(endpoint)
            head = delivery.messages[0]
            attributes = dict(common)
            attributes["outbox.message.id"] = text_id = str(head.id)
            attributes["outbox.attempt"] = head.attempts + 1
            if kind is SpanKind.PRODUCER:
                attributes["messaging.message.id"] = text_id
            parent = parent_context(head.traceparent, head.tracestate)
            links: list[Link] = []
            if len(delivery.messages) > 1:  # coalesced: the riders' traces are linked
                attributes["messaging.batch.message_count"] = len(delivery.messages)
                for rider in delivery.messages[1:]:
                    other = parent_context(rider.traceparent, rider.tracestate)
                    if other is not None:
                        links.append(Link(other))
            if parent is None or self._links:
                context = _EMPTY
                if parent is not None:
                    links.insert(0, Link(parent))
            else:
                context = trace.set_span_in_context(NonRecordingSpan(parent), _EMPTY)
            span = self._tracer.start_span(
                name, context, kind, attributes=attributes, links=links or None
            )
            own = span.get_span_context()
            if not own.is_valid:
                return span
            if context is not _EMPTY and parent is not None and own.trace_id == parent.trace_id:
                # A child: the producer's trace id and tracestate, as they were written.
                assert head.traceparent is not None
                delivery.trace = (
                    f"00{head.traceparent[2:36]}{own.span_id:016x}-{own.trace_flags:02x}",
                    head.tracestate,
                )
            else:
                delivery.trace = onward(own)
            return span
        except Exception:  # tracing must never cost a delivery
            log.exception("could not start the span of an attempt")
            return None

    def end(self, span: object, result: AttemptResult, finished: Sequence[Finished]) -> None:
        if not isinstance(span, Span):
            return
        try:
            if span.is_recording():
                attributes: dict[str, Any] = {}
                if finished:
                    first = finished[0]
                    attributes["outbox.outcome"] = first.outcome.value
                    if first.retry_at is not None:
                        attributes["outbox.next_retry_at"] = _iso(first.retry_at)
                if result.status_code is not None:
                    attributes["http.response.status_code"] = result.status_code
                verdict = result.classification.verdict
                if verdict is not Verdict.DELIVERED:
                    attributes["error.type"] = (
                        str(result.status_code) if result.status_code else verdict.value
                    )
                    reason = result.classification.reason
                    attributes["outbox.reason"] = reason
                    span.set_status(Status(StatusCode.ERROR, reason))
                span.set_attributes(attributes)
            span.end()
        except Exception:
            log.exception("could not end the span of an attempt")

    def shutdown(self) -> None:
        """Flush and stop the provider this tracer built (not one it was given)."""
        if self._owned:
            try:
                self._provider.shutdown()
            except Exception:
                log.exception("could not flush the trace exporter")


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _version() -> str | None:
    try:
        return version("outbox")
    except PackageNotFoundError:
        return None


def provider_from_env(environ: Mapping[str, str]) -> Any:
    """An SDK tracer provider configured by the standard ``OTEL_*`` variables:
    the exporters ``OTEL_TRACES_EXPORTER`` names (default ``otlp``; the
    packages that provide them register under the entry point group
    ``opentelemetry_traces_exporter``), each behind a batch processor; the
    sampler (``OTEL_TRACES_SAMPLER``) and resource (``OTEL_SERVICE_NAME``,
    ``OTEL_RESOURCE_ATTRIBUTES``; the service is ``outbox-worker`` unless they
    name one) as the SDK reads them. It becomes the global provider."""
    from importlib.metadata import entry_points

    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    names = [
        n.strip().lower()
        for n in (environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")
        if n.strip() and n.strip().lower() != "none"
    ]
    found = {e.name: e for e in entry_points(group="opentelemetry_traces_exporter")}
    exporters = []
    for name in names:
        if name not in found:
            known = ", ".join(sorted(found)) or "none"
            raise ConfigurationError(
                f"OTEL_TRACES_EXPORTER: no trace exporter {name!r} is installed "
                f"(installed: {known}; the OTLP one is opentelemetry-exporter-otlp)"
            )
        exporters.append(found[name].load()())
    resource = Resource.create()
    if "OTEL_SERVICE_NAME" not in environ and "service.name=" not in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        resource = resource.merge(Resource({SERVICE_NAME: "outbox-worker"}))
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider
