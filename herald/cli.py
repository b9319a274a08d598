"""The `herald` command: one entry point over every package's own typer app.

Each package owns its commands (`<package>/cli.py`, a typer `app`); this module only
composes them, importing each lazily so `herald --help` stays fast and one broken
package does not take the others' commands down.
"""

from __future__ import annotations

import importlib
import sys

import click
import typer

# Groups mounted under a name: `herald stack up`, `herald senders run`, ...
GROUPS: dict[str, str] = {
    "stack": "infra.stack.cli:app",
    "senders": "senders.cli:app",
    "processor": "processors.cli:app",
}
# Apps whose commands sit at the top level: `herald send`, `herald replay`, `herald dlq`, ...
TOP_LEVEL: tuple[str, ...] = ("producers.cli:app", "herald.ops.cli:app", "herald.demo:app")


def _load(ref: str) -> typer.Typer:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


def build() -> click.Group:
    root = typer.Typer(
        help="herald: notifications over Kafka and Cassandra. See README.md.",
        no_args_is_help=True,
    )

    @root.callback()
    def _root() -> None:
        """herald: notifications over Kafka and Cassandra."""

    group = typer.main.get_group(root)
    for name, ref in GROUPS.items():
        group.add_command(typer.main.get_group(_load(ref)), name)
    for ref in TOP_LEVEL:
        sub = typer.main.get_command(_load(ref))
        commands = sub.commands if isinstance(sub, click.Group) else {sub.name or "": sub}
        for name, command in commands.items():
            group.add_command(command, name)
    return group


def main() -> None:
    sys.exit(build().main(prog_name="herald"))
