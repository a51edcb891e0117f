"""The `outbox` command line: one module per command group, each command thin
over the library (`outbox.operate`, `outbox.produce`, `outbox.deliver`,
`outbox.devtools`).

Every command takes ``--database-url`` (default: ``OUTBOX_DATABASE_URL``).
Errors print one line naming what was wrong and exit non-zero: 2 for bad
input, 1 for everything else.
"""

from outbox.cli import (
    config,
    dead,
    endpoint,
    maintain,
    message,
    produce,
    stats,
    subscription,
    tools,
    web,
    worker,
)
from outbox.cli.app import main

__all__ = ["main"]

# The modules above add their commands to `main` as they are imported.
_COMMANDS = (
    config, dead, endpoint, maintain, message, produce, stats, subscription, tools, web, worker,
)  # fmt: skip
