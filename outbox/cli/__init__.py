"""The `outbox` command line: one module per command group, each command thin
over the library (`outbox.operate`, `outbox.produce`, `outbox.deliver`,
`outbox.devtools`).

Every command takes ``--database-url`` (default: ``OUTBOX_DATABASE_URL``).
Errors print one line naming what was wrong and exit non-zero: 2 for bad
input, 1 for everything else.
"""

from outbox.cli.app import COMMAND_MODULES, main

__all__ = ["COMMAND_MODULES", "main"]

# Each command's module is imported when the command is first asked for
# (`outbox.cli.app.COMMAND_MODULES`): `outbox worker` does not import the others.
