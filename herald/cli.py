"""The `herald` command: one entry point over every package's own typer app.

Each package owns its commands (`<package>/cli.py`, a typer `app`); this module only
composes them.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer

# Groups mounted under a name: `herald stack up`, `herald senders run`, ...
GROUPS: dict[str, str] = {
    "stack": "infra.stack.cli:app",
    "senders": "senders.cli:app",
    "processor": "processors.cli:app",
    "bench": "herald.bench.cli:app",
}
# Apps whose commands sit at the top level: `herald send`, `herald replay`, `herald dlq`, ...
TOP_LEVEL: tuple[str, ...] = ("producers.cli:app", "herald.ops.cli:app", "herald.demo:app")


def _load(ref: str) -> typer.Typer:
    module, _, attr = ref.partition(":")
    app: typer.Typer = getattr(importlib.import_module(module), attr)
    return app


def build() -> Any:
    root = typer.Typer(
        help="herald: notifications over Kafka and Cassandra. See README.md.",
        no_args_is_help=True,
    )

    @root.callback()
    def _root() -> None:
        """herald: notifications over Kafka and Cassandra."""

    group = typer.main.get_group(root)
    for name, ref in GROUPS.items():
        sub = typer.main.get_group(_load(ref))
        sub.name = name
        group.add_command(sub, name)
    for ref in TOP_LEVEL:
        command = typer.main.get_command(_load(ref))
        # A multi-command app contributes its commands; a one-command app, itself.
        commands = getattr(command, "commands", None) or {command.name or "": command}
        for name, cmd in commands.items():
            group.add_command(cmd, name)
    return group


def main() -> None:
    sys.exit(build().main(prog_name="herald"))
