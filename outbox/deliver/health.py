"""What one worker tells the fleet about each endpoint's health (pure).

Every attempt's classification says something about its endpoint: healthy
(it answered), failing (5xx, timeouts, connection errors), or nothing (a
429 is about our pace). `HealthBook` folds attempts into one report per
endpoint; the recorder sends the reports that are due with its batches, and
``outbox._report_health()`` applies them to the shared circuit breaker.
Failures, throttles and pauses are reported at once; good news alone at most
every ``interval`` seconds, and only where it may reset a breaker.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from outbox.deliver.policy import Classification, Health


@dataclass(slots=True)
class HealthReport:
    """What one worker saw of one endpoint since its last report (in completion order)."""

    endpoint: str
    ok: int = 0
    failures: int = 0
    failures_since_ok: int = 0
    last_failure: str | None = None
    throttle: float | None = None
    pause: str | None = None
    pause_version: datetime | None = None  # the endpoint's updated_at the pausing attempt saw

    def needed(self) -> bool:
        """False when there is only good news: then it is sent only to reset a breaker."""
        return bool(self.failures or self.throttle or self.pause)


class HealthBook:
    """The reports not yet sent, and which endpoints' good news matters soon."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._reports: dict[str, HealthReport] = {}
        self._sent: dict[str, float] = {}
        self._watch: set[str] = set()  # endpoints whose good news must be reported soon

    def note(
        self,
        endpoint: str,
        classification: Classification,
        *,
        probe: bool,
        unhealthy: bool,
        version: datetime | None = None,
    ) -> None:
        """Fold one attempt in. ``probe``: it was a half-open circuit's probe;
        ``unhealthy``: the endpoint's shared state was not clean when last loaded;
        ``version``: the endpoint's settings as loaded (their updated_at)."""
        report = self._reports.get(endpoint)
        if report is None:
            report = self._reports[endpoint] = HealthReport(endpoint)
        if classification.health is Health.OK:
            report.ok += 1
            report.failures_since_ok = 0
        elif classification.health is Health.FAILING:
            report.failures += 1
            report.failures_since_ok += 1
            report.last_failure = classification.reason
            self._watch.add(endpoint)
        if classification.throttle:
            report.throttle = max(report.throttle or 0.0, classification.throttle)
        if classification.pause:
            report.pause = classification.pause
            report.pause_version = version
        if probe or unhealthy:
            self._watch.add(endpoint)

    def due(self, now: float) -> list[HealthReport]:
        """The reports to send now (``now``: a monotonic clock); they are taken out."""
        due = [
            report
            for name, report in self._reports.items()
            if report.needed()
            or name in self._watch
            or now - self._sent.get(name, -1e9) >= self.interval
        ]
        for report in due:
            del self._reports[report.endpoint]
            self._sent[report.endpoint] = now
            if not report.failures:
                self._watch.discard(report.endpoint)
        return due
