"""`WorkerConfig`: how one worker process runs.

Its settings come from `outbox.settings.Settings` (the environment and the
flags of ``outbox worker``), the one source of their defaults; the rest are
the loop's own tuning, fixed here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from outbox.deliver.policy import RetryPolicy
from outbox.errors import ConfigurationError
from outbox.settings import Settings
from outbox.settings import endpoint as declared


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    # From Settings (see `from_settings`).
    concurrency: int
    batch_size: int
    lease_seconds: float
    poll_interval: float
    shutdown_grace: float
    reap_interval: float
    backoff_base: float
    backoff_cap: float
    # Of each endpoint's part of a claim, the share kept for first attempts,
    # so a pile of due retries cannot starve new messages.
    first_attempt_share: float
    # Non-public address ranges every endpoint may reach (the SSRF guard's exceptions).
    allow_networks: tuple[str, ...] = ()
    # Serve /metrics, /healthz and /readyz on this port (None: no server).
    metrics_port: int | None = None
    # Attempt spans (outbox.deliver.tracing): child, link or off.
    trace_spans: Literal["child", "link", "off"] = "child"
    # Wake-ups: LISTEN (on listen_url, if given, else the worker's URL), or poll only.
    listen: bool = True
    listen_url: str | None = field(default=None, repr=False)  # may hold a password
    # Through a pooler in transaction mode (outbox.deliver.session).
    pooled: bool = False
    # The vacuum watchdog (outbox.deliver.upkeep): what holds the horizon this long is alerted.
    vacuum_alert_seconds: float = 300.0
    # The loop's own tuning.
    flush_interval: float = 0.02
    flush_max: int = 500
    endpoint_refresh: float = 5.0
    wakeup_seconds: float = 5.0
    vacuum_check_interval: float = 10.0
    vacuum_min_dead: int = 5000
    # How far ahead a claim may take rate-limited endpoints' slots (seconds);
    # the worker sends each message at its slot.
    rate_horizon: float = 1.0
    # Good news alone (deliveries, no failure) is reported at most this often
    # per endpoint, to reset a breaker another worker's failures moved.
    health_report_interval: float = 1.0
    # Retention runs (one worker at a time) this often, at most this many batches per table.
    prune_interval: float = 300.0
    prune_batches: int = 20
    # For a message whose endpoint's own policy is unknown (its settings could not be
    # loaded): the defaults of an endpoint's settings, with this process's backoff.
    fallback_policy: RetryPolicy = field(init=False)

    def __post_init__(self) -> None:
        if self.pooled and self.listen and not self.listen_url:
            raise ConfigurationError(
                "a worker through a pooler (OUTBOX_POOLED) cannot LISTEN on its own URL "
                "(the pooler hands its connection to other clients between transactions): "
                "set OUTBOX_LISTEN_URL to a direct URL of PostgreSQL, or poll only with "
                "--no-listen (OUTBOX_LISTEN=false)"
            )
        policy = RetryPolicy(
            _default("max_attempts"),
            _default("retry_window"),
            base=self.backoff_base,
            cap=max(self.backoff_cap, self.backoff_base),
        )
        object.__setattr__(self, "fallback_policy", policy)

    @classmethod
    def from_settings(cls, settings: Settings, **tuning: Any) -> WorkerConfig:
        """The config of a worker run with ``settings``; ``tuning`` overrides the loop's own."""
        return cls(
            concurrency=settings.concurrency,
            batch_size=settings.batch_size,
            lease_seconds=settings.lease_seconds,
            poll_interval=settings.poll_interval,
            shutdown_grace=settings.shutdown_grace,
            reap_interval=settings.reap_interval,
            backoff_base=settings.backoff_base,
            backoff_cap=max(settings.backoff_cap, settings.backoff_base),
            first_attempt_share=settings.first_attempt_share,
            allow_networks=settings.allowed_networks(),
            metrics_port=settings.metrics_port,
            trace_spans=settings.trace_spans,
            listen=settings.listen,
            pooled=settings.pooled,
            vacuum_alert_seconds=settings.vacuum_alert_seconds,
            listen_url=settings.listen_url.get_secret_value() if settings.listen_url else None,
            **tuning,
        )


def _default(name: str) -> Any:
    setting = declared.named(name)
    assert setting is not None, name
    return setting.default
