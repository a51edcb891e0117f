"""The command line loads each command's module when the command is asked for:
a worker process starts without the producers' SQLAlchemy, the migrations'
Alembic or the dashboard's Starlette."""

from __future__ import annotations

import os
import subprocess
import sys

from outbox.cli import COMMAND_MODULES, main


def test_every_command_is_found_in_the_module_the_table_names() -> None:
    import click

    ctx = click.Context(main)
    names = main.list_commands(ctx)
    assert sorted(names) == sorted(COMMAND_MODULES)
    for name in names:
        command = main.get_command(ctx, name)
        assert command is not None, name
        defined_in = (command.callback or (lambda: None)).__module__
        if isinstance(command, click.Group):  # a group's callback may be trivial; its commands tell
            sub = next(iter(command.commands.values()))
            defined_in = (sub.callback or (lambda: None)).__module__
        assert defined_in == f"outbox.cli.{COMMAND_MODULES[name]}", name


def test_outbox_worker_imports_none_of_what_only_other_commands_need() -> None:
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['outbox', 'worker', '--help']\n"
        "try:\n"
        "    runpy.run_module('outbox', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('sqlalchemy', 'alembic', 'starlette', 'jinja2', 'rich',\n"
        "         'outbox.produce.message')\n"
        "print('LOADED:' + ','.join(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert "Deliver messages until SIGTERM" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "LOADED:"


def test_import_outbox_builds_no_producer_model_until_one_is_used() -> None:
    probe = (
        "import sys, outbox\n"
        "print('outbox.produce.message' in sys.modules, 'sqlalchemy' in sys.modules)\n"
        "outbox.Message\n"
        "print('outbox.produce.message' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["False", "False", "True"]


def test_the_command_line_builds_its_settings_without_pydantic_plugins_unless_asked() -> None:
    # pydantic reads every installed package's entry points for its plugins when
    # the first model is built; the command line has no use for them.
    probe = (
        "import os, pydantic.plugin._loader as loader\n"
        "import outbox.cli\n"
        "print(repr(os.environ.get('PYDANTIC_DISABLE_PLUGINS')), loader._plugins is None)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}

    def run(**extra: str) -> list[str]:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              timeout=60, check=True, env={**env, **extra})  # fmt: skip
        return done.stdout.split()

    assert run() == ["'__all__'", "True"]  # never looked for
    assert run(PYDANTIC_DISABLE_PLUGINS="") == ["''", "False"]  # looked for, as by default
