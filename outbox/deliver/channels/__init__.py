"""Channels: how a delivery reaches each kind of destination.

`spec` is the interface (a `ChannelSpec` declares a channel in one place, a
`Channel` sends); `registry` knows every channel; `webhook`, `telegram` and
`null` are the built-in ones, on a shared HTTP client (`http`) behind the
SSRF guard (`ssrf`), with Standard Webhooks signatures (`signing`).
"""

from outbox._redact import guard_loggers

guard_loggers()
