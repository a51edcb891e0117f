"""The `outbox` command line: one module per command group, each command thin
over the library (`outbox.operate`, `outbox.produce`, `outbox.deliver`,
`outbox.devtools`).

Every command takes ``--database-url`` (default: ``OUTBOX_DATABASE_URL``).
Errors print one line naming what was wrong and exit non-zero: 2 for bad
input, 1 for everything else.
"""

import os

# pydantic looks for plugins by reading every installed package's entry points
# when the first model is built (the settings, below): 4 ms of a worker's
# start-up here, more in a larger environment. The outbox command has no use
# for them; set PYDANTIC_DISABLE_PLUGINS yourself (even empty) to have them.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from outbox.cli.app import COMMAND_MODULES, main  # after the line above

__all__ = ["COMMAND_MODULES", "main"]

# Each command's module is imported when the command is first asked for
# (`outbox.cli.app.COMMAND_MODULES`): `outbox worker` does not import the others.
